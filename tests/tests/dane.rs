//! DANE (issue 14, part 2) against real DNSSEC on loopback: each test
//! signs its zones with ldns-signzone, serves them with nsd, and validates
//! them with unbound, whose AD bit skein-smtp trusts (bench/ci-deps-dane.sh
//! installs the three). One scripted SMTP server with a self-signed
//! certificate stands behind every MX.
//!
//! - `dane.test`: signed, TLSA `3 1 1` of the server's key: delivered, the
//!   session described as DANE-verified.
//! - `wrong.test`: signed, a TLSA record that matches nothing: deferred
//!   4.7.5 with the record named; nothing sent, no clear-text fallback.
//! - `plain.test`: unsigned (insecure to unbound), with the same wrong
//!   record: ignored, delivered over opportunistic TLS.
//! - `bogus.test`: signed, its TLSA record altered after signing: the
//!   resolver answers SERVFAIL, the record is not trusted and not ignored:
//!   deferred 4.7.5, nothing sent.
//! - `ta.test`: signed, TLSA `2 0 1` of a test CA whose chain a second
//!   server (on 127.0.0.2) presents: delivered, DANE-TA verified.
//!
//! `dane` is not set in the configuration: it is the default for
//! MX-routed mail. `dane.test` also publishes an MTA-STS policy (enforce)
//! that lists none of its MX hosts: DANE wins, the mail goes.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use skein_integration_tests::KillOnDrop;
use skein_integration_tests::smtp_server::{
    PolicyServer, ScriptedServer, ServerOptions, SmtpTest, TestCa, tls_identity,
};
use skein_proto::{Outcome, Status};

const LIMIT: Duration = Duration::from_secs(60);

/// A loopback port free for both UDP and TCP (nsd and unbound take both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port")
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (apt install ldnsutils: bench/ci-deps-dane.sh): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The zone `name`: an MX to `mx.<name>` at 127.0.0.1 and, when given,
/// a TLSA record for `_<port>._tcp.mx.<name>`.
/// With `sts`, an MTA-STS policy is announced for the zone too.
fn zone_text(name: &str, port: u16, tlsa: &str, mx_address: &str, sts: bool) -> String {
    let sts = if sts {
        "_mta-sts IN TXT \"v=STSv1; id=1;\"\nmta-sts IN A 127.0.0.1\n"
    } else {
        ""
    };
    format!(
        "$ORIGIN {name}.\n$TTL 300\n@ IN SOA ns.{name}. admin.{name}. 1 3600 600 86400 300\n\
         @ IN NS ns.{name}.\nns IN A 127.0.0.1\n@ IN MX 10 mx.{name}.\nmx IN A {mx_address}\n\
         _{port}._tcp.mx IN TLSA {tlsa}\n{sts}"
    )
}

/// Signs `name`'s zone file in `dir`: the signed file's name and the DS
/// record unbound is given as its trust anchor.
fn sign(dir: &Path, name: &str) -> (String, String) {
    let key = run(dir, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", name]);
    run(dir, "ldns-signzone", &[&format!("{name}.zone"), &key]);
    let ds = std::fs::read_to_string(dir.join(format!("{key}.ds"))).expect("ds");
    (format!("{name}.zone.signed"), ds.trim().to_owned())
}

struct Dns {
    resolver: SocketAddr,
    _nsd: KillOnDrop,
    _unbound: KillOnDrop,
    dir: tempfile::TempDir,
}

impl Dns {
    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "nsd:\n{}\nunbound:\n{}",
            read("nsd.log"),
            read("unbound.log")
        )
    }
}

/// nsd serving the four zones (the TLSA data of `dane.test` and
/// `bogus.test` is `good`), unbound validating three of them.
fn start_dns(smtp_port: u16, good: &str, ta: &str) -> Dns {
    let dir = skein_integration_tests::tempdir();
    let path = dir.path();
    let wrong = format!("3 1 1 {}", "00".repeat(32));
    let mut zones = Vec::new();
    let mut anchors = Vec::new();
    for (name, tlsa, signed, mx_address) in [
        ("dane.test", good.to_owned(), true, "127.0.0.1"),
        ("wrong.test", wrong.clone(), true, "127.0.0.1"),
        ("plain.test", wrong.clone(), false, "127.0.0.1"),
        ("bogus.test", good.to_owned(), true, "127.0.0.1"),
        ("ta.test", ta.to_owned(), true, "127.0.0.2"),
    ] {
        std::fs::write(
            path.join(format!("{name}.zone")),
            zone_text(name, smtp_port, &tlsa, mx_address, name == "dane.test"),
        )
        .expect("zone");
        if signed {
            let (file, ds) = sign(path, name);
            anchors.push(format!("  trust-anchor: \"{ds}\"\n"));
            zones.push((name, file));
        } else {
            zones.push((name, format!("{name}.zone")));
        }
    }
    // bogus.test: the TLSA data changed after signing, so its signature
    // no longer covers what is served.
    let bogus = path.join("bogus.test.zone.signed");
    let text = std::fs::read_to_string(&bogus).expect("signed zone");
    let hex = good.rsplit(' ').next().expect("hex");
    let hex = [hex.to_ascii_lowercase(), hex.to_ascii_uppercase()]
        .into_iter()
        .find(|h| text.contains(h.as_str()))
        .expect("the TLSA data in the signed zone");
    let altered: String = hex.chars().rev().collect();
    std::fs::write(&bogus, text.replace(&hex, &altered)).expect("alter");

    let nsd_port = free_port();
    let d = path.display();
    let mut nsd_conf = format!(
        "server:\n  ip-address: 127.0.0.1@{nsd_port}\n  zonesdir: {d}\n  database: \"\"\n  pidfile: {d}/nsd.pid\n  username: \"\"\n  logfile: {d}/nsd.log\n  xfrdfile: {d}/xfrd.state\n  zonelistfile: {d}/zone.list\n  xfrdir: {d}\n  verbosity: 1\nremote-control:\n  control-enable: no\n"
    );
    for (name, file) in &zones {
        nsd_conf.push_str(&format!("zone:\n  name: {name}\n  zonefile: {d}/{file}\n"));
    }
    std::fs::write(path.join("nsd.conf"), nsd_conf).expect("nsd.conf");
    let nsd = Command::new("nsd")
        .args(["-d", "-c"])
        .arg(path.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsd (apt install nsd: bench/ci-deps-dane.sh)");
    let nsd = KillOnDrop(nsd);

    let unbound_port = free_port();
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {unbound_port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"validator iterator\"\n  local-zone: \"test.\" nodefault\n  domain-insecure: \"plain.test\"\n  harden-dnssec-stripped: yes\n"
    );
    for anchor in &anchors {
        conf.push_str(anchor);
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    for (name, _) in &zones {
        conf.push_str(&format!(
            "stub-zone:\n  name: \"{name}\"\n  stub-addr: 127.0.0.1@{nsd_port}\n"
        ));
    }
    std::fs::write(path.join("unbound.conf"), conf).expect("unbound.conf");
    let unbound = Command::new("unbound")
        .args(["-d", "-c"])
        .arg(path.join("unbound.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unbound (apt install unbound: bench/ci-deps-dane.sh)");
    let unbound = KillOnDrop(unbound);
    let resolver: SocketAddr = format!("127.0.0.1:{unbound_port}").parse().expect("addr");
    // Both answer once they listen (a guard against hanging, not a timing
    // assertion).
    let end = std::time::Instant::now() + LIMIT;
    while std::net::TcpStream::connect(resolver).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", nsd_port)).is_err()
    {
        assert!(
            std::time::Instant::now() < end,
            "nsd or unbound did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Dns {
        resolver,
        _nsd: nsd,
        _unbound: unbound,
        dir,
    }
}

async fn deliver(test: &SmtpTest, domain: &str) -> Outcome {
    test.deliver_by_mx(&format!("r@{domain}"), b"Subject: dane\r\n\r\nbody\r\n")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn dane_is_the_default_for_mx_routed_mail_and_enforced_where_tlsa_validates() {
    let (tls, cert) = tls_identity(&[
        "mx.dane.test",
        "mx.wrong.test",
        "mx.plain.test",
        "mx.bogus.test",
    ]);
    let test = SmtpTest::new(
        ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        },
        "nameservers = [\"@DNS@\"]\nport = @PORT@\nmta_sts = true\nmta_sts_port = @HTTPS@\nca_file = \"@CA@\"",
        "",
    );
    let port = test.server.addr().port();
    // TLSA 3 1 1: the SHA-256 of the server's SubjectPublicKeyInfo,
    // computed with openssl's view of the certificate, independent of
    // skein's own DER walk.
    let der_path = test.dir.path().join("server.der");
    std::fs::write(&der_path, &cert).expect("cert");
    let spki_hash = {
        let pubkey = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -inform der -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex",
                der_path.display()
            ))
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&pubkey.stdout).into_owned();
        text.rsplit(' ').next().expect("digest").trim().to_owned()
    };
    assert_eq!(spki_hash.len(), 64, "{spki_hash}");
    // DANE-TA: a second server on 127.0.0.2 with a chain from a test CA,
    // published as `2 0 1` (the CA certificate's SHA-256).
    let ca = TestCa::new();
    let ca_path = test.dir.path().join("ca.der");
    std::fs::write(&ca_path, ca.der()).expect("ca");
    let ca_hash = {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl dgst -sha256 -hex {}", ca_path.display()))
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.rsplit(' ').next().expect("digest").trim().to_owned()
    };
    let ta_server = ScriptedServer::start_on(
        SocketAddr::from(([127, 0, 0, 2], port)),
        ServerOptions {
            tls: Some(ca.server_config(&["mx.ta.test"])),
            ..ServerOptions::default()
        },
    );
    let dns = start_dns(
        port,
        &format!("3 1 1 {spki_hash}"),
        &format!("2 0 1 {ca_hash}"),
    );
    // dane.test also has an MTA-STS policy in enforce mode that lists no
    // MX of it: DANE wins where both exist (RFC 8461 §2), so the mail
    // goes all the same, checked against the TLSA records.
    let https = PolicyServer::start(
        ca.server_config(&["mta-sts.dane.test"]),
        200,
        "version: STSv1\nmode: enforce\nmx: nowhere.dane.test\nmax_age: 600\n",
    );
    let ca_pem = test.dir.path().join("ca.pem");
    std::fs::write(&ca_pem, &ca.pem).expect("ca");
    let text = std::fs::read_to_string(&test.config)
        .expect("config")
        .replace("@DNS@", &dns.resolver.to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@HTTPS@", &https.port().to_string())
        .replace("@CA@", &ca_pem.display().to_string());
    std::fs::write(&test.config, text).expect("config");

    // A matching record: delivered, and the session says DANE (and not
    // the MTA-STS policy, which was fetched but yields to DANE).
    let outcome = deliver(&test, "dane.test").await;
    assert_eq!(https.requests().len(), 1, "the policy was fetched");
    assert_eq!(
        outcome.status,
        Status::Delivered,
        "{outcome:?}\n{}\n{}",
        test.agent_log(),
        dns.log()
    );
    assert!(outcome.diagnostic.contains("dane-verified"), "{outcome:?}");
    let log = test.agent_log();
    assert!(
        log.contains("TLS established") && log.contains("dane-verified (TLSA _"),
        "{log}"
    );
    assert_eq!(test.server.messages().len(), 1);
    assert!(test.server.messages()[0].tls);

    // No record matches: deferred 4.7.5 naming the record; nothing sent.
    let outcome = deliver(&test, "wrong.test").await;
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.enhanced.to_string(), "4.7.5", "{outcome:?}");
    assert!(
        outcome.diagnostic.contains("no TLSA record matches")
            && outcome
                .diagnostic
                .contains(&format!("_{port}._tcp.mx.wrong.test"))
            && outcome.diagnostic.contains("3 1 1 0000"),
        "{outcome:?}"
    );
    assert_eq!(test.server.messages().len(), 1, "nothing more delivered");

    // Unsigned zone: its (wrong) record is ignored; opportunistic TLS.
    let outcome = deliver(&test, "plain.test").await;
    assert_eq!(
        outcome.status,
        Status::Delivered,
        "{outcome:?}\n{}",
        test.agent_log()
    );
    assert!(outcome.diagnostic.contains("unverified"), "{outcome:?}");
    assert_eq!(test.server.messages().len(), 2);

    // A bogus signature: not trusted, not ignored.
    let outcome = deliver(&test, "bogus.test").await;
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}\n{}",
        test.agent_log()
    );
    assert_eq!(outcome.enhanced.to_string(), "4.7.5", "{outcome:?}");
    assert!(outcome.diagnostic.contains("DANE"), "{outcome:?}");
    assert_eq!(
        test.server.messages().len(),
        2,
        "nothing delivered for bogus.test"
    );

    // DANE-TA: the chain to the published CA verifies for mx.ta.test.
    let outcome = deliver(&test, "ta.test").await;
    assert_eq!(
        outcome.status,
        Status::Delivered,
        "{outcome:?}\n{}",
        test.agent_log()
    );
    assert!(
        outcome.diagnostic.contains("dane-verified (TLSA _"),
        "{outcome:?}"
    );
    assert_eq!(ta_server.messages().len(), 1);
}
