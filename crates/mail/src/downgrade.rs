//! 8BITMIME downgrade (RFC 6152 §3, RFC 2045): a message with 8-bit body
//! content made 7-bit, for a server that does not offer 8BITMIME — each
//! MIME leaf part with 8-bit bytes re-encoded, `text/*` as
//! quoted-printable (still readable, as Postfix does), anything else as
//! base64, its `Content-Transfer-Encoding` set to match; multiparts and
//! `message/rfc822` parts are walked and marked `7bit`. Parts that are
//! already 7-bit are copied byte for byte, and so is every header field.
//!
//! What cannot be made 7-bit without changing what the message says is
//! an error, never a guess: 8-bit bytes in a header field (that is
//! SMTPUTF8's business, or a broken message), in a multipart's preamble
//! or epilogue, or inside a part that claims to be quoted-printable or
//! base64 already; and structures nested deeper than [`MAX_DEPTH`].
//!
//! Sans-IO and bounded: the whole message in, the whole message out, no
//! recursion deeper than [`MAX_DEPTH`]. The input is hostile (any bytes);
//! `fuzz/fuzz_targets/mime_downgrade.rs` checks that nothing panics and
//! that what comes out is 7-bit.

use std::borrow::Cow;
use std::fmt;

/// Multiparts and `message/rfc822` parts nest at most this deep; deeper
/// is refused (a real message rarely goes past 4).
pub const MAX_DEPTH: usize = 32;

/// Why a message could not be made 7-bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DowngradeError {
    /// A header field holds 8-bit bytes: it needs SMTPUTF8 (or is broken).
    EightBitHeader(String),
    /// 8-bit bytes outside any part: a multipart's preamble or epilogue.
    EightBitOutsideParts,
    /// A part declared quoted-printable or base64 holds 8-bit bytes.
    EightBitInEncodedPart(String),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for DowngradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DowngradeError::EightBitHeader(name) => {
                write!(f, "8-bit bytes in the {name} header field")
            }
            DowngradeError::EightBitOutsideParts => {
                f.write_str("8-bit bytes in a multipart's preamble or epilogue")
            }
            DowngradeError::EightBitInEncodedPart(cte) => {
                write!(f, "8-bit bytes in a part declared {cte}")
            }
            DowngradeError::TooDeep => write!(f, "MIME parts nested deeper than {MAX_DEPTH}"),
        }
    }
}

impl std::error::Error for DowngradeError {}

/// `message` (CRLF line ends) made 7-bit; borrowed when it already is.
pub fn to_seven_bit(message: &[u8]) -> Result<Cow<'_, [u8]>, DowngradeError> {
    if message.is_ascii() {
        return Ok(Cow::Borrowed(message));
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 4);
    entity(message, 0, &mut out)?;
    Ok(Cow::Owned(out))
}

/// One header field: its name and its raw bytes (folded lines included,
/// the final CRLF included).
struct Field<'a> {
    name: &'a [u8],
    raw: &'a [u8],
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The unfolded value, trimmed.
    fn value(&self) -> String {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let value: String = String::from_utf8_lossy(&self.raw[colon + 1..])
            .replace("\r\n", "")
            .replace('\n', "");
        value.trim().to_owned()
    }
}

/// Splits an entity into its header fields and its body (after the empty
/// line; empty when there is none).
fn split(entity: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < entity.len() {
        let end = entity[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(entity.len(), |i| pos + i + 1);
        let line = &entity[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (fields, &entity[end..]);
        }
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => {
                // A continuation: extend the previous field's raw bytes.
                let start = last.raw.as_ptr() as usize - entity.as_ptr() as usize;
                last.raw = &entity[start..end];
            }
            _ => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let name = trim(&line[..colon]);
                fields.push(Field {
                    name,
                    raw: &entity[pos..end],
                });
            }
        }
        pos = end;
    }
    (fields, &entity[entity.len()..])
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// `type/subtype` in lower case and the `boundary` parameter.
fn content_type(fields: &[Field<'_>]) -> (String, Option<String>) {
    let Some(field) = fields.iter().find(|f| f.is("content-type")) else {
        return ("text/plain".into(), None);
    };
    let value = field.value();
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut boundary = None;
    for param in parts {
        if let Some((name, v)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("boundary")
        {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if !v.is_empty() {
                boundary = Some(v.to_owned());
            }
        }
    }
    let media = if media.contains('/') {
        media
    } else {
        "text/plain".into()
    };
    (media, boundary)
}

fn transfer_encoding(fields: &[Field<'_>]) -> String {
    fields
        .iter()
        .find(|f| f.is("content-transfer-encoding"))
        .map(|f| f.value().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into())
}

/// Writes the header fields, `Content-Transfer-Encoding: <cte>` in place
/// of any there was (`None`: unchanged), and the empty line.
fn write_header(fields: &[Field<'_>], cte: Option<&str>, out: &mut Vec<u8>) {
    for field in fields {
        if cte.is_some() && field.is("content-transfer-encoding") {
            continue;
        }
        out.extend_from_slice(field.raw);
        if !field.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(cte) = cte {
        out.extend_from_slice(b"Content-Transfer-Encoding: ");
        out.extend_from_slice(cte.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn entity(entity: &[u8], depth: usize, out: &mut Vec<u8>) -> Result<(), DowngradeError> {
    if depth > MAX_DEPTH {
        return Err(DowngradeError::TooDeep);
    }
    let (fields, body) = split(entity);
    if let Some(field) = fields.iter().find(|f| !f.raw.is_ascii()) {
        return Err(DowngradeError::EightBitHeader(
            String::from_utf8_lossy(field.name).into_owned(),
        ));
    }
    if body.is_ascii() {
        out.extend_from_slice(entity);
        return Ok(());
    }
    let (media, boundary) = content_type(&fields);
    let cte = transfer_encoding(&fields);
    if matches!(cte.as_str(), "quoted-printable" | "base64") {
        return Err(DowngradeError::EightBitInEncodedPart(cte));
    }
    if media.starts_with("multipart/")
        && let Some(boundary) = boundary
    {
        write_header(&fields, Some("7bit"), out);
        return multipart(body, &boundary, depth, out);
    }
    if media == "message/rfc822" {
        write_header(&fields, Some("7bit"), out);
        return self::entity(body, depth + 1, out);
    }
    if media.starts_with("text/") {
        write_header(&fields, Some("quoted-printable"), out);
        quoted_printable(body, out);
    } else {
        write_header(&fields, Some("base64"), out);
        base64_lines(body, out);
    }
    Ok(())
}

/// The parts of a multipart body, each converted; the delimiter lines,
/// preamble and epilogue copied (they must be 7-bit already).
fn multipart(
    body: &[u8],
    boundary: &str,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), DowngradeError> {
    let delimiter = format!("--{boundary}");
    // Byte offsets of the delimiter lines: (line start, line end, closing).
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = trim(&body[pos..end]);
        if let Some(rest) = line.strip_prefix(delimiter.as_bytes())
            && (rest.is_empty() || rest == b"--")
        {
            lines.push((pos, end, rest == b"--"));
            if rest == b"--" {
                break;
            }
        }
        pos = end;
    }
    let Some(&(first, _, _)) = lines.first() else {
        // No delimiter: not really a multipart; its body cannot be told
        // apart from a preamble.
        return Err(DowngradeError::EightBitOutsideParts);
    };
    let preamble = &body[..first];
    if !preamble.is_ascii() {
        return Err(DowngradeError::EightBitOutsideParts);
    }
    out.extend_from_slice(preamble);
    for (i, &(start, end, closing)) in lines.iter().enumerate() {
        out.extend_from_slice(&body[start..end]);
        if closing {
            let epilogue = &body[end..];
            if !epilogue.is_ascii() {
                return Err(DowngradeError::EightBitOutsideParts);
            }
            out.extend_from_slice(epilogue);
            return Ok(());
        }
        // The part runs to the CRLF before the next delimiter line (that
        // CRLF belongs to the delimiter, RFC 2046 §5.1.1).
        let next = lines.get(i + 1).map_or(body.len(), |&(s, _, _)| s);
        let part = &body[end..next];
        let (part, crlf) = match part.strip_suffix(b"\r\n") {
            Some(p) => (p, &b"\r\n"[..]),
            None => (part, &b""[..]),
        };
        entity(part, depth + 1, out)?;
        out.extend_from_slice(crlf);
    }
    // No closing delimiter: what followed the last one was a part.
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable (RFC 2045 §6.7): CRLF stays a hard line break, lines
/// are at most 76 characters (soft breaks `=` CRLF), `=`, controls, 8-bit
/// bytes and white space before a line end are encoded.
fn quoted_printable(body: &[u8], out: &mut Vec<u8>) {
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next, hard) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], &rest[i + 2..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal = match b {
                b'=' => false,
                b' ' | b'\t' => !last,
                33..=126 => true,
                _ => false,
            };
            let token_len = if literal { 1 } else { 3 };
            // Room for the token and, unless it ends the line, a soft "=".
            let limit = if last { 76 } else { 75 };
            if width + token_len > limit {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            width += token_len;
        }
        if hard {
            out.extend_from_slice(b"\r\n");
        }
        rest = next;
    }
}

/// Base64 in lines of 76 characters, each ending in CRLF.
fn base64_lines(body: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for line in body.chunks(57) {
        for chunk in line.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]
                } else {
                    b'='
                });
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests;
