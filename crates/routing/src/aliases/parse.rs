//! The `/etc/aliases` syntax, parsed without any I/O (so that it can be
//! fuzzed and tested by tables).
//!
//! ```text
//! # comment lines, and blank lines, are ignored anywhere
//! postmaster: root
//! staff:      ann, bob,
//!             carol@example.net          <- a line starting with blanks continues
//! ann:        ann, \ann, archive         <- "ann" in its own list is the user ann
//! prog:       "|/usr/bin/filter --flag"  <- quotes keep commas and blanks
//! log:        /var/log/mail-copy
//! list:       :include:/etc/skein/list   <- a file of targets
//! ```
//!
//! Comments and blank lines follow Postfix rather than sendmail: they may
//! sit between an entry and its continuation lines without ending the
//! entry, which is what people who comment out one member of a long list
//! expect.

use std::fmt;
use std::path::{Path, PathBuf};

use skein_mail::Mailbox;

/// One target of an alias, as written (names in lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `name`: another alias, or else the local user of that name, in the
    /// domain of the address being expanded.
    Local(String),
    /// `\name`: the local user, never looked up as an alias again.
    User(String),
    /// `user@domain`: an address; a local domain's addresses are aliased
    /// again.
    Address(String),
    /// `|command`: pipe the message to a program.
    Pipe(String),
    /// `/path`: append the message to a file.
    File(String),
    /// `:include:path`: the targets listed in another file (a relative path
    /// is taken from the directory of the file that names it).
    Include(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local(name) => f.write_str(name),
            Target::User(name) => write!(f, "\\{name}"),
            Target::Address(address) => f.write_str(address),
            Target::Pipe(command) => write!(f, "|{command}"),
            Target::File(path) => f.write_str(path),
            Target::Include(path) => write!(f, ":include:{}", path.display()),
        }
    }
}

/// One `name: targets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The name, in lower case (lookups are case-insensitive).
    pub name: String,
    /// Its targets, in file order, never empty.
    pub targets: Vec<Target>,
    /// The line the entry starts on (1-based), for messages.
    pub line: usize,
}

/// A syntax error: the operator's to fix. The file name is added by
/// whoever read the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error(line: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        line,
        message: message.into(),
    }
}

/// Lines with their 1-based numbers, CR stripped, comments and blank lines
/// dropped.
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim();
        (!trimmed.is_empty() && !trimmed.starts_with('#')).then_some((i + 1, line))
    })
}

/// Parses an aliases file. Names must be unique; each entry needs at least
/// one target. `base_dir` resolves relative `:include:` paths.
pub fn parse_aliases(text: &str, base_dir: &Path) -> Result<Vec<Alias>, SyntaxError> {
    // First gather logical entries (a line plus its continuation lines),
    // then parse each: an error can then name the entry's first line.
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (number, line) in meaningful_lines(text) {
        if line.starts_with([' ', '\t']) {
            match entries.last_mut() {
                Some((_, entry)) => {
                    entry.push(' ');
                    entry.push_str(line.trim());
                }
                None => {
                    return Err(error(
                        number,
                        "continuation line (starts with a blank) before any alias",
                    ));
                }
            }
        } else {
            entries.push((number, line.trim_end().to_owned()));
        }
    }
    let mut aliases: Vec<Alias> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashMap::new();
    for (line, entry) in entries {
        let Some((name, rest)) = entry.split_once(':') else {
            return Err(error(line, "expected \"name: target, ...\" (no ':' found)"));
        };
        let name = name.trim();
        if !is_local_name(name) {
            return Err(error(line, format!("invalid alias name {name:?}")));
        }
        let name = name.to_lowercase();
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(error(
                line,
                format!("duplicate alias {name:?} (first defined on line {first})"),
            ));
        }
        let targets = parse_targets(rest, base_dir).map_err(|message| error(line, message))?;
        if targets.is_empty() {
            return Err(error(line, format!("alias {name:?} has no targets")));
        }
        aliases.push(Alias {
            name,
            targets,
            line,
        });
    }
    Ok(aliases)
}

/// Parses an `:include:` file: targets, one or more per line separated by
/// commas; comments and blank lines ignored.
pub fn parse_include(text: &str, base_dir: &Path) -> Result<Vec<Target>, SyntaxError> {
    let mut targets = Vec::new();
    for (number, line) in meaningful_lines(text) {
        targets.extend(parse_targets(line, base_dir).map_err(|m| error(number, m))?);
    }
    Ok(targets)
}

/// Splits a comma-separated list of targets, honouring double quotes (with
/// backslash escapes inside them), and classifies each.
fn parse_targets(list: &str, base_dir: &Path) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    let mut piece = String::new();
    let mut in_quotes = false;
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                piece.push(c);
            }
            '\\' if in_quotes => {
                piece.push(c);
                match chars.next() {
                    Some(next) => piece.push(next),
                    None => break,
                }
            }
            ',' if !in_quotes => {
                push_target(&mut targets, &piece, base_dir)?;
                piece.clear();
            }
            _ => piece.push(c),
        }
    }
    if in_quotes {
        return Err(format!("unterminated quote in {:?}", list.trim()));
    }
    push_target(&mut targets, &piece, base_dir)?;
    Ok(targets)
}

fn push_target(targets: &mut Vec<Target>, piece: &str, base_dir: &Path) -> Result<(), String> {
    let piece = piece.trim();
    // Empty pieces come from a trailing comma or ",,": harmless, skipped.
    if !piece.is_empty() {
        targets.push(classify(piece, base_dir)?);
    }
    Ok(())
}

/// The content of a target that is one quoted string, unescaped; `None`
/// when the piece is not entirely quoted (`"john doe"@example.org` is an
/// address with a quoted local part, not a quoted target).
fn unquote(piece: &str) -> Option<String> {
    let inner = piece.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            _ => out.push(c),
        }
    }
    Some(out)
}

fn classify(piece: &str, base_dir: &Path) -> Result<Target, String> {
    let unquoted = unquote(piece);
    let text = unquoted.as_deref().unwrap_or(piece).trim();
    if let Some(command) = text.strip_prefix('|') {
        let command = command.trim();
        if command.is_empty() {
            return Err(format!("empty command in {piece:?}"));
        }
        return Ok(Target::Pipe(command.to_owned()));
    }
    if text.starts_with('/') {
        return Ok(Target::File(text.to_owned()));
    }
    if text.len() >= 9 && text.is_char_boundary(9) && text[..9].eq_ignore_ascii_case(":include:") {
        let path = text[9..].trim();
        if path.is_empty() {
            return Err(format!("empty file name in {piece:?}"));
        }
        return Ok(Target::Include(base_dir.join(path)));
    }
    if let Some(name) = text.strip_prefix('\\') {
        if !is_local_name(name) {
            return Err(format!("invalid local user {piece:?}"));
        }
        return Ok(Target::User(name.to_lowercase()));
    }
    // An address: a wholly quoted target is taken unquoted, otherwise the
    // text as written (so `"john doe"@example.org` keeps its quoted local
    // part); optional angle brackets are dropped.
    let written = if unquoted.is_some() { text } else { piece };
    let address = written
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(piece)
        .trim();
    if address.contains('@') {
        return match Mailbox::parse(address, true) {
            Ok(_) => Ok(Target::Address(address.to_owned())),
            Err(e) => Err(format!("invalid address {piece:?}: {e}")),
        };
    }
    if is_local_name(address) {
        return Ok(Target::Local(address.to_lowercase()));
    }
    Err(format!(
        "invalid target {piece:?} (expected a local name, an address, \"|command\", /file or :include:file)"
    ))
}

/// Whether `name` can be an alias name or a bare local target: a valid
/// unquoted local part (RFC 5321 dot-string, UTF-8 allowed).
pub fn is_local_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('"')
        && !name.contains('@')
        && Mailbox::parse(&format!("{name}@x"), true).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> &'static Path {
        Path::new("/etc")
    }

    fn local(n: &str) -> Target {
        Target::Local(n.into())
    }

    #[test]
    fn entries_parse() {
        let text = "\
# the staff
Staff: ann, Bob,
   carol@example.net,
# a comment between continuation lines does not end the entry
\tdave

postmaster:root
prog: \"|/usr/bin/filter --a, b\", \"/var/log/x y\"
copy: /var/log/copy, \\ann
list: :include:lists/list, :INCLUDE: /abs/list
quoted: \"john doe\"@example.org, <eve@example.org>,
";
        let aliases = parse_aliases(text, base()).unwrap();
        let got: Vec<(&str, &[Target], usize)> = aliases
            .iter()
            .map(|a| (a.name.as_str(), a.targets.as_slice(), a.line))
            .collect();
        let want: Vec<(&str, Vec<Target>, usize)> = vec![
            (
                "staff",
                vec![
                    local("ann"),
                    local("bob"),
                    Target::Address("carol@example.net".into()),
                    local("dave"),
                ],
                2,
            ),
            ("postmaster", vec![local("root")], 7),
            (
                "prog",
                vec![
                    Target::Pipe("/usr/bin/filter --a, b".into()),
                    Target::File("/var/log/x y".into()),
                ],
                8,
            ),
            (
                "copy",
                vec![
                    Target::File("/var/log/copy".into()),
                    Target::User("ann".into()),
                ],
                9,
            ),
            (
                "list",
                vec![
                    Target::Include("/etc/lists/list".into()),
                    Target::Include("/abs/list".into()),
                ],
                10,
            ),
            (
                "quoted",
                vec![
                    Target::Address("\"john doe\"@example.org".into()),
                    Target::Address("eve@example.org".into()),
                ],
                11,
            ),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1, g.2), (w.0, w.1.as_slice(), w.2));
        }
    }

    #[test]
    fn crlf_and_empty_file() {
        assert_eq!(parse_aliases("", base()).unwrap(), vec![]);
        assert_eq!(parse_aliases("# only\n\n  \n", base()).unwrap(), vec![]);
        let a = parse_aliases("a: b,\r\n c\r\n", base()).unwrap();
        assert_eq!(a[0].targets, vec![local("b"), local("c")]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("  ann\n", 1, "continuation line"),
            ("ok: a\nnocolon\n", 2, "no ':'"),
            (
                "a: b\n\nA: c\n",
                3,
                "duplicate alias \"a\" (first defined on line 1)",
            ),
            ("a:\n", 1, "has no targets"),
            ("a: , ,\n", 1, "has no targets"),
            ("a b: c\n", 1, "invalid alias name"),
            ("a@b: c\n", 1, "invalid alias name"),
            (": c\n", 1, "invalid alias name"),
            ("a: \"|cmd\n", 1, "unterminated quote"),
            ("x: y\na: b,\n  c d\n", 2, "invalid target \"c d\""),
            ("a: bad@-x.org\n", 1, "invalid address"),
            ("a: |\n", 1, "empty command"),
            ("a: :include:\n", 1, "empty file name"),
            ("a: \\\n", 1, "invalid local user"),
            ("a: <>\n", 1, "invalid target"),
        ];
        for (text, line, needle) in cases {
            let e = parse_aliases(text, base()).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn include_files() {
        let text = "# members\nann, bob\n\n  carol@example.net\n\"|prog x\"\n";
        assert_eq!(
            parse_include(text, base()).unwrap(),
            vec![
                local("ann"),
                local("bob"),
                Target::Address("carol@example.net".into()),
                Target::Pipe("prog x".into()),
            ]
        );
        let e = parse_include("ann\nb c\n", base()).unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn local_names() {
        for (name, ok) in [
            ("ann", true),
            ("ann.b", true),
            ("owner-list", true),
            ("a+b", true),
            ("üser", true),
            ("", false),
            (".a", false),
            ("a b", false),
            ("\"a\"", false),
            ("a@b", false),
        ] {
            assert_eq!(is_local_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn targets_display_as_written() {
        for (text, shown) in [
            ("ann", "ann"),
            ("\\ann", "\\ann"),
            ("\"|cmd a\"", "|cmd a"),
            ("/f", "/f"),
            (":include:/l", ":include:/l"),
            ("a@b.c", "a@b.c"),
        ] {
            let t = classify(text, base()).unwrap();
            assert_eq!(t.to_string(), shown);
        }
    }
}
