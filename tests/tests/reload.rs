//! Reload without a restart (issue 12, part 2): `skein reload` and SIGHUP
//! make each daemon re-read the configuration and apply what changed —
//! smtpd limits and listeners for new sessions while an open session goes
//! on under the settings it started with; router routes; the settings of
//! agents the scheduler starts after it — and a file that fails the
//! checks is refused, by `skein reload` (nothing signalled, exit 78) and
//! by a daemon signalled directly (the old configuration stays, the log
//! says why, naming file, line and key).

mod smtpd_support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions};
use skein_integration_tests::{Daemon, TestEnv};
use smtpd_support::{Client, GUARD, Smtpd, free_port};

fn sighup(daemon: &Daemon) {
    kill(Pid::from_raw(daemon.child.id() as i32), Signal::SIGHUP).expect("SIGHUP");
}

/// `skein reload`: exit status and everything it printed.
fn skein_reload(env: &TestEnv) -> (i32, String) {
    let out = env.skein().arg("reload").output().expect("skein reload");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The configuration file with `old` replaced by `new` (which must be
/// there: a test that edits nothing proves nothing).
fn edit(env: &TestEnv, old: &str, new: &str) {
    let text = std::fs::read_to_string(&env.config).expect("read config");
    assert!(text.contains(old), "{old:?} not in\n{text}");
    std::fs::write(&env.config, text.replacen(old, new, 1)).expect("write config");
}

/// Sends RCPT TO for each of `rcpts` on a session past MAIL FROM and
/// returns the codes.
fn rcpt_codes(client: &mut Client, rcpts: &[&str]) -> Vec<u16> {
    rcpts
        .iter()
        .map(|r| {
            client.send(format!("RCPT TO:<{r}>\r\n").as_bytes());
            client.reply().expect("a reply to RCPT").code
        })
        .collect()
}

fn mail_from(client: &mut Client) {
    client.send(b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\n");
    client.expect(250, "");
    client.expect(250, "2.1.0");
}

#[test]
fn smtpd_applies_limits_and_listeners_to_new_sessions_and_keeps_open_ones() {
    let smtpd = Smtpd::start("max_recipients = 2", "");
    let env = &smtpd.env;
    // A session open across the reload, mid-transaction.
    let mut open = smtpd.client();
    mail_from(&mut open);
    assert_eq!(rcpt_codes(&mut open, &["joe@localhost"]), [250]);

    let second_port = free_port();
    edit(
        env,
        &format!("listen = [\"127.0.0.1:{}\"]", smtpd.port),
        &format!(
            "listen = [\"127.0.0.1:{}\", \"127.0.0.1:{second_port}\"]",
            smtpd.port
        ),
    );
    edit(env, "max_recipients = 2", "max_recipients = 1");
    let (code, out) = skein_reload(env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reload requested of skein-smtpd"), "{out}");
    // Only the smtpd runs in this test: the others are named as not running.
    for program in ["skein-router", "skein-scheduler"] {
        assert!(
            out.contains(&format!("{program} is not running here")),
            "{out}"
        );
    }
    assert!(
        smtpd.daemon.wait_for_log("msg=reloaded", 1),
        "{}",
        smtpd.daemon.log_text()
    );
    let log = smtpd.daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("msg=reloaded"))
        .expect("the reloaded line");
    assert!(line.contains("smtpd.listen"), "{line}");
    assert!(line.contains("smtpd.max_recipients"), "{line}");

    // The open session keeps its limit of 2 and completes its message.
    assert_eq!(rcpt_codes(&mut open, &["ann@localhost"]), [250]);
    open.send(b"DATA\r\n");
    open.expect(354, "");
    open.send(b"Subject: across a reload\r\n\r\nkept\r\n.\r\n");
    open.expect(250, "2.0.0");
    assert_eq!(smtpd.incoming().len(), 1);

    // A new session gets the new limit, on the old port and on the new.
    let mut fresh = smtpd.client();
    mail_from(&mut fresh);
    assert_eq!(
        rcpt_codes(&mut fresh, &["joe@localhost", "ann@localhost"]),
        [250, 452]
    );
    assert!(
        env.wait_for(GUARD, || skein_integration_tests::listening(second_port)),
        "{}",
        smtpd.daemon.log_text()
    );
    let mut other = Client::connect(second_port);
    other.expect(220, "");
    mail_from(&mut other);
    assert_eq!(
        rcpt_codes(&mut other, &["joe@localhost", "ann@localhost"]),
        [250, 452]
    );

    // A broken file: `skein reload` refuses it and signals nothing.
    edit(env, "max_recipients = 1", "max_recipients = \"many\"");
    let (code, out) = skein_reload(env);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("smtpd.max_recipients"), "{out}");
    assert!(out.contains("reload not requested"), "{out}");
    // Signalled directly, the daemon refuses it too and says why.
    sighup(&smtpd.daemon);
    assert!(
        smtpd.daemon.wait_for_log("msg=\"reload refused", 1),
        "{}",
        smtpd.daemon.log_text()
    );
    let log = smtpd.daemon.log_text();
    let refused = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .expect("the refusal");
    assert!(refused.contains("skein.toml:"), "file and line: {refused}");
    assert!(refused.contains("smtpd.max_recipients"), "key: {refused}");
    assert_eq!(smtpd.daemon.logged("msg=reloaded"), 1);
    // The configuration in force stays: both listeners, limit 1.
    let mut after = Client::connect(second_port);
    after.expect(220, "");
    mail_from(&mut after);
    assert_eq!(
        rcpt_codes(&mut after, &["joe@localhost", "ann@localhost"]),
        [250, 452]
    );

    // A file the start would refuse (a certificate that is not there),
    // sent straight to the daemon: refused at its key, nothing changes.
    edit(
        env,
        "max_recipients = \"many\"",
        "max_recipients = 1\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"",
    );
    sighup(&smtpd.daemon);
    assert!(
        smtpd.daemon.wait_for_log("msg=\"reload refused", 2),
        "{}",
        smtpd.daemon.log_text()
    );
    assert!(smtpd.daemon.log_text().contains("tls.cert"));
    assert_eq!(smtpd.daemon.logged("msg=reloaded"), 1);
    let mut last = smtpd.client();
    last.send(b"EHLO c.example\r\n");
    let ehlo = last.expect(250, "");
    assert!(
        !ehlo.contains("STARTTLS"),
        "no TLS was put in force: {ehlo}"
    );
    // The removed listener goes away on a good reload.
    edit(
        env,
        "max_recipients = 1\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"",
        "max_recipients = 1",
    );
    edit(env, &format!(", \"127.0.0.1:{second_port}\""), "");
    sighup(&smtpd.daemon);
    assert!(
        smtpd.daemon.wait_for_log("msg=reloaded", 2),
        "{}",
        smtpd.daemon.log_text()
    );
    assert!(
        env.wait_for(GUARD, || !skein_integration_tests::listening(second_port)),
        "{}",
        smtpd.daemon.log_text()
    );
    assert!(smtpd.daemon.log_text().contains("no longer listening"));
    smtpd.assert_serving();
}

#[test]
fn router_routes_and_new_agents_follow_a_reload_and_a_refused_file_changes_nothing() {
    let first = ScriptedServer::start(ServerOptions::default());
    let second = ScriptedServer::start(ServerOptions::default());
    let env = TestEnv::new(&format!(
        "[smtp]\nmax_recipients_per_transaction = 100\n\n\
         [[route]]\ndomain = \"remote.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n",
        first.nexthop()
    ));
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    let three = ["a@remote.test", "b@remote.test", "c@remote.test"];
    let mut args = vec!["-f", "s@test.example"];
    args.extend(three);
    env.submit(&args, b"Subject: before\n\nbody\n");
    assert!(
        first.wait_for(GUARD, |_, m| m.len() == 1),
        "{}",
        scheduler.log_text()
    );
    assert_eq!(first.messages()[0].rcpt_to.len(), 3, "one transaction");

    // New route, and a setting the SMTP agent reads.
    edit(&env, &first.nexthop(), &second.nexthop());
    edit(
        &env,
        "max_recipients_per_transaction = 100",
        "max_recipients_per_transaction = 1",
    );
    let (code, out) = skein_reload(&env);
    assert_eq!(code, 0, "{out}");
    for program in ["skein-router", "skein-scheduler"] {
        assert!(
            out.contains(&format!("reload requested of {program}")),
            "{out}"
        );
    }
    assert!(
        router.wait_for_log("msg=reloaded", 1),
        "{}",
        router.log_text()
    );
    assert!(
        scheduler.wait_for_log("msg=reloaded", 1),
        "{}",
        scheduler.log_text()
    );
    assert!(
        scheduler
            .log_text()
            .contains("smtp.max_recipients_per_transaction")
    );
    env.submit(&args, b"Subject: after\n\nbody\n");
    assert!(
        second.wait_for(GUARD, |_, m| m.len() == 3),
        "{}",
        scheduler.log_text()
    );
    assert!(
        second.messages().iter().all(|m| m.rcpt_to.len() == 1),
        "one recipient per transaction"
    );
    assert_eq!(first.messages().len(), 1, "nothing more to the old route");

    // A broken file that would also send mail back to the first server,
    // signalled straight to both: refused, the settings in force stay.
    // (Submissions from here on read a copy of the good file.)
    let good = env.dir.path().join("good.toml");
    std::fs::copy(&env.config, &good).expect("copy the good file");
    edit(&env, &second.nexthop(), &first.nexthop());
    edit(&env, "[[route]]", "[[route]\n");
    sighup(&router);
    sighup(&scheduler);
    for daemon in [&router, &scheduler] {
        assert!(
            daemon.wait_for_log("msg=\"reload refused", 1),
            "{}",
            daemon.log_text()
        );
        assert_eq!(daemon.logged("msg=reloaded"), 1);
    }
    let agents = std::fs::read_to_string(env.spool().join("run/agents.toml"))
        .expect("the agents' configuration");
    assert!(
        agents.contains("max_recipients_per_transaction = 1"),
        "{agents}"
    );
    assert!(agents.contains(&second.nexthop()), "{agents}");
    let mut sendmail = env.sendmail(&args);
    sendmail.env("SKEIN_CONFIG", &good);
    env.submit_with(sendmail, b"Subject: refused\n\nbody\n");
    assert!(
        second.wait_for(GUARD, |_, m| m.len() == 6),
        "{}",
        scheduler.log_text()
    );
    assert_eq!(first.messages().len(), 1);
    assert!(env.wait_for(Duration::from_secs(120), || env.queue_empty()));
}
