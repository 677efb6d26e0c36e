//! `skein start`, `skein status` and `skein stop` end to end, with shell
//! scripts standing in for the services: `skein start` looks for its
//! services next to its own executable first, so a copy of `skein` in a
//! temporary directory runs whatever that directory holds under the
//! services' names.
//!
//! Shows: the services get `-c FILE`; a service that crashes is restarted
//! (after its back-off) and the crash is logged with its exit status; a
//! second `skein start` is refused while one runs; `skein status` sees the
//! supervisor; `skein stop` makes every service receive SIGTERM and the
//! supervisor exit 0; a second `skein stop` finds nothing to stop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls until `done`, with a generous deadline so that a slow machine
/// passes and a broken supervisor fails instead of hanging.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A temporary directory with `bin/skein`, a copy of skein, beside which
/// the tests put their stand-in services.
fn skein_in_its_own_directory() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("mkdir");
    let skein = bin.join("skein");
    fs::copy(env!("CARGO_BIN_EXE_skein"), &skein).expect("copy skein");
    (dir, bin, skein)
}

/// The account these tests run skein as when they run as root: skein
/// started as root runs its services as the `skein` account, which is
/// `tests/tests/privileges.rs`'s business; here skein runs as an ordinary
/// user, as in the quick start.
const TEST_USER: &str = "nobody";

/// A command for `program`, run as [`TEST_USER`] when the tests are root.
fn command(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name(TEST_USER)
            .expect("user database")
            .expect("the tests need the account nobody");
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    command
}

/// Gives `dir` and everything in it to [`TEST_USER`] when the tests are
/// root, so that skein run by [`command`] may use it.
fn give_to_test_user(dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let user = nix::unistd::User::from_name(TEST_USER)
        .expect("user database")
        .expect("the tests need the account nobody");
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).expect("chown");
        if path.is_dir() {
            todo.extend(
                fs::read_dir(&path)
                    .expect("list")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
}

/// `skein -c CONFIG start`, logging (logfmt) to `log`.
fn skein_start(skein: &Path, config: &Path, log: &Path) -> std::process::Child {
    let dir = skein
        .parent()
        .and_then(Path::parent)
        .expect("skein is in <dir>/bin");
    let log = fs::File::create(log).expect("log file");
    give_to_test_user(dir);
    command(skein)
        .arg("-c")
        .arg(config)
        .arg("start")
        .env("SKEIN_LOG_FORMAT", "logfmt")
        .env_remove("SKEIN_CONFIG")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn skein start")
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A service that appends "<pid> <args>" to `<name>.starts`, exits 7 on
/// its first start when `crash_first` is set, and otherwise runs until
/// SIGTERM, which it records in `<name>.log`.
fn service(dir: &Path, name: &str, crash_first: bool) -> PathBuf {
    let starts = dir.join(format!("{name}.starts"));
    let log = dir.join(format!("{name}.log"));
    let crash = if crash_first {
        format!(
            "if [ \"$(wc -l < '{}')\" -eq 1 ]; then exit 7; fi\n",
            starts.display()
        )
    } else {
        String::new()
    };
    write_script(
        &dir.join(name),
        &format!(
            "trap 'echo term >> \"{log}\"; exit 0' TERM\necho \"$$ $*\" >> '{starts}'\n{crash}while :; do sleep 0.05; done\n",
            starts = starts.display(),
            log = log.display(),
        ),
    );
    starts
}

#[test]
fn start_restarts_a_crashed_service_and_stop_stops_everything() {
    let (dir, bin, skein) = skein_in_its_own_directory();
    let router_starts = service(&bin, "skein-router", true);
    let scheduler_starts = service(&bin, "skein-scheduler", false);
    let smtpd_starts = service(&bin, "skein-smtpd", false);
    let config = dir.path().join("skein.toml");
    fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .expect("write config");
    let mut start = skein_start(&skein, &config, &dir.path().join("start.log"));

    // The router crashes once and is started again after its back-off.
    wait_until("the router's second start", || {
        lines(&router_starts).len() >= 2
    });
    wait_until("the scheduler's start", || {
        !lines(&scheduler_starts).is_empty()
    });
    wait_until("the smtpd's start", || !lines(&smtpd_starts).is_empty());
    let want_args = format!("-c {}", config.display());
    for line in lines(&router_starts)
        .iter()
        .chain(lines(&scheduler_starts).iter())
        .chain(lines(&smtpd_starts).iter())
    {
        assert!(line.ends_with(&want_args), "{line:?}");
    }
    let log = fs::read_to_string(dir.path().join("start.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("exited unexpectedly") && l.contains("exit status 7")),
        "{log}"
    );

    // A second supervisor on the same spool is refused.
    let second = command(&skein)
        .arg("-c")
        .arg(&config)
        .arg("start")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("second start");
    assert_eq!(second.status.code(), Some(1));

    let skein_cmd = |args: &[&str]| {
        command(&skein)
            .arg("-c")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run skein")
    };
    let status = skein_cmd(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{out}");
    assert!(
        out.starts_with(&format!("supervisor: running (pid {})\n", start.id())),
        "{out}"
    );

    let stop = skein_cmd(&["stop"]);
    assert_eq!(
        String::from_utf8_lossy(&stop.stdout),
        format!("skein: stopped (pid {})\n", start.id())
    );
    assert_eq!(stop.status.code(), Some(0));
    let exit = start.wait().expect("wait for skein start");
    assert_eq!(exit.code(), Some(0));
    assert_eq!(lines(&bin.join("skein-router.log")), ["term"]);
    assert_eq!(lines(&bin.join("skein-scheduler.log")), ["term"]);

    let again = skein_cmd(&["stop"]);
    assert_eq!(again.status.code(), Some(69));
}

/// A service whose first three starts exit at once (a crash loop), whose
/// fourth runs three seconds and then dies (a crash after a good run), and
/// whose later starts run until SIGTERM.
fn crash_looping_service(dir: &Path, name: &str) -> PathBuf {
    let starts = dir.join(format!("{name}.starts"));
    write_script(
        &dir.join(name),
        &format!(
            "trap 'exit 0' TERM\necho \"$$\" >> '{starts}'\nn=$(wc -l < '{starts}')\n\
             if [ \"$n\" -le 3 ]; then exit 9; fi\n\
             if [ \"$n\" -eq 4 ]; then sleep 3; kill -9 $$; fi\n\
             while :; do sleep 0.05; done\n",
            starts = starts.display(),
        ),
    );
    starts
}

#[test]
fn a_crash_loop_backs_off_and_a_service_that_ran_well_comes_back_at_once() {
    let (dir, bin, skein) = skein_in_its_own_directory();
    let router_starts = crash_looping_service(&bin, "skein-router");
    service(&bin, "skein-scheduler", false);
    service(&bin, "skein-smtpd", false);
    let config = dir.path().join("skein.toml");
    fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\n\n[supervisor]\nrestart_delay = \"1s\"\nrestart_delay_max = \"2s\"\nhealthy_after = \"2s\"\n",
            dir.path().join("spool").display()
        ),
    )
    .expect("write config");
    let log_path = dir.path().join("start.log");
    let mut start = skein_start(&skein, &config, &log_path);

    wait_until("the router's fifth start", || {
        lines(&router_starts).len() >= 5
    });
    let stop = Command::new(&skein)
        .arg("-c")
        .arg(&config)
        .arg("stop")
        .output()
        .expect("skein stop");
    assert_eq!(stop.status.code(), Some(0));
    assert_eq!(start.wait().expect("wait").code(), Some(0));

    let log = fs::read_to_string(&log_path).expect("log");
    let restarts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("skein-router") && l.contains("restarting"))
        .collect();
    assert_eq!(restarts.len(), 4, "{log}");
    // Three quick exits: a crash loop, waiting 1 s, 2 s, then the 2 s cap,
    // each line saying so.
    for (i, (line, delay)) in restarts[..3].iter().zip([1000, 2000, 2000]).enumerate() {
        assert!(line.contains("restarting after back-off"), "{line}");
        assert!(line.contains(&format!("delay_ms={delay}")), "{line}");
        assert!(
            line.contains(&format!(
                "crash loop: exit {} in a row within supervisor.healthy_after (2s)",
                i + 1
            )),
            "{line}"
        );
    }
    // Then a run of three seconds, killed: back at once, saying why.
    assert!(
        restarts[3].contains("restarting at once"),
        "{}",
        restarts[3]
    );
    assert!(
        restarts[3].contains("at least supervisor.healthy_after (2s)"),
        "{}",
        restarts[3]
    );
    assert!(
        log.lines().any(
            |l| l.contains("exited unexpectedly") && l.contains("killed by signal 9 (SIGKILL)")
        ),
        "{log}"
    );
}
