//! `skein config check` tells the truth (issue 12, part 1): it fails on
//! exactly what would stop a daemon's start — a file that a key names and
//! that cannot be read, submission without TLS — with file, line and key;
//! a broken table header is reported at its own table; a duration without
//! a unit is an error. The daemons refuse the same things with EX_CONFIG
//! (78), and `skein start` exits 78 with the error instead of restarting a
//! service for ever.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use skein_integration_tests::{TestEnv, bin, poll};

const EX_CONFIG: i32 = 78;

fn check(env: &TestEnv) -> Output {
    env.skein()
        .args(["config", "check"])
        .output()
        .expect("skein config check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The 1-based line of the configuration on which `needle` starts.
fn line_of(config: &Path, needle: &str) -> usize {
    std::fs::read_to_string(config)
        .expect("config")
        .lines()
        .position(|l| l.starts_with(needle))
        .expect("needle in the configuration")
        + 1
}

#[test]
fn config_check_refuses_files_the_daemons_would_refuse_at_their_key() {
    let cases = [
        (
            "[router]\naliases = \"no-such-aliases\"\n",
            "aliases =",
            "router.aliases",
            "cannot read",
        ),
        (
            "[tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"\n",
            "cert =",
            "tls.cert",
            "missing-cert.pem",
        ),
        (
            "[smtpd]\nlisten = [\"127.0.0.1:0\"]\nsubmission = [\"127.0.0.1:1\"]\n",
            "submission =",
            "smtpd.submission",
            "needs [tls] cert and key",
        ),
        (
            "[smtpd]\npassword_file = \"no-such-passwd\"\n",
            "password_file =",
            "smtpd.password_file",
            "cannot read",
        ),
        (
            "[scheduler]\nexpiry = 5\n",
            "expiry =",
            "scheduler.expiry",
            "a duration needs a unit",
        ),
        ("[smtpd\nlisten = []\n", "[smtpd", "smtpd", "unclosed table"),
    ];
    for (extra, at, key, needle) in cases {
        let env = TestEnv::new(extra);
        let out = check(&env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{extra}: {err}");
        let line = line_of(&env.config, at);
        let prefix = format!("skein: {}:{line}: {key}: ", env.config.display());
        assert!(
            err.starts_with(&prefix),
            "{extra}: want {prefix:?}, got {err}"
        );
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(
            out.stdout.is_empty(),
            "no effective settings printed for a refused file"
        );
    }
}

#[test]
fn config_check_warns_about_a_key_readable_by_every_user() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let cert = rcgen::generate_simple_self_signed(vec!["test.example".to_owned()]).expect("rcgen");
    std::fs::write(env.dir.path().join("cert.pem"), cert.cert.pem()).expect("cert");
    let key = env.dir.path().join("key.pem");
    std::fs::write(&key, cert.signing_key.serialize_pem()).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = check(&env);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning is not a failure: {err}"
    );
    assert!(
        err.contains("warning:")
            && err.contains("tls.key")
            && err.contains("readable by every user"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = check(&env);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn a_daemon_refusing_its_files_exits_ex_config() {
    let env = TestEnv::new(
        "[smtpd]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncert = \"gone.pem\"\nkey = \"gone-key.pem\"\n",
    );
    let out = Command::new(bin("skein-smtpd"))
        .arg("-c")
        .arg(&env.config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("skein-smtpd");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    let line = line_of(&env.config, "cert =");
    assert!(
        err.contains(&format!("{}:{line}: tls.cert: ", env.config.display())),
        "{err}"
    );
    let env = TestEnv::new("[router]\naliases = \"gone-aliases\"\n");
    let out = Command::new(bin("skein-router"))
        .arg("-c")
        .arg(&env.config)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("skein-router");
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("router.aliases: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn skein_start_stops_with_the_error_instead_of_restarting_for_ever() {
    let env = TestEnv::new(
        "[smtpd]\nlisten = [\"127.0.0.1:0\"]\n\n[tls]\ncert = \"gone.pem\"\nkey = \"gone-key.pem\"\n",
    );
    let log = env.dir.path().join("start.log");
    let mut child = env
        .skein()
        .arg("start")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("skein start");
    let mut status = None;
    let exited = poll(|| {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        exited,
        "skein start kept running on a configuration its smtpd refuses:\n{text}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(EX_CONFIG), "{text}");
    let line = line_of(&env.config, "cert =");
    assert!(
        text.contains(&format!("{}:{line}: tls.cert: ", env.config.display())),
        "{text}"
    );
    assert!(!text.contains("restarting"), "{text}");
}

#[test]
fn config_get_prints_one_setting_and_non_default_only_what_differs() {
    let env = TestEnv::new(
        "[smtpd]\nmax_errors = 7\n\n[[route]]\ndomain = \"example.net\"\nchannel = \"smtp\"\n",
    );
    let out = env
        .skein()
        .args(["config", "get", "smtpd.max_errors", "smtpd.max_recipients"])
        .output()
        .expect("config get");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "smtpd.max_errors = 7\nsmtpd.max_recipients = 1000\n"
    );
    // A table gives every key in it.
    let out = env
        .skein()
        .args(["config", "get", "route[0]"])
        .output()
        .expect("config get");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("route[0].domain = \"example.net\"\nroute[0].channel = \"smtp\"\n"),
        "{text}"
    );
    // An unknown key: a usage error that names it; the known ones still print.
    let out = env
        .skein()
        .args(["config", "get", "smtpd.max_erors", "smtpd.max_errors"])
        .output()
        .expect("config get");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("smtpd.max_erors: no such setting"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "smtpd.max_errors = 7\n"
    );

    let out = env
        .skein()
        .args(["config", "check", "--non-default"])
        .output()
        .expect("config check --non-default");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(" = ").next())
        .collect();
    for set in [
        "hostname",
        "spool.dir",
        "local.maildir_root",
        "smtpd.max_errors",
        "route[0].domain",
    ] {
        assert!(keys.contains(&set), "{set} in {keys:?}");
    }
    assert!(
        !keys.contains(&"smtpd.max_recipients"),
        "a default is left out: {keys:?}"
    );
    assert!(!keys.contains(&"scheduler.expiry"), "{keys:?}");
}
