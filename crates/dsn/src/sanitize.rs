//! Making untrusted text safe to put in a header or a delivery-status
//! field: one line, no control characters, bounded length, folded.

/// Longest value kept of any one field, in bytes. SMTP replies are at most
/// a few lines of 512 bytes; anything longer is noise that would only make
/// the report hard to read.
pub(crate) const MAX_VALUE: usize = 4000;

/// Fold a field at whitespace before this column (RFC 5322 §2.1.1's
/// "SHOULD be no more than 78 characters").
const FOLD_AT: usize = 78;

/// A run of non-whitespace longer than this is split without whitespace
/// (RFC 5322's hard limit is 998 characters per line): the reader then sees
/// an extra space in it, which is better than a line the next hop refuses.
const HARD_SPLIT: usize = 900;

/// `s` as one line: every control character (CR, LF, TAB, NUL, DEL …)
/// becomes a space, runs of spaces collapse to one, and the ends are
/// trimmed; cut to [`MAX_VALUE`] bytes (at a character boundary, marked
/// with `...`). A multi-line SMTP reply becomes its lines joined by spaces.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_VALUE));
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if out.len() + c.len_utf8() > MAX_VALUE {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

/// An address for a `From:` or `To:` header: one line, and without the
/// characters that would end the angle-bracketed form early or open
/// another one.
pub(crate) fn address(s: &str) -> String {
    one_line(s)
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | ' ' | ','))
        .collect()
}

/// `Name: value` as lines ending in CRLF, folded at whitespace so that a
/// line stays under [`FOLD_AT`] columns where the value allows, and never
/// above [`HARD_SPLIT`] + the name. `value` must already be one line.
pub(crate) fn fold_field(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 8);
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for (i, piece) in split_hard(word).into_iter().enumerate() {
            // The first piece of a word goes after a space (folded if the
            // line is full); later pieces of an over-long word always start
            // a continuation line.
            let width = piece.chars().count();
            if i > 0 || (column + 1 + width > FOLD_AT && column > name.len() + 1) {
                out.push_str("\r\n ");
                column = 1;
            } else {
                out.push(' ');
                column += 1;
            }
            out.push_str(piece);
            column += width;
        }
    }
    out.push_str("\r\n");
    out
}

/// `word` in pieces of at most [`HARD_SPLIT`] bytes, cut at character
/// boundaries.
fn split_hard(word: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = word;
    while rest.len() > HARD_SPLIT {
        let mut cut = HARD_SPLIT;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_table() {
        let table: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("  padded  ", "padded"),
            (
                "550-5.1.1 first\r\n550 5.1.1 second",
                "550-5.1.1 first 550 5.1.1 second",
            ),
            ("a\r\nBcc: evil@example.org", "a Bcc: evil@example.org"),
            ("tab\there", "tab here"),
            ("nul\0del\x7fend", "nul del end"),
            ("bare\rcr", "bare cr"),
            ("ünïcödé stays", "ünïcödé stays"),
            ("\r\n\r\n", ""),
        ];
        for (input, want) in table {
            assert_eq!(one_line(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn one_line_is_bounded() {
        let long = "é".repeat(MAX_VALUE);
        let got = one_line(&long);
        assert!(got.len() <= MAX_VALUE + 3);
        assert!(got.ends_with("..."));
    }

    #[test]
    fn address_table() {
        let table: &[(&str, &str)] = &[
            ("user@example.org", "user@example.org"),
            ("<user@example.org>", "user@example.org"),
            ("a@b\r\nBcc: c@d", "a@bBcc:c@d"),
            ("x@y>, <z@w", "x@yz@w"),
        ];
        for (input, want) in table {
            assert_eq!(address(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn fold_table() {
        let table: &[(&str, &str, &str)] = &[
            ("Action", "failed", "Action: failed\r\n"),
            ("X", "", "X:\r\n"),
            (
                "Diagnostic-Code",
                "smtp; 550 5.1.1 <someone@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
                "Diagnostic-Code: smtp; 550 5.1.1 <someone@example.org>: Recipient address\r\n rejected: User unknown in virtual mailbox table\r\n",
            ),
        ];
        for (name, value, want) in table {
            assert_eq!(fold_field(name, value), *want);
        }
    }

    #[test]
    fn fold_keeps_every_line_short_and_unfolds_back() {
        let value = one_line(&format!("{} {}", "word ".repeat(100), "x".repeat(2500)));
        let folded = fold_field("Diagnostic-Code", &value);
        for line in folded.split("\r\n") {
            assert!(line.len() <= 998, "line of {} bytes", line.len());
        }
        // Unfolding (RFC 5322 §2.2.3: remove each CRLF before WSP) gives
        // back the words; the over-long one gains spaces at its cuts only.
        let unfolded = folded.trim_end_matches("\r\n").replace("\r\n", "");
        let words: Vec<&str> = unfolded["Diagnostic-Code: ".len()..].split(' ').collect();
        assert_eq!(words.iter().filter(|w| **w == "word").count(), 100);
        assert_eq!(words[100..].concat(), "x".repeat(2500));
    }
}
