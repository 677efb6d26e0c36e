//! SIGTERM: the server tells connected clients 421 4.3.2, queues nothing
//! half-received, and exits 0.

mod smtpd_support;

use smtpd_support::Smtpd;

#[test]
fn sigterm_says_421_and_exits_cleanly() {
    let Smtpd { env, daemon, port } = Smtpd::start("", "");
    let smtpd_port = port;
    let mut idle = smtpd_support::Client::connect(smtpd_port);
    idle.expect(220, "");
    let mut mid_data = smtpd_support::Client::connect(smtpd_port);
    mid_data.expect(220, "");
    mid_data.send(b"EHLO x.example\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\nSubject: half\r\n");
    mid_data.expect(250, "");
    mid_data.expect(250, "2.1.0");
    mid_data.expect(250, "2.1.5");
    mid_data.expect(354, "");

    let status = daemon.stop();
    assert!(status.success(), "exit status {status}");
    idle.expect(421, "4.3.2");
    idle.expect_closed();
    mid_data.expect(421, "4.3.2");
    mid_data.expect_closed();
    assert!(env.files("incoming").is_empty());
    assert!(env.files("tmp").is_empty(), "{:?}", env.files("tmp"));
}
