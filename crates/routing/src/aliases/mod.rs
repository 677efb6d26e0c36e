//! The alias table: the aliases file and every `:include:` file it names,
//! read once and kept in memory, with what is needed to notice that any of
//! them changed.
//!
//! Include files are read when the table is loaded, not at each delivery:
//! expansion then does no I/O (so it is fast, testable and fuzzable), a
//! syntax error in a list is found at load time like one in the aliases
//! file, and a change to a list is picked up by the same change check as
//! the aliases file itself. A list file that does not exist is not an
//! error of the table: the aliases that include it fail with 5.2.4 until
//! it appears (and its appearance triggers a reload).
//!
//! [`WatchedAliases`] keeps a table in force and reloads it when its files
//! change: the router and the SMTP server both use it.

mod parse;
mod watched;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use parse::{Alias, SyntaxError, Target, is_local_name, parse_aliases, parse_include};
pub use watched::{Refresh, WatchedAliases};

/// An `:include:` file as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Include {
    /// Its targets.
    Targets(Vec<Target>),
    /// It does not exist (yet).
    Missing,
}

/// Why an alias table could not be loaded. Either way the previous table
/// stays in force (at start, the router refuses to run).
#[derive(Debug)]
pub enum AliasError {
    /// The operator's to fix: a file does not parse.
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A local resource: a file exists but cannot be read.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasError::Syntax {
                file,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", file.display()),
            AliasError::Io { path, source } => {
                write!(f, "cannot read aliases file {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for AliasError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AliasError::Io { source, .. } => Some(source),
            AliasError::Syntax { .. } => None,
        }
    }
}

/// What identifies one version of a file: a rewrite in place changes the
/// modification time or the size, a replacement by rename the inode.
/// `None` when the file does not exist.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> io::Result<Stamp> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.modified()?, m.len(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Aliases by name, and the include files they use.
#[derive(Debug, Clone, Default)]
pub struct AliasTable {
    aliases: HashMap<String, Alias>,
    includes: HashMap<PathBuf, Include>,
    /// Every file read, with its stamp at the time, for [`changed`].
    ///
    /// [`changed`]: AliasTable::changed
    sources: Vec<(PathBuf, Stamp)>,
}

impl AliasTable {
    /// No aliases at all (no `router.aliases` configured).
    pub fn empty() -> AliasTable {
        AliasTable::default()
    }

    /// A table from the text of an aliases file, with no include file
    /// readable (every `:include:` is [`Include::Missing`] until added with
    /// [`with_include`](Self::with_include)). For tests and fuzzing.
    pub fn from_text(text: &str, base_dir: &Path) -> Result<AliasTable, SyntaxError> {
        let aliases = parse_aliases(text, base_dir)?;
        let mut table = AliasTable::empty();
        for alias in aliases {
            for target in &alias.targets {
                if let Target::Include(path) = target {
                    table.includes.insert(path.clone(), Include::Missing);
                }
            }
            table.aliases.insert(alias.name.clone(), alias);
        }
        Ok(table)
    }

    /// Adds (or replaces) the content of an include file. For tests.
    pub fn with_include(mut self, path: impl Into<PathBuf>, targets: Vec<Target>) -> AliasTable {
        self.includes.insert(path.into(), Include::Targets(targets));
        self
    }

    /// Reads `path` and every include file reachable from it.
    pub fn load(path: &Path) -> Result<AliasTable, AliasError> {
        let mut table = AliasTable::empty();
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let io_error = |path: &Path, source| AliasError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Stamp before reading: a change during the read then shows as a
        // change at the next check, never the reverse.
        let main_stamp = stamp(path).map_err(|e| io_error(path, e))?;
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        table.sources.push((path.to_path_buf(), main_stamp));
        let syntax = |file: &Path, e: SyntaxError| AliasError::Syntax {
            file: file.to_path_buf(),
            line: e.line,
            message: e.message,
        };
        let aliases = parse_aliases(&text, &base).map_err(|e| syntax(path, e))?;
        let mut pending: Vec<PathBuf> = Vec::new();
        for alias in aliases {
            pending.extend(includes_of(&alias.targets));
            table.aliases.insert(alias.name.clone(), alias);
        }
        while let Some(include) = pending.pop() {
            if table.includes.contains_key(&include) {
                continue;
            }
            let include_stamp = stamp(&include).map_err(|e| io_error(&include, e))?;
            table.sources.push((include.clone(), include_stamp));
            let text = match std::fs::read_to_string(&include) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(
                        file = %include.display(),
                        "include file of the aliases does not exist: the aliases using it fail with 5.2.4"
                    );
                    table.includes.insert(include, Include::Missing);
                    continue;
                }
                Err(e) => return Err(io_error(&include, e)),
            };
            let dir = include.parent().unwrap_or(Path::new("/"));
            let targets = parse_include(&text, dir).map_err(|e| syntax(&include, e))?;
            pending.extend(includes_of(&targets));
            table.includes.insert(include, Include::Targets(targets));
        }
        Ok(table)
    }

    /// Whether any file the table was read from has changed, appeared or
    /// disappeared since. A file that cannot be examined counts as changed,
    /// so that the reload reports the problem.
    pub fn changed(&self) -> bool {
        self.sources
            .iter()
            .any(|(path, was)| stamp(path).map_or(true, |now| now != *was))
    }

    /// Takes the current state of every file the table was read from as
    /// the reference for [`changed`](Self::changed). Called after a failed
    /// reload, so that a broken file is reported once, not at every check,
    /// and reloading is tried again when it changes again.
    pub fn restamp(&mut self) {
        for (path, was) in &mut self.sources {
            // A file that cannot be examined keeps counting as changed.
            if let Ok(now) = stamp(path) {
                *was = now;
            }
        }
    }

    /// The alias `name` (in lower case).
    pub fn lookup(&self, name: &str) -> Option<&Alias> {
        self.aliases.get(name)
    }

    /// The content of an include file named by some alias.
    pub fn include(&self, path: &Path) -> Option<&Include> {
        self.includes.get(path)
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    /// Whether there are no aliases.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// Every include file named, in no particular order.
    pub fn include_paths(&self) -> impl Iterator<Item = &Path> {
        self.includes.keys().map(PathBuf::as_path)
    }

    /// Every alias name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.aliases.keys().map(String::as_str)
    }
}

fn includes_of(targets: &[Target]) -> impl Iterator<Item = PathBuf> + '_ {
    targets.iter().filter_map(|t| match t {
        Target::Include(path) => Some(path.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_includes_and_tracks_changes() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::create_dir(d.path().join("lists")).unwrap();
        std::fs::write(
            &aliases,
            "staff: :include:lists/staff\nghost: :include:/nonexistent/skein-list\n",
        )
        .unwrap();
        std::fs::write(d.path().join("lists/staff"), "ann, bob\n:include:more\n").unwrap();
        std::fs::write(d.path().join("lists/more"), "carol\n").unwrap();
        let table = AliasTable::load(&aliases).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.include(&d.path().join("lists/staff")),
            Some(&Include::Targets(vec![
                Target::Local("ann".into()),
                Target::Local("bob".into()),
                Target::Include(d.path().join("lists/more")),
            ]))
        );
        assert_eq!(
            table.include(&d.path().join("lists/more")),
            Some(&Include::Targets(vec![Target::Local("carol".into())]))
        );
        assert_eq!(
            table.include(Path::new("/nonexistent/skein-list")),
            Some(&Include::Missing)
        );
        assert!(!table.changed());

        // Same size, so only the inode or time can tell: replace by rename.
        let tmp = d.path().join("lists/more.new");
        std::fs::write(&tmp, "dave\n").unwrap();
        std::fs::rename(&tmp, d.path().join("lists/more")).unwrap();
        assert!(table.changed());
        let table = AliasTable::load(&aliases).unwrap();
        assert!(!table.changed());
        std::fs::remove_file(d.path().join("lists/more")).unwrap();
        assert!(table.changed(), "a disappearing include is a change");
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::write(&aliases, "a: b\nbroken\n").unwrap();
        let e = AliasTable::load(&aliases).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2: expected \"name: target, ...\" (no ':' found)",
                aliases.display()
            )
        );

        std::fs::write(&aliases, "a: :include:list\n").unwrap();
        std::fs::write(d.path().join("list"), "ok\nnot ok\n").unwrap();
        let e = AliasTable::load(&aliases).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2: ", d.path().join("list").display())),
            "{e}"
        );

        let e = AliasTable::load(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, AliasError::Io { .. }), "{e}");
    }
}
