//! DANE for SMTP (RFC 7672, RFC 7671): TLSA records for a server, trusted
//! only when a validating resolver vouches for them, and the certificate
//! check they ask for.
//!
//! **Whose validation.** skein does not validate DNSSEC itself: it trusts
//! the AD bit of the resolver it asks, as Postfix does, and only of a
//! resolver on loopback (127.0.0.0/8, ::1) — the path to any other could
//! forge the bit. The resolver is the first of `smtp.nameservers`, else
//! the system's first (`/etc/resolv.conf`); run unbound (or any validating
//! resolver) there. Without one, `dane` is `opportunistic` (logged once).
//!
//! **What is looked up** (RFC 7672 §2.2). The destination's MX RRset (or,
//! for a static next hop or an implicit MX, the host's address records)
//! must be secure; then, for each server, its address records and
//! `_<port>._tcp.<server>` TLSA. Secure TLSA records of usable kinds —
//! DANE-TA(2) or DANE-EE(3), selector full certificate(0) or SPKI(1),
//! matching exact(0), SHA-256(1) or SHA-512(2) — make the server's TLS
//! mandatory and authenticated by them; secure records of no usable kind
//! make TLS mandatory without authentication (RFC 7672 §2.2); anything
//! insecure, or no records, leaves ordinary opportunistic TLS. A lookup
//! that fails (SERVFAIL: a bogus signature, a broken zone) is not "no
//! records": the server is skipped with 4.7.5, never used in clear text.
//!
//! **The check** (RFC 7672 §3). DANE-EE: the server's own certificate (or
//! its key) matches; names and dates are not checked. DANE-TA: a
//! certificate in the chain the server sent matches, and the chain from
//! the server's certificate to it verifies, for the server's name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::{debug, info};

/// How long one DNS query may take (UDP, then TCP when truncated).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One TLSA record, as published (`3 1 1 <hex>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 2 DANE-TA, 3 DANE-EE (0 and 1 are not used for
    /// SMTP, RFC 7672 §3.1.3).
    pub usage: u8,
    /// 0 the full certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The data to match.
    pub data: Vec<u8>,
}

impl Tlsa {
    fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` (DER) matches this record's selector and data.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert,
            1 => match spki(cert) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => ring::digest::digest(&ring::digest::SHA256, selected).as_ref() == self.data,
            2 => ring::digest::digest(&ring::digest::SHA512, selected).as_ref() == self.data,
            _ => false,
        }
    }
}

impl std::fmt::Display for Tlsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in self.data.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        if self.data.len() > 8 {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// What DANE asks of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: ordinary opportunistic TLS (why, for the log).
    None(String),
    /// TLS is mandatory and must be authenticated by these records
    /// (`_25._tcp.mx.example.org`, the records).
    Authenticate(String, Vec<Tlsa>),
    /// Secure TLSA records exist, none of a usable kind: TLS is mandatory,
    /// unauthenticated.
    Encrypt(String),
    /// An MTA-STS policy (no DANE for this server): in `enforce` mode TLS
    /// is mandatory and the certificate must be valid (PKIX) for the
    /// server's name; in `testing` mode whether it is is only logged.
    Sts {
        /// The policy's domain.
        domain: String,
        /// The policy's id.
        id: String,
        /// `enforce` (else `testing`).
        enforce: bool,
        /// The trust anchors.
        roots: Arc<Vec<CertificateDer<'static>>>,
    },
}

/// An answer: its response code, whether the resolver vouched for it, and
/// the answer section's data.
struct Answer {
    rcode: ResponseCode,
    secure: bool,
    data: Vec<RData>,
}

/// The validating resolver whose AD bit is trusted.
#[derive(Debug, Clone)]
pub struct SecureDns {
    server: Option<SocketAddr>,
}

impl SecureDns {
    /// The resolver to trust: the first of `nameservers` (else the
    /// system's first), if it is on loopback.
    pub fn new(nameservers: &[SocketAddr]) -> SecureDns {
        let first = nameservers.first().copied().or_else(system_nameserver);
        let server = first.filter(|a| a.ip().is_loopback());
        match (first, server) {
            (_, Some(server)) => debug!(%server, "DANE: trusting the AD bit of this resolver"),
            (Some(other), None) => info!(
                resolver = %other,
                "DANE: the resolver is not on loopback, so its DNSSEC verdicts cannot be trusted; policy dane acts as opportunistic"
            ),
            (None, None) => {
                info!("DANE: no resolver configured; policy dane acts as opportunistic")
            }
        }
        SecureDns { server }
    }

    /// No resolver: no route uses policy `dane`.
    pub fn disabled() -> SecureDns {
        SecureDns { server: None }
    }

    /// Whether there is a resolver to trust at all.
    pub fn available(&self) -> bool {
        self.server.is_some()
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Answer, String> {
        let server = self.server.ok_or("no validating resolver on loopback")?;
        let qname =
            Name::from_ascii(name).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
        let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(qname, rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232).set_dnssec_ok(true);
        message.set_edns(edns);
        let bytes = message.to_vec().map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            let udp = UdpSocket::bind(if server.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            })
            .await
            .map_err(|e| e.to_string())?;
            udp.send_to(&bytes, server)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 65535];
            let reply = loop {
                let (n, from) = udp.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
                if from != server {
                    continue;
                }
                let reply = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
                if reply.metadata.id == message.metadata.id {
                    break reply;
                }
            };
            if !reply.metadata.truncation {
                return Ok(reply);
            }
            // Truncated: the same question over TCP (RFC 7766).
            let mut tcp = TcpStream::connect(server)
                .await
                .map_err(|e| e.to_string())?;
            let len = u16::try_from(bytes.len()).map_err(|e| e.to_string())?;
            tcp.write_all(&len.to_be_bytes())
                .await
                .map_err(|e| e.to_string())?;
            tcp.write_all(&bytes).await.map_err(|e| e.to_string())?;
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Message::from_vec(&buf).map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| format!("no answer from {server} within {QUERY_TIMEOUT:?}"))??;
        Ok(Answer {
            rcode: answer.metadata.response_code,
            secure: answer.metadata.authentic_data,
            data: answer
                .answers
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect(),
        })
    }

    /// Whether the records `name` has of `rtype` (an MX RRset, address
    /// records) are secure. A failed lookup is `Err`.
    pub async fn is_secure(&self, name: &str, rtype: RecordType) -> Result<bool, String> {
        let answer = self.query(&fqdn(name), rtype).await?;
        match answer.rcode {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer.secure),
            other => Err(format!("{rtype} lookup for {name}: {other}")),
        }
    }

    /// What DANE asks of the server `host` on `port`, given whether the
    /// records that led to it (the MX RRset, or the next hop's addresses)
    /// were secure. `Err`: the TLSA lookup failed, and the server must not
    /// be used.
    pub async fn requirement(
        &self,
        base_secure: bool,
        host: &str,
        port: u16,
    ) -> Result<Requirement, String> {
        if !self.available() {
            return Ok(Requirement::None(
                "no validating resolver on loopback".into(),
            ));
        }
        if host.parse::<IpAddr>().is_ok() {
            return Ok(Requirement::None("an address, not a name".into()));
        }
        if !base_secure {
            return Ok(Requirement::None(
                "the MX (or next hop) records are not DNSSEC-signed".into(),
            ));
        }
        // As for the MX: a failed DNSSEC question about addresses the
        // resolver just gave means "not known to be secure".
        if !self.is_secure(host, RecordType::A).await.unwrap_or(false) {
            return Ok(Requirement::None(format!(
                "the addresses of {host} are not DNSSEC-signed"
            )));
        }
        let owner = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        let answer = self.query(&fqdn(&owner), RecordType::TLSA).await?;
        match answer.rcode {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            other => {
                return Err(format!(
                    "TLSA lookup for {owner} failed ({other}): not trusted, and not ignored"
                ));
            }
        }
        if !answer.secure {
            return Ok(Requirement::None(format!("{owner} is not DNSSEC-signed")));
        }
        let records: Vec<Tlsa> = answer
            .data
            .iter()
            .filter_map(|d| match d {
                RData::TLSA(t) => Some(Tlsa {
                    usage: usage_number(t.cert_usage),
                    selector: selector_number(t.selector),
                    matching: matching_number(t.matching),
                    data: t.cert_data.clone(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(Requirement::None(format!("{owner} has no TLSA records")));
        }
        let usable: Vec<Tlsa> = records.into_iter().filter(Tlsa::usable).collect();
        if usable.is_empty() {
            return Ok(Requirement::Encrypt(owner));
        }
        Ok(Requirement::Authenticate(owner, usable))
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn rand_id() -> u16 {
    let mut id = [0u8; 2];
    // A failure of the system's randomness leaves 0: the answer is still
    // matched by source and id, on a fresh port.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
    u16::from_be_bytes(id)
}

fn system_nameserver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn usage_number(u: CertUsage) -> u8 {
    match u {
        CertUsage::PkixTa => 0,
        CertUsage::PkixEe => 1,
        CertUsage::DaneTa => 2,
        CertUsage::DaneEe => 3,
        CertUsage::Unassigned(n) => n,
        CertUsage::Private => 255,
    }
}

fn selector_number(s: Selector) -> u8 {
    match s {
        Selector::Full => 0,
        Selector::Spki => 1,
        Selector::Unassigned(n) => n,
        Selector::Private => 255,
    }
}

fn matching_number(m: Matching) -> u8 {
    match m {
        Matching::Raw => 0,
        Matching::Sha256 => 1,
        Matching::Sha512 => 2,
        Matching::Unassigned(n) => n,
        Matching::Private => 255,
    }
}

/// The SubjectPublicKeyInfo of a DER certificate: the seventh element of
/// its TBSCertificate when it has a version (`[0]`), else the sixth.
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert_body, _) = der(cert)?;
    let (_, tbs, _) = der(cert_body)?;
    let mut rest = tbs;
    let mut index = 0;
    loop {
        let (tag, _, next) = der(rest)?;
        let whole = &rest[..rest.len() - next.len()];
        let want = if tbs.first() == Some(&0xa0) { 6 } else { 5 };
        if index == want {
            return (tag == 0x30).then_some(whole);
        }
        rest = next;
        index += 1;
    }
}

/// One DER TLV: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > input.len() {
        return None;
    }
    Some((tag, &input[header..end], &input[end..]))
}

/// The certificate check of a DANE-authenticated session.
#[derive(Debug)]
pub struct DaneVerifier {
    /// The TLSA owner name, for errors.
    pub owner: String,
    /// The usable records.
    pub records: Vec<Tlsa>,
    /// The handshake signatures are checked as for any session.
    pub signatures: crate::tls::AnyCertificate,
}

impl DaneVerifier {
    fn error(&self, detail: &str) -> rustls::Error {
        let records: Vec<String> = self.records.iter().map(ToString::to_string).collect();
        rustls::Error::General(format!(
            "DANE: {detail} (TLSA {}: {})",
            self.owner,
            records.join(", ")
        ))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the server's own certificate; nothing else is checked.
        if self
            .records
            .iter()
            .any(|r| r.usage == 3 && r.matches(end_entity.as_ref()))
        {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: a certificate the server sent is the trust anchor of a
        // chain that verifies for its name.
        for ta in intermediates {
            if !self
                .records
                .iter()
                .any(|r| r.usage == 2 && r.matches(ta.as_ref()))
            {
                continue;
            }
            let mut roots = RootCertStore::empty();
            if roots.add(ta.clone().into_owned()).is_err() {
                continue;
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.signatures.0.clone(),
            )
            .build()
            .map_err(|e| self.error(&format!("trust anchor unusable: {e}")))?;
            return verifier
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    self.error(&format!(
                        "the chain to the matching trust anchor does not verify: {e}"
                    ))
                });
        }
        Err(self.error("no TLSA record matches the certificate"))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn spki_is_found_in_a_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert_eq!(
            spki(cert.der().as_ref()),
            Some(key.subject_public_key_info().as_slice())
        );
        assert_eq!(spki(b"\x30\x03\x02\x01"), None, "truncated");
        assert_eq!(spki(b""), None);
    }

    #[test]
    fn records_match_by_selector_and_matching_type() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().as_ref();
        let spki = key.subject_public_key_info();
        let sha256 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        let sha512 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA512, b)
                .as_ref()
                .to_vec()
        };
        let record = |selector, matching, data: Vec<u8>| Tlsa {
            usage: 3,
            selector,
            matching,
            data,
        };
        let cases = [
            (record(0, 0, der.to_vec()), true),
            (record(0, 1, sha256(der)), true),
            (record(0, 2, sha512(der)), true),
            (record(1, 0, spki.clone()), true),
            (record(1, 1, sha256(&spki)), true),
            (record(1, 2, sha512(&spki)), true),
            (record(1, 1, sha256(der)), false),
            (record(0, 1, vec![0; 32]), false),
            (record(2, 1, sha256(&spki)), false),
            (record(1, 3, sha256(&spki)), false),
        ];
        for (rec, want) in cases {
            assert_eq!(rec.matches(der), want, "{rec}");
        }
        assert!(record(1, 1, vec![]).usable());
        assert!(
            !Tlsa {
                usage: 1,
                ..record(1, 1, vec![])
            }
            .usable(),
            "PKIX-EE is not used for SMTP"
        );
    }

    #[test]
    fn only_a_loopback_resolver_is_trusted() {
        let cases = [
            ("127.0.0.1:53", true),
            ("127.0.0.53:53", true),
            ("[::1]:5353", true),
            ("192.0.2.1:53", false),
            ("[2001:db8::1]:53", false),
        ];
        for (addr, trusted) in cases {
            let dns = SecureDns::new(&[addr.parse().expect("addr")]);
            assert_eq!(dns.available(), trusted, "{addr}");
        }
    }
}
