//! Unit tests: keys load (and refuse what does not fit), entries are
//! chosen by the `From:` domain, the field names what it signed, a
//! message is never signed twice by one entry, and the encodings (base64,
//! PEM, DER, the zone record) are right. That a signature verifies is
//! shown against an independent verifier, dkimpy, in
//! `tests/tests/dkim.rs`.

use std::path::Path;

use super::*;

fn entry(domain: &str, key: &Path, algorithm: DkimAlgorithm) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: "s1".into(),
        signing_domain: String::new(),
        key: key.to_path_buf(),
        algorithm,
        headers: skein_config::DEFAULT_SIGNED_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect(),
        canonicalization: (Canonicalization::Relaxed, Canonicalization::Relaxed),
    }
}

fn write_key(dir: &Path, name: &str, algorithm: DkimAlgorithm) -> (PathBuf, GeneratedKey) {
    let key = generate(algorithm).expect("generate");
    let path = dir.join(name);
    std::fs::write(&path, &key.pem).expect("write key");
    (path, key)
}

const MESSAGE: &[u8] = b"From: Joe <joe@Example.ORG>\r\nTo: ann@remote.test\r\nSubject: hello\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nbody line\r\n";

fn tags(field: &str) -> Vec<(String, String)> {
    let unfolded: String = field
        .trim_start_matches("DKIM-Signature:")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    unfolded
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn tag(field: &str, name: &str) -> String {
    tags(field)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name}= in {field}"))
}

#[test]
fn signs_with_the_entry_for_the_from_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed, _) = write_key(dir.path(), "ed.key", DkimAlgorithm::Ed25519Sha256);
    let (rsa, _) = write_key(dir.path(), "rsa.key", DkimAlgorithm::RsaSha256);
    let mut fallback = entry("*", &rsa, DkimAlgorithm::RsaSha256);
    fallback.selector = "any".into();
    let signer = Signer::load(&[
        entry("example.org", &ed, DkimAlgorithm::Ed25519Sha256),
        fallback,
    ])
    .expect("load");
    let signed = signer.sign(MESSAGE).expect("no error").expect("signed");
    assert_eq!(
        (signed.domain.as_str(), signed.selector.as_str()),
        ("example.org", "s1")
    );
    assert!(
        signed.field.starts_with("DKIM-Signature: "),
        "{}",
        signed.field
    );
    assert!(signed.field.ends_with("\r\n"));
    assert_eq!(tag(&signed.field, "a"), "ed25519-sha256");
    assert_eq!(tag(&signed.field, "d"), "example.org");
    assert_eq!(tag(&signed.field, "c"), "relaxed/relaxed");
    let h = tag(&signed.field, "h").to_ascii_lowercase();
    // The fields present are signed; the absent ones of the list are
    // named too, so that adding one later breaks the signature (RFC 6376
    // §8.15); fields not in the list are not.
    for present in ["from", "to", "subject", "date", "message-id", "cc"] {
        assert!(h.split(':').any(|x| x == present), "{present} in h={h}");
    }
    assert!(!h.split(':').any(|x| x == "received"), "h={h}");
    // Another domain: the "*" entry, RSA, d= its own From domain.
    let other = b"From: a@Other.Test\r\nSubject: x\r\n\r\nb\r\n";
    let signed = signer.sign(other).expect("ok").expect("signed");
    assert_eq!(tag(&signed.field, "a"), "rsa-sha256");
    assert_eq!(tag(&signed.field, "d"), "other.test");
    assert_eq!(tag(&signed.field, "s"), "any");
}

#[test]
fn what_is_not_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed, _) = write_key(dir.path(), "ed.key", DkimAlgorithm::Ed25519Sha256);
    let signer =
        Signer::load(&[entry("example.org", &ed, DkimAlgorithm::Ed25519Sha256)]).expect("load");
    let cases: [(&[u8], Unsigned); 4] = [
        (b"Subject: no from\r\n\r\nb\r\n", Unsigned::NoSingleFrom),
        (
            b"From: a@example.org, b@example.org\r\n\r\nb\r\n",
            Unsigned::NoSingleFrom,
        ),
        (
            b"From: a@elsewhere.test\r\n\r\nb\r\n",
            Unsigned::NoKey("elsewhere.test".into()),
        ),
        (
            b"From: a@sub.example.org\r\n\r\nb\r\n",
            Unsigned::NoKey("sub.example.org".into()),
        ),
    ];
    for (message, want) in cases {
        assert_eq!(
            signer.sign(message).expect("no error"),
            Err(want),
            "{}",
            String::from_utf8_lossy(message)
        );
    }
    // Signed once; the signed message is not signed again by that entry.
    let signed = signer.sign(MESSAGE).expect("ok").expect("signed");
    let mut again = signed.field.into_bytes();
    again.extend_from_slice(MESSAGE);
    assert_eq!(
        signer.sign(&again).expect("ok"),
        Err(Unsigned::AlreadySigned)
    );
}

#[test]
fn keys_that_do_not_load_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed, _) = write_key(dir.path(), "ed.key", DkimAlgorithm::Ed25519Sha256);
    let (rsa, _) = write_key(dir.path(), "rsa.key", DkimAlgorithm::RsaSha256);
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let missing = dir.path().join("missing.key");
    let cases = [
        (&ed, DkimAlgorithm::RsaSha256, "not a usable RSA key"),
        (
            &rsa,
            DkimAlgorithm::Ed25519Sha256,
            "not a usable Ed25519 key",
        ),
        (&garbage, DkimAlgorithm::RsaSha256, "not a PEM private key"),
        (&missing, DkimAlgorithm::RsaSha256, "cannot read"),
    ];
    for (path, algorithm, want) in cases {
        let good = entry("a.test", &ed, DkimAlgorithm::Ed25519Sha256);
        let err = Signer::load(&[good, entry("b.test", path, algorithm)]).expect_err("refused");
        assert_eq!(err.index, 1);
        assert_eq!(&err.path, path);
        assert!(err.detail.contains(want), "{want} in {err}");
        assert!(err.to_string().starts_with(&path.display().to_string()));
    }
}

#[test]
fn generated_keys_publish_their_public_half() {
    let ed = generate(DkimAlgorithm::Ed25519Sha256).expect("ed25519");
    assert!(ed.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(ed.txt.starts_with("v=DKIM1; k=ed25519; p="), "{}", ed.txt);
    // An Ed25519 public key is 32 bytes: 44 base64 characters.
    assert_eq!(ed.txt.len(), "v=DKIM1; k=ed25519; p=".len() + 44);
    let rsa = generate(DkimAlgorithm::RsaSha256).expect("rsa");
    assert!(
        rsa.txt
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
        "{}",
        rsa.txt
    );
    // The PKCS#8 wrapping parses back as a key.
    let der = PrivateKeyDer::from_pem_slice(rsa.pem.as_bytes()).expect("PEM");
    assert!(matches!(der, PrivateKeyDer::Pkcs8(_)));
    assert!(RsaKey::<Sha256>::from_key_der(der).is_ok());
    // Debug never shows the private key.
    assert!(!format!("{rsa:?}").contains("PRIVATE"));
}

#[test]
fn zone_records_split_long_text() {
    let txt = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
    let record = zone_record("s1", "example.org", &txt);
    assert!(record.starts_with("s1._domainkey.example.org. IN TXT ( \""));
    let strings: Vec<&str> = record
        .trim_end_matches(" )")
        .split('"')
        .filter(|s| !s.trim().is_empty() && !s.contains("IN TXT"))
        .collect();
    assert_eq!(strings.concat(), txt);
    assert!(strings.iter().all(|s| s.len() <= 255), "{strings:?}");
    assert_eq!(strings.len(), 2);
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want, "{input}");
    }
}

#[test]
fn from_domains() {
    let cases: [(&[u8], Option<&str>); 5] = [
        (
            b"From: \"J, Doe\" <j@Example.Org.>\r\n\r\n",
            Some("example.org"),
        ),
        (b"from: j@x.test\r\n\r\n", Some("x.test")),
        (b"From: undisclosed\r\n\r\n", None),
        (b"To: a@b.test\r\n\r\n", None),
        (b"", None),
    ];
    for (message, want) in cases {
        assert_eq!(
            from_domain(message).as_deref(),
            want,
            "{}",
            String::from_utf8_lossy(message)
        );
    }
}

#[test]
fn no_whitespace_is_left_between_the_signature_and_its_semicolon() {
    let cases = [
        (
            "DKIM-Signature: v=1; d=x; b=AAAA\r\n\tBBBB==\r\n\t;\r\n",
            "DKIM-Signature: v=1; d=x; b=AAAA\r\n\tBBBB==;\r\n",
        ),
        (
            "DKIM-Signature: v=1; d=x; b=AAAA==;\r\n",
            "DKIM-Signature: v=1; d=x; b=AAAA==;\r\n",
        ),
        (
            "DKIM-Signature: v=1; d=x; b=AAAA== ;\r\n",
            "DKIM-Signature: v=1; d=x; b=AAAA==;\r\n",
        ),
        // b= not last: left alone.
        (
            "DKIM-Signature: v=1; b=AAAA==; d=x;\r\n",
            "DKIM-Signature: v=1; b=AAAA==; d=x;\r\n",
        ),
    ];
    for (field, want) in cases {
        assert_eq!(tidy(field.to_owned()), want, "{field:?}");
    }
}
