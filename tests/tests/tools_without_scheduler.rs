//! Every queue command, `skein status` and `skein stop` run against a
//! spool where nothing runs: one clear line naming the socket (or pid
//! file), exit 69 (EX_UNAVAILABLE), nothing on stdout that a script could
//! mistake for a listing, and the spool left alone. A malformed queue id
//! or thread is refused before any connection, with exit 64 (EX_USAGE).

use std::process::{Command, Output, Stdio};

use skein_integration_tests::{TestEnv, bin};
use skein_spool::{Daemon, rendezvous};

const ID: &str = "0ABCDEFGHJK0000100A";

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run skein")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every queue command line, with and without `--json`.
fn queue_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["mailq"],
        vec!["mailq", "--json"],
        vec!["mailq", "--threads"],
        vec!["mailq", "-Q", "--json"],
        vec!["queue", "show", ID],
        vec!["queue", "show", ID, "--json"],
        vec!["queue", "hold", ID],
        vec!["queue", "release", ID],
        vec!["queue", "delete", ID],
        vec!["queue", "requeue", ID],
        vec!["queue", "flush"],
        vec!["queue", "flush", ID],
        vec!["queue", "flush", "--thread", "smtp/example.org"],
    ]
}

fn assert_not_running(env: &TestEnv, prog: &str, args: &[&str], out: &Output) {
    let socket = rendezvous::scheduler_socket(&env.spool());
    assert_eq!(
        text(&out.stderr),
        format!(
            "{prog}: the scheduler is not running ({})\n",
            socket.display()
        ),
        "{args:?}"
    );
    assert_eq!(out.status.code(), Some(69), "{args:?}");
}

#[test]
fn queue_commands_say_the_scheduler_is_not_running() {
    let env = TestEnv::new("");
    for args in queue_commands() {
        let mut cmd = env.skein();
        cmd.args(&args);
        let out = run(cmd);
        assert_not_running(&env, "skein", &args, &out);
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
    // The tools only ask: they create no spool of their own.
    assert!(!env.spool().exists(), "a client created the spool");

    // Also through -c instead of SKEIN_CONFIG.
    let mut cmd = Command::new(bin("skein"));
    cmd.arg("-c").arg(&env.config).arg("mailq");
    assert_not_running(&env, "skein", &["-c", "mailq"], &run(cmd));
}

#[test]
fn a_stale_socket_file_is_not_a_running_scheduler() {
    let env = TestEnv::new("");
    std::fs::create_dir_all(rendezvous::run_dir(&env.spool())).expect("mkdir");
    // What a scheduler killed with -9 leaves behind: a socket file that
    // nobody listens on any more.
    let socket = rendezvous::scheduler_socket(&env.spool());
    drop(std::os::unix::net::UnixListener::bind(socket).expect("bind"));
    for args in queue_commands() {
        let mut cmd = env.skein();
        cmd.args(&args);
        assert_not_running(&env, "skein", &args, &run(cmd));
    }
}

#[test]
fn mailq_by_its_own_name() {
    let env = TestEnv::new("");
    let link = env.dir.path().join("mailq");
    std::os::unix::fs::symlink(bin("skein"), &link).expect("symlink");
    for args in [vec![], vec!["-Q"], vec!["--json"]] {
        let mut cmd = Command::new(&link);
        cmd.args(&args).env("SKEIN_CONFIG", &env.config);
        let out = run(cmd);
        assert_not_running(&env, "mailq", &args, &out);
        assert_eq!(text(&out.stdout), "");
    }
}

#[test]
fn status_and_stop_with_nothing_running() {
    let env = TestEnv::new("");
    let socket = rendezvous::scheduler_socket(&env.spool());

    let mut cmd = env.skein();
    cmd.arg("status");
    let out = run(cmd);
    assert_not_running(&env, "skein", &["status"], &out);
    assert_eq!(
        text(&out.stdout),
        format!(
            "supervisor: not running\nscheduler: the scheduler is not running ({})\n",
            socket.display()
        )
    );

    let mut cmd = env.skein();
    cmd.args(["status", "--json"]);
    let out = run(cmd);
    assert_not_running(&env, "skein", &["status", "--json"], &out);
    let json = text(&out.stdout);
    assert!(json.contains("\"supervisor_pid\": null"), "{json}");
    assert!(json.contains("\"scheduler\": null"), "{json}");

    let mut cmd = env.skein();
    cmd.arg("stop");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(
        text(&out.stderr),
        format!(
            "skein: skein is not running (no live process holds {})\n",
            rendezvous::pid_file(&env.spool(), Daemon::Supervisor).display()
        )
    );
}

#[test]
fn malformed_ids_and_threads_are_refused_locally() {
    let env = TestEnv::new("");
    let table: &[(&[&str], &str)] = &[
        (
            &["queue", "show", "bogus"],
            "skein: invalid queue id \"bogus\": ",
        ),
        (
            &["queue", "show", "bogus", "--json"],
            "skein: invalid queue id \"bogus\": ",
        ),
        (
            &["queue", "hold", "0ABCDEFGHJK0000100I"],
            "skein: invalid queue id ",
        ),
        (&["queue", "release", ""], "skein: invalid queue id \"\": "),
        (
            &["queue", "delete", "0ABCDEFGHJK0000100A0"],
            "skein: invalid queue id ",
        ),
        (
            &["queue", "requeue", "../../etc/passwd"],
            "skein: invalid queue id ",
        ),
        (
            &["queue", "flush", "nope"],
            "skein: invalid queue id \"nope\": ",
        ),
        (
            &["queue", "flush", "--thread", "smtp"],
            "skein: invalid thread \"smtp\": ",
        ),
        (
            &["queue", "flush", ID, "--thread", "smtp/x"],
            "cannot be used with",
        ),
        (&["queue", "hold"], "needs queue ids"),
        (&["mailq", "--bogus"], "unexpected argument"),
    ];
    for (args, needle) in table {
        let mut cmd = env.skein();
        cmd.args(*args);
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
}
