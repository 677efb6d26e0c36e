//! Escaping of keys and values so that one event is always one line.
//!
//! Log values carry hostile input (SMTP commands, header fields, DNS
//! answers). A raw newline would let a peer forge whole log lines; a raw
//! escape sequence could drive the operator's terminal; a bidi override
//! could make a line read differently from what it says. So every value is
//! escaped here, whatever format prints it.

use std::fmt::Write as _;

/// True for characters that never reach a log line raw: ASCII and C1
/// controls (line breaks, ESC, DEL, NEL), the Unicode line and paragraph
/// separators, and the invisible or direction-changing format characters.
pub(crate) fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Appends a logfmt key. Keys come from our own code, but a key with a space
/// or `=` would still break the line's grammar, so anything outside
/// `[A-Za-z0-9_.-]` becomes `_`.
pub(crate) fn push_key(out: &mut String, key: &str) {
    if key.is_empty() {
        out.push('_');
        return;
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            c
        } else {
            '_'
        }
    }));
}

/// Appends a logfmt value: bare when it is a plain token, otherwise in
/// double quotes with `"`, `\` and every [`must_escape`] character escaped.
pub(crate) fn push_value(out: &mut String, value: &str) {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| matches!(c, ' ' | '=' | '"' | '\\') || c.is_whitespace() || must_escape(c));
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' || must_escape(c) {
            push_escape(out, c);
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

/// Appends free text for the human format: unquoted, with only the
/// [`must_escape`] characters escaped, so it stays readable and one line.
pub(crate) fn push_text(out: &mut String, text: &str) {
    for c in text.chars() {
        if must_escape(c) {
            push_escape(out, c);
        } else {
            out.push(c);
        }
    }
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        // Every other escaped character is in the Basic Multilingual Plane,
        // so four hex digits (the JSON form logfmt readers accept) suffice.
        other => {
            let _ = write!(out, "\\u{:04x}", u32::from(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> String {
        let mut out = String::new();
        push_value(&mut out, v);
        out
    }

    #[test]
    fn values() {
        let cases = [
            ("plain", "plain"),
            ("user@example.org", "user@example.org"),
            ("4.2.0", "4.2.0"),
            ("", "\"\""),
            ("two words", "\"two words\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("line\nbreak", "\"line\\nbreak\""),
            ("cr\rlf\n", "\"cr\\rlf\\n\""),
            ("tab\there", "\"tab\\there\""),
            ("nul\0", "\"nul\\u0000\""),
            ("esc\x1b[31mred", "\"esc\\u001b[31mred\""),
            ("del\x7f", "\"del\\u007f\""),
            ("nel\u{85}", "\"nel\\u0085\""),
            ("ls\u{2028}ps\u{2029}", "\"ls\\u2028ps\\u2029\""),
            ("rlo\u{202E}txt", "\"rlo\\u202etxt\""),
            ("zw\u{200B}sp", "\"zw\\u200bsp\""),
            ("bom\u{FEFF}", "\"bom\\ufeff\""),
            ("nbsp\u{A0}x", "\"nbsp\u{A0}x\""),
            ("naïve", "naïve"),
            ("日本語", "日本語"),
        ];
        for (input, expected) in cases {
            assert_eq!(value(input), expected, "for {input:?}");
        }
    }

    #[test]
    fn keys() {
        let cases = [
            ("queue_id", "queue_id"),
            ("smtp.reply", "smtp.reply"),
            ("dash-ok", "dash-ok"),
            ("", "_"),
            ("a b", "a_b"),
            ("a=b", "a_b"),
            ("new\nline", "new_line"),
            ("é", "_"),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            push_key(&mut out, input);
            assert_eq!(out, expected, "for {input:?}");
        }
    }

    #[test]
    fn human_text() {
        let cases = [
            ("picked up message", "picked up message"),
            (
                "quote \" and back\\slash stay",
                "quote \" and back\\slash stay",
            ),
            ("forged\nts=0 level=error", "forged\\nts=0 level=error"),
            ("bell\x07", "bell\\u0007"),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            push_text(&mut out, input);
            assert_eq!(out, expected, "for {input:?}");
        }
    }

    #[test]
    fn no_escaped_output_contains_a_raw_line_break_or_control() {
        // Every char up to U+3000 and then some, alone and in context.
        for code in (0u32..0x3000).chain(0xFEF0..0x10000) {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let input = format!("a{c}b");
            for out in [value(&input), {
                let mut s = String::new();
                push_text(&mut s, &input);
                s
            }] {
                assert!(
                    !out.chars().any(must_escape),
                    "U+{code:04X} escaped as {out:?}"
                );
            }
        }
    }
}
