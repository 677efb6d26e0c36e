//! Shared by the `smtpd_*` tests: a `skein-smtpd` on an ephemeral loopback
//! port and a raw SMTP client that asserts on replies byte for byte.

#![allow(dead_code)] // each test file uses a different part of it

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use skein_integration_tests::{Daemon, TestEnv};

/// A guard against hanging for ever, not a timing assertion.
pub const GUARD: Duration = Duration::from_secs(120);

/// A free loopback port: bind port 0, read the port, let it go.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The local users [`Smtpd::start`] creates (Maildirs), the recipients
/// the tests send to: the server refuses unknown local users at RCPT TO
/// (`smtpd.verify_local_recipients`).
pub const USERS: [&str; 2] = ["joe", "ann"];

/// A running `skein-smtpd` and its environment.
pub struct Smtpd {
    pub env: TestEnv,
    pub daemon: Daemon,
    pub port: u16,
}

impl Smtpd {
    /// Starts `skein-smtpd` with `[smtpd]` keys `smtpd_keys` (the listen
    /// address is added) and `more` appended to the configuration; the
    /// local [`USERS`] exist.
    pub fn start(smtpd_keys: &str, more: &str) -> Smtpd {
        Smtpd::start_with_users(smtpd_keys, more, &USERS)
    }

    /// [`start`](Self::start) with these local users instead.
    ///
    /// The port is found free and then let go before the server binds it,
    /// so another process (a parallel test, an outgoing connection's
    /// ephemeral port) may take it in between: a start that fails with
    /// "Address already in use" is tried again on another port, a few
    /// times.
    pub fn start_with_users(smtpd_keys: &str, more: &str, users: &[&str]) -> Smtpd {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let env = TestEnv::new(&format!(
                "[smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n{smtpd_keys}\n\n{more}"
            ));
            env.make_users(&users);
            let mut daemon = env.start("skein-smtpd");
            let mut exited = false;
            let up = env.wait_for(GUARD, || {
                exited = matches!(daemon.child.try_wait(), Ok(Some(_)));
                exited || skein_integration_tests::listening(port)
            });
            if up && !exited {
                return Smtpd { env, daemon, port };
            }
            last_log = daemon.log_text();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("skein-smtpd did not start:\n{last_log}");
    }

    /// A client connected to it, greeting read.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.port);
        c.expect(220, "");
        c
    }

    /// The message files in incoming/.
    pub fn incoming(&self) -> Vec<PathBuf> {
        self.env.files("incoming")
    }

    /// Proves the server still serves: a full transaction from a new
    /// client, queued; returns the queue id.
    pub fn assert_serving(&self) -> String {
        let mut c = self.client();
        c.send(b"EHLO check.example\r\n");
        c.expect(250, "");
        c.send(b"MAIL FROM:<a@check.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\n");
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        c.send(b"Subject: still serving\r\n\r\nyes\r\n.\r\nQUIT\r\n");
        let queued = c.expect(250, "2.0.0");
        c.expect(221, "");
        queued
            .rsplit(' ')
            .next()
            .expect("queue id in the reply")
            .trim()
            .to_owned()
    }
}

/// One reply: its code and its full text (every line, CRLFs included).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// Something to speak SMTP over: the TCP stream, or TLS over it.
pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A raw SMTP client.
pub struct Client {
    /// The TCP connection (for cloning, timeouts and raw bytes).
    pub stream: TcpStream,
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address
/// `source` (any of 127.0.0.0/8 works on Linux without configuration), so
/// that one test can be many clients.
pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use std::os::fd::{FromRawFd, OwnedFd};
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with
    // sockaddr_in values that live across each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let from = sockaddr(source, 0);
        let rc = libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&from as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(rc, 0, "bind {source}: {}", std::io::Error::last_os_error());
        let to = sockaddr([127, 0, 0, 1].into(), port);
        let rc = libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&to as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from(fd)
    }
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        Client::over(stream)
    }

    /// A client at loopback address `source` ([`connect_from`]).
    pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> Client {
        Client::over(connect_from(source, port))
    }

    fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(GUARD)).expect("timeout");
        stream.set_write_timeout(Some(GUARD)).expect("timeout");
        let io = Box::new(stream.try_clone().expect("clone"));
        Client {
            stream,
            io,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("send");
        self.io.flush().expect("flush");
    }

    /// Continues over TLS (after `220` to STARTTLS), trusting only the
    /// certificate `pinned`.
    pub fn start_tls(&mut self, pinned: rustls::pki_types::CertificateDer<'static>) {
        assert!(self.buf.is_empty(), "bytes after the 220: {:?}", self.buf);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(Pinned { pinned, provider }))
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
        let tcp = self.stream.try_clone().expect("clone");
        self.io = Box::new(rustls::StreamOwned::new(conn, tcp));
    }

    /// Reads one line (CRLF included); `None` at EOF.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8(line).expect("reply is UTF-8"));
            }
            let mut chunk = [0u8; 65536];
            let n = self.io.read(&mut chunk).expect("read reply");
            if n == 0 {
                assert!(self.buf.is_empty(), "partial reply line {:?}", self.buf);
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one (possibly multi-line) reply; `None` at EOF.
    pub fn reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let line = self.line()?;
            assert!(line.len() >= 5, "short reply line {line:?}");
            text.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                let code = line[..3].parse().expect("reply code");
                return Some(Reply { code, text });
            }
        }
    }

    /// Reads a reply and checks its code and that its text starts with
    /// `enhanced` after the code; returns the text.
    pub fn expect(&mut self, code: u16, enhanced: &str) -> String {
        let r = self
            .reply()
            .unwrap_or_else(|| panic!("connection closed, expected {code} {enhanced}"));
        assert_eq!(r.code, code, "expected {code} {enhanced}, got {:?}", r.text);
        if !enhanced.is_empty() {
            let want = format!("{code} {enhanced}");
            assert!(
                r.text.starts_with(&want),
                "expected {want:?}, got {:?}",
                r.text
            );
        }
        r.text
    }

    /// Asserts that the server closed the connection.
    pub fn expect_closed(&mut self) {
        if let Some(r) = self.reply() {
            panic!("expected the connection closed, got {:?}", r.text);
        }
    }

    /// Half-closes our side.
    pub fn finish_sending(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// The message after the server's `Received:` field (which must come
/// first): the field ends at the first CRLF not followed by a tab.
pub fn after_received(stored: &[u8]) -> &[u8] {
    assert!(
        stored.starts_with(b"Received: from "),
        "no Received field first"
    );
    let mut i = 0;
    while let Some(at) = stored[i..].windows(2).position(|w| w == b"\r\n") {
        let next = i + at + 2;
        if stored.get(next) != Some(&b'\t') {
            return &stored[next..];
        }
        i = next;
    }
    panic!("unterminated Received field")
}

/// Trusts exactly one certificate (the test's own), and still checks the
/// handshake signatures.
#[derive(Debug)]
struct Pinned {
    pinned: rustls::pki_types::CertificateDer<'static>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the test certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The submission users: `alice`, password `s3cret pass` (argon2id).
pub const PASSWORDS: &str = "# test users\nalice:$argon2id$v=19$m=19456,t=2,p=1$c2tlaW50ZXN0c2FsdA$77ZdsPAZDWO3u43UcM/8Ht5yMkbFtrndFzoqolotwUg\n";

/// A `skein-smtpd` with a certificate (written into `dir`), [`PASSWORDS`]
/// and a submission port, where loopback is *not* a relay network (only
/// AUTH allows relaying), once both ports accept connections. Returns the
/// server, its submission port and the certificate to pin.
pub fn submission_server(
    dir: &std::path::Path,
) -> (Smtpd, u16, rustls::pki_types::CertificateDer<'static>) {
    submission_server_with(dir, "")
}

/// [`submission_server`] with more `[smtpd]` keys.
pub fn submission_server_with(
    dir: &std::path::Path,
    smtpd_keys: &str,
) -> (Smtpd, u16, rustls::pki_types::CertificateDer<'static>) {
    let (tls, der) = certificate(dir);
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, PASSWORDS).expect("password file");
    let submission = free_port();
    let smtpd = Smtpd::start(
        &format!(
            "relay_networks = []\nsubmission = [\"127.0.0.1:{submission}\"]\npassword_file = \"{}\"\n{smtpd_keys}",
            passwd.display()
        ),
        &tls,
    );
    assert!(
        smtpd
            .env
            .wait_for(GUARD, || { skein_integration_tests::listening(submission) })
    );
    (smtpd, submission, der)
}

/// A fresh self-signed certificate for `localhost`, written as PEM files
/// into `dir`; returns the `[tls]` section and the certificate.
pub fn certificate(dir: &std::path::Path) -> (String, rustls::pki_types::CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let section = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    (section, certified.cert.der().clone())
}
