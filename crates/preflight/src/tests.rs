//! Each file check, on real files, with the error at the key's line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use skein_config::Config;

use super::*;

const ALICE: &str = "alice:$argon2id$v=19$m=19456,t=2,p=1$c2tlaW50ZXN0c2FsdA$77ZdsPAZDWO3u43UcM/8Ht5yMkbFtrndFzoqolotwUg";

fn load(dir: &Path, text: &str) -> Loaded {
    let path = dir.join("skein.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load_with(Some(&path), None, dir).expect("the configuration parses")
}

fn pem_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).expect("rcgen");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (cert_path, key_path)
}

#[test]
fn good_files_load_and_are_handed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    pem_pair(dir.path());
    std::fs::write(dir.path().join("passwd"), format!("{ALICE}\n")).expect("passwd");
    std::fs::set_permissions(
        dir.path().join("passwd"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::fs::write(dir.path().join("aliases"), "postmaster: root\nroot: ann\n").expect("aliases");
    let loaded = load(
        dir.path(),
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
         [smtpd]\npassword_file = \"passwd\"\n\
         [router]\naliases = \"aliases\"\n",
    );
    let checked = check(&loaded, Reader::All).expect("all good");
    assert!(checked.tls.is_some());
    assert!(
        checked
            .passwords
            .expect("passwords")
            .verify("alice", b"s3cret pass")
    );
    assert_eq!(checked.aliases, Some(2));
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    // The router reads only the aliases; the smtpd only its files (the
    // aliases too with verify_local_recipients, the default).
    let router = check(&loaded, Reader::Router).expect("router");
    assert!(router.tls.is_none() && router.passwords.is_none());
    assert_eq!(router.aliases, Some(2));
}

#[test]
fn a_missing_or_broken_file_is_an_error_at_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = pem_pair(dir.path());
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).expect("rcgen");
    std::fs::write(
        dir.path().join("other-key.pem"),
        other.signing_key.serialize_pem(),
    )
    .expect("other key");
    std::fs::write(dir.path().join("bad-passwd"), "alice:plaintext\n").expect("passwd");
    std::fs::write(dir.path().join("bad-aliases"), "postmaster root\n").expect("aliases");
    let cases: Vec<(String, Reader, &str, &str)> = vec![
        (
            "[router]\naliases = \"no-such-aliases\"\n".into(),
            Reader::Router,
            "router.aliases",
            "cannot read",
        ),
        (
            "[router]\naliases = \"bad-aliases\"\n".into(),
            Reader::All,
            "router.aliases",
            "bad-aliases:1:",
        ),
        (
            format!("[tls]\ncert = \"no-cert.pem\"\nkey = {key:?}\n"),
            Reader::Smtpd,
            "tls.cert",
            "no-cert.pem",
        ),
        (
            format!("[tls]\ncert = {cert:?}\n\nkey = \"no-key.pem\"\n"),
            Reader::All,
            "tls.key",
            "no-key.pem",
        ),
        (
            format!("[tls]\ncert = {cert:?}\nkey = \"other-key.pem\"\n"),
            Reader::All,
            "tls.key",
            "does not go with",
        ),
        (
            "[smtpd]\n\npassword_file = \"no-passwd\"\n".into(),
            Reader::Smtpd,
            "smtpd.password_file",
            "cannot read",
        ),
        (
            "[smtpd]\npassword_file = \"bad-passwd\"\n".into(),
            Reader::All,
            "smtpd.password_file",
            "line 1: not an argon2 PHC hash",
        ),
    ];
    for (text, reader, key, needle) in cases {
        let loaded = load(dir.path(), &text);
        let err = check(&loaded, reader).expect_err(&text);
        let line = text
            .lines()
            .position(|l| l.starts_with(key.rsplit('.').next().expect("name")))
            .expect("the key's line")
            + 1;
        assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        assert_eq!(err.line, Some(line), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}: {key}: ", loaded.shown)),
            "{err}"
        );
    }
    // What a reader does not read is not its failure.
    let loaded = load(
        dir.path(),
        "[router]\naliases = \"no-such-aliases\"\n[smtpd]\nverify_local_recipients = false\n",
    );
    check(&loaded, Reader::Smtpd).expect("the smtpd does not read the aliases then");
}

#[test]
fn secrets_readable_by_all_and_trusted_files_writable_by_all_are_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = pem_pair(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("{ALICE}\n")).expect("passwd");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    let aliases = dir.path().join("aliases");
    std::fs::write(&aliases, "root: ann\n").expect("aliases");
    std::fs::set_permissions(&aliases, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let loaded = load(
        dir.path(),
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[smtpd]\npassword_file = \"passwd\"\n[router]\naliases = \"aliases\"\n",
    );
    let checked = check(&loaded, Reader::All).expect("warnings are not errors");
    let warnings = checked.warnings.join("\n");
    assert_eq!(checked.warnings.len(), 3, "{warnings}");
    assert!(
        warnings.contains(":3: tls.key: ")
            && warnings.contains("readable by every user (mode 0644)"),
        "{warnings}"
    );
    assert!(
        warnings.contains(":5: smtpd.password_file: ") && warnings.contains("mode 0604"),
        "{warnings}"
    );
    assert!(
        warnings.contains(":7: router.aliases: ")
            && warnings.contains("writable by every user (mode 0666)"),
        "{warnings}"
    );
}

#[test]
fn a_reload_runs_the_start_checks_and_keeps_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let start = format!(
        "[spool]\ndir = \"{}\"\n[smtpd]\nmax_recipients = 10\n",
        spool.display()
    );
    let current = load(dir.path(), &start);
    let path = dir.path().join("skein.toml");

    // A good change is applied; a spool move is not, and is named.
    let moved = format!(
        "user = \"other\"\n[spool]\ndir = \"{}/elsewhere\"\n[smtpd]\nmax_recipients = 3\n",
        dir.path().display()
    );
    std::fs::write(&path, moved).expect("write");
    let reloaded = reload(&current, Reader::Smtpd).expect("reload passes");
    // The Maildir root's default follows the spool's directory.
    assert_eq!(
        reloaded.applied,
        vec![
            "smtpd.max_recipients".to_owned(),
            "local.maildir_root".to_owned()
        ]
    );
    assert_eq!(
        reloaded.need_restart,
        vec!["user".to_owned(), "spool.dir".to_owned()]
    );
    assert_eq!(reloaded.loaded.config.smtpd.max_recipients, 3);
    assert_eq!(
        reloaded.loaded.config.spool.dir, spool,
        "the old spool stays"
    );
    assert_eq!(reloaded.loaded.config.user, current.config.user);

    // A file the start would refuse is refused, at its key's line.
    let broken = format!(
        "[spool]\ndir = \"{}\"\n[tls]\ncert = \"{}/none.pem\"\nkey = \"{}/none.key\"\n",
        spool.display(),
        dir.path().display(),
        dir.path().display()
    );
    std::fs::write(&path, broken).expect("write");
    let err = reload(&current, Reader::Smtpd).expect_err("a missing certificate is refused");
    assert_eq!(err.key.as_deref(), Some("tls.cert"), "{err}");
    assert_eq!(err.line, Some(4), "{err}");
    // The router does not read the certificate: the same file passes.
    assert!(reload(&current, Reader::Router).is_ok());

    std::fs::write(&path, "[smtpd\n").expect("write");
    let err = reload(&current, Reader::Scheduler).expect_err("syntax is refused");
    assert_eq!(err.line, Some(1), "{err}");
}
