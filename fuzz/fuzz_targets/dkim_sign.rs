//! Fuzz target: arbitrary bytes as a message the router signs. Finding
//! the `From:` domain, recognising a signature already there and signing
//! must never panic; what is signed gets a field that starts with
//! `DKIM-Signature:`, ends in CRLF, and is recognised as ours afterwards
//! (a second signing of the signed message signs nothing).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skein_config::{Canonicalization, DkimAlgorithm, DkimKey};
use skein_dkim::{Signer, Unsigned};

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let key = skein_dkim::generate(DkimAlgorithm::Ed25519Sha256).expect("key");
        let path = std::env::temp_dir().join(format!("skein-fuzz-{}.key", std::process::id()));
        std::fs::write(&path, key.pem).expect("write key");
        let signer = Signer::load(&[DkimKey {
            domain: "*".into(),
            selector: "fuzz".into(),
            signing_domain: String::new(),
            key: path.clone(),
            algorithm: DkimAlgorithm::Ed25519Sha256,
            headers: vec!["From".into(), "Subject".into()],
            canonicalization: (Canonicalization::Relaxed, Canonicalization::Relaxed),
        }])
        .expect("load");
        let _ = std::fs::remove_file(path);
        signer
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = skein_dkim::from_domain(data);
    if let Ok(Ok(signed)) = signer().sign(data) {
        assert!(signed.field.starts_with("DKIM-Signature: "));
        assert!(signed.field.ends_with("\r\n"));
        // (A message that starts with a continuation line would continue
        // the signature's field: it is malformed, and not checked here.)
        if !data.starts_with(b" ") && !data.starts_with(b"\t") {
            let mut again = signed.field.into_bytes();
            again.extend_from_slice(data);
            assert_eq!(signer().sign(&again), Ok(Err(Unsigned::AlreadySigned)));
        }
    }
});
