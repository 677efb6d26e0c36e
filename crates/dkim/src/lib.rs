//! skein-dkim: DKIM signatures for outgoing mail (RFC 6376 with
//! `rsa-sha256`, RFC 8463 with `ed25519-sha256`).
//!
//! [`Signer::load`] reads the private keys the `[[dkim]]` entries name;
//! [`Signer::sign`] picks the entry for a message's `From:` domain and
//! returns the `DKIM-Signature` field to put at the top of its header;
//! [`generate`] makes a new key and the DNS TXT record that publishes it
//! (`skein dkim keygen`). The canonicalization, hashing and signing are
//! Stalwart's `mail-auth` over *ring*; this crate decides what is signed,
//! with which key, and how keys are stored.
//!
//! # What is signed
//!
//! The message as it will be sent: the router signs it once, when it
//! routes it, and writes the signed message to the queue, so that every
//! delivery attempt sends the same bytes. The `d=` is the `From:` domain
//! (or the entry's `signing_domain`), which is what DMARC aligns on; a
//! message with no `From:` address, or several, is not signed. The entry's
//! `headers` are all named in `h=`, those absent too (so that adding one
//! in transit breaks the signature, RFC 6376 §8.15).
//!
//! # Reads and writes
//!
//! [`Signer::load`] reads the key files; [`generate`] returns the key and
//! writes nothing (its caller does, mode 0600). Nothing else touches the
//! file system.
//!
//! # Security
//!
//! A private key is a secret: it is held in memory by the process that
//! signs (the router, unprivileged) and never logged. Message content is
//! hostile input: mail-parser, which never panics on malformed input,
//! finds the `From:` address; mail-auth canonicalizes the raw bytes.

#![warn(missing_docs)]

use std::fmt;
use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{Algorithm, Ed25519Key, HashOutput, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization as MaCanon, DkimSigner};
use mail_parser::MessageParser;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use skein_config::{Canonicalization, DkimAlgorithm, DkimKey};

/// A key that could not be loaded: the entry (its index in `[[dkim]]`,
/// for the error's `dkim[N].key`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The entry's index.
    pub index: usize,
    /// The key file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub detail: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.detail)
    }
}

impl std::error::Error for KeyError {}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

struct Entry {
    config: DkimKey,
    key: Key,
}

/// The loaded `[[dkim]]` keys, in file order.
pub struct Signer {
    entries: Vec<Entry>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_list()
            .entries(self.entries.iter().map(|e| {
                format!(
                    "{} s={} {}",
                    e.config.domain, e.config.selector, e.config.algorithm
                )
            }))
            .finish()
    }
}

/// A signature made for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The whole `DKIM-Signature:` field, folded, ending in CRLF: what to
    /// put before the message's first header line.
    pub field: String,
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `a=`.
    pub algorithm: DkimAlgorithm,
}

/// Why a message was not signed although an entry might have applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No `From:` address, or more than one: there is no one domain to
    /// sign for.
    NoSingleFrom,
    /// No entry matches the `From:` domain.
    NoKey(String),
    /// The message already starts with a signature of this entry (a
    /// routing that was interrupted after the signed copy was written).
    AlreadySigned,
}

impl Signer {
    /// Loads the key of every entry; the first that does not load is the
    /// error. The key must be of the entry's algorithm.
    pub fn load(entries: &[DkimKey]) -> Result<Signer, KeyError> {
        let mut loaded = Vec::with_capacity(entries.len());
        for (index, config) in entries.iter().enumerate() {
            let error = |detail: String| KeyError {
                index,
                path: config.key.clone(),
                detail,
            };
            let pem = std::fs::read(&config.key).map_err(|e| error(format!("cannot read: {e}")))?;
            let key = load_key(&pem, config.algorithm).map_err(error)?;
            loaded.push(Entry {
                config: config.clone(),
                key,
            });
        }
        Ok(Signer { entries: loaded })
    }

    /// Whether there is no key at all (nothing will ever be signed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for mail from `domain`, if any.
    pub fn entry_for(&self, domain: &str) -> Option<&DkimKey> {
        self.find(domain).map(|e| &e.config)
    }

    fn find(&self, domain: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.config.matches(domain))
    }

    /// Signs `message` (CRLF line ends, header and body) with the entry for
    /// its `From:` domain: `Ok(Err(why))` when it is not to be signed,
    /// `Err` when signing failed (a bug or a key the library refused).
    pub fn sign(&self, message: &[u8]) -> Result<Result<Signed, Unsigned>, String> {
        let Some(from_domain) = from_domain(message) else {
            return Ok(Err(Unsigned::NoSingleFrom));
        };
        let Some(entry) = self.find(&from_domain) else {
            return Ok(Err(Unsigned::NoKey(from_domain)));
        };
        let d = entry.config.d_for(&from_domain);
        if starts_with_signature(message, &d, &entry.config.selector) {
            return Ok(Err(Unsigned::AlreadySigned));
        }
        let field = match &entry.key {
            Key::Rsa(key) => sign_with(key, &entry.config, &d, message)?,
            Key::Ed25519(key) => sign_with(key, &entry.config, &d, message)?,
        };
        Ok(Ok(Signed {
            field,
            domain: d,
            selector: entry.config.selector.clone(),
            algorithm: entry.config.algorithm,
        }))
    }
}

/// A loaded key lent to one signature: mail-auth's signer owns its key,
/// and the `d=` differs per message for a pattern entry.
struct Lent<'a, K>(&'a K);

impl<K: SigningKey> SigningKey for Lent<'_, K> {
    type Hasher = K::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        self.0.hash(data)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

fn sign_with<K: SigningKey>(
    key: &K,
    config: &DkimKey,
    d: &str,
    message: &[u8],
) -> Result<String, String> {
    let mut headers: Vec<&str> = config.headers.iter().map(String::as_str).collect();
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
        headers.insert(0, "From");
    }
    let (ch, cb) = config.canonicalization;
    let signature = DkimSigner::from_key(Lent(key))
        .domain(d)
        .selector(&config.selector)
        .headers(headers)
        .header_canonicalization(canon(ch))
        .body_canonicalization(canon(cb))
        .sign(message)
        .map_err(|e| format!("DKIM signing failed: {e}"))?;
    Ok(tidy(signature.to_header()))
}

/// mail-auth folds its field at a fixed width, and when the `b=` value
/// ends near the fold the closing `;` lands alone on a continuation line.
/// RFC 6376 §3.5 deletes the `b=` value "including all surrounding
/// whitespace", but verifiers disagree about whitespace after it (dkimpy
/// keeps it, and then fails every such signature), so no whitespace is
/// left there: the `;` follows the value.
fn tidy(field: String) -> String {
    let Some(b) = field.rfind("; b=").or_else(|| field.rfind(";b=")) else {
        return field;
    };
    let (head, tail) = field.split_at(b + 1);
    let value_end = tail
        .trim_end_matches(['\r', '\n'])
        .trim_end_matches(';')
        .trim_end_matches([' ', '\t', '\r', '\n']);
    let rest = &tail[value_end.len()..];
    if rest
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with(';')
    {
        format!("{head}{value_end};\r\n")
    } else {
        field
    }
}

fn canon(c: Canonicalization) -> MaCanon {
    match c {
        Canonicalization::Simple => MaCanon::Simple,
        Canonicalization::Relaxed => MaCanon::Relaxed,
    }
}

fn load_key(pem: &[u8], algorithm: DkimAlgorithm) -> Result<Key, String> {
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("not a PEM private key ({e}); `skein dkim keygen` writes one"))?;
    match (algorithm, der) {
        (DkimAlgorithm::RsaSha256, der @ (PrivateKeyDer::Pkcs8(_) | PrivateKeyDer::Pkcs1(_))) => {
            RsaKey::<Sha256>::from_key_der(der)
                .map(Key::Rsa)
                .map_err(|e| format!("not a usable RSA key for rsa-sha256: {e}"))
        }
        (DkimAlgorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                .map(Key::Ed25519)
                .map_err(|e| format!("not a usable Ed25519 key for ed25519-sha256: {e}"))
        }
        (algorithm, _) => Err(format!(
            "the key's format does not fit algorithm {algorithm} (rsa-sha256: PKCS#8 or PKCS#1 RSA; ed25519-sha256: PKCS#8 Ed25519)"
        )),
    }
}

/// The domain of the message's one `From:` address, in lower case.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    let from = parsed.from()?;
    let mut addresses = from.iter();
    let first = addresses.next()?.address()?;
    if addresses.next().is_some() {
        return None;
    }
    let (_, domain) = first.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Whether the first header field is a `DKIM-Signature` with `d=` and
/// `s=` equal to these.
fn starts_with_signature(message: &[u8], d: &str, s: &str) -> bool {
    const NAME: &[u8] = b"dkim-signature:";
    if message.len() < NAME.len() || !message[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    // The field runs until a line that does not start with white space.
    let mut end = 0;
    while let Some(i) = message[end..].windows(2).position(|w| w == b"\r\n") {
        end += i + 2;
        if !matches!(message.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let field: String = String::from_utf8_lossy(&message[NAME.len()..end])
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let tag = |name: &str| {
        field.split(';').find_map(|t| {
            t.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
        })
    };
    tag("d").as_deref() == Some(&d.to_ascii_lowercase()) && tag("s").as_deref() == Some(s)
}

/// A new key: the private key as PEM (PKCS#8) and the DNS TXT record
/// value that publishes its public half.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// `-----BEGIN PRIVATE KEY-----…`: for the `key` file (mode 0600).
    pub pem: String,
    /// `v=DKIM1; k=rsa; p=…` (or `k=ed25519`): the TXT record's text.
    pub txt: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("txt", &self.txt)
            .finish_non_exhaustive()
    }
}

/// The RSA key size `generate` uses: RFC 8301 asks for at least 1024 bits
/// and recommends 2048, which still fits one DNS TXT record (in 255-byte
/// strings).
pub const RSA_BITS: usize = 2048;

/// Makes a new key for `algorithm`.
pub fn generate(algorithm: DkimAlgorithm) -> Result<GeneratedKey, String> {
    use mail_auth::dkim::generate::DkimKeyPair;
    match algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            let pair = DkimKeyPair::generate_ed25519().map_err(|e| e.to_string())?;
            Ok(GeneratedKey {
                pem: pem("PRIVATE KEY", pair.private_key()),
                txt: format!("v=DKIM1; k=ed25519; p={}", base64(pair.public_key())),
            })
        }
        DkimAlgorithm::RsaSha256 => {
            let pair = DkimKeyPair::generate_rsa(RSA_BITS).map_err(|e| e.to_string())?;
            // PKCS#1 from the library; PKCS#8 and SubjectPublicKeyInfo are
            // what OpenSSL, opendkim-genkey and every verifier expect.
            Ok(GeneratedKey {
                pem: pem("PRIVATE KEY", &der::rsa_pkcs8(pair.private_key())),
                txt: format!(
                    "v=DKIM1; k=rsa; p={}",
                    base64(&der::rsa_spki(pair.public_key()))
                ),
            })
        }
    }
}

/// The TXT record in zone-file form: the name, then the text split into
/// strings of at most 255 bytes (RFC 1035 §3.3.14; a 2048-bit key needs
/// two).
pub fn zone_record(selector: &str, domain: &str, txt: &str) -> String {
    let strings: Vec<String> = txt
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    )
}

/// Whether `path` exists (so that `keygen` never overwrites a key).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Just enough DER to wrap the RSA keys the library makes (PKCS#1) in the
/// structures everyone else reads: PKCS#8 `PrivateKeyInfo` (RFC 5208) and
/// `SubjectPublicKeyInfo` (RFC 5280).
mod der {
    /// `rsaEncryption` (1.2.840.113549.1.1.1) with its NULL parameters.
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .iter()
                .copied()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// `PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }`.
    pub fn rsa_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend_from_slice(RSA_ALGORITHM);
        body.extend(tlv(0x04, pkcs1));
        tlv(0x30, &body)
    }

    /// `SubjectPublicKeyInfo { rsaEncryption, BIT STRING pkcs1 }`.
    pub fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
        let mut bits = vec![0u8];
        bits.extend_from_slice(pkcs1);
        let mut body = RSA_ALGORITHM.to_vec();
        body.extend(tlv(0x03, &bits));
        tlv(0x30, &body)
    }

    #[cfg(test)]
    #[test]
    fn lengths_are_encoded_short_and_long() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}

#[cfg(test)]
mod tests;
