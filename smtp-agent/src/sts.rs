//! MTA-STS (RFC 8461), with `smtp.mta_sts = true`, for MX-routed mail: the
//! `_mta-sts.<domain>` TXT record, the policy fetched over HTTPS from
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` (ureq over rustls,
//! the system's trust anchors and `smtp.ca_file`), kept in the spool's
//! `sts/` directory for its `max_age` and fetched again when the TXT
//! record's `id` changes.
//!
//! What a policy does to a destination's servers:
//!
//! | mode | MX not in the policy's `mx:` | MX in it |
//! |---|---|---|
//! | `enforce` | not used (logged) | TLS mandatory, certificate valid (PKIX) for the MX name |
//! | `testing` | used as without a policy; the mismatch logged | as without a policy; whether the certificate would pass logged |
//! | `none` | as without a policy | as without a policy |
//!
//! DANE wins where both exist (RFC 8461 §2): a server with TLSA records
//! that validate is checked against them, not against the policy.
//!
//! Every decision is logged as one line with `msg="mta-sts"`, the domain,
//! `policy_id`, `mode`, the MX and `result=success|failure` with a
//! TLS-RPT (RFC 8460) result type (`sts-policy-fetch-error`,
//! `validation-failure`, `certificate-host-mismatch`,
//! `certificate-not-trusted`, `starttls-not-supported`), so that a reporter
//! can aggregate them.
//!
//! The cache is the agent's own: `<spool>/sts/<domain>`, written whole
//! to a temporary name and renamed, so a crash leaves the old policy or
//! the new one; a damaged file is treated as absent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use tracing::{debug, info, warn};

/// RFC 8461 §3.2: a policy body is at most 64 KiB.
const MAX_POLICY: u64 = 64 * 1024;

/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 8461 §3.2: `max_age` is at most about a year (longer is cut).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// A policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail delivery to servers that do not pass.
    Enforce,
    /// Report, deliver anyway.
    Testing,
    /// No policy in force.
    None,
}

impl Mode {
    /// The policy file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy with the TXT id it was fetched under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns (`mail.example.org`, `*.example.org`), lower case.
    pub mx: Vec<String>,
    /// `max_age:` in seconds.
    pub max_age: u64,
    /// The TXT record's `id` when it was fetched.
    pub id: String,
    /// When it was fetched (seconds since the epoch).
    pub fetched: u64,
}

impl Policy {
    /// Whether `host` (an MX name) is one of the policy's.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| mx_matches(p, &host))
    }

    fn expired(&self, now: u64) -> bool {
        now >= self.fetched.saturating_add(self.max_age)
    }
}

/// `mx:` matching (RFC 8461 §4.1): exact, or `*.` standing for exactly
/// one leftmost label.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The `id` of an `_mta-sts` TXT record (`v=STSv1; id=20260101T000000;`),
/// or `None` when it is not one.
pub fn parse_txt(text: &str) -> Option<String> {
    let mut fields = text.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next()? != "v=STSv1" {
        return None;
    }
    fields.find_map(|f| {
        f.strip_prefix("id=")
            .filter(|id| {
                !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .map(str::to_owned)
    })
}

/// Parses a policy body (RFC 8461 §3.2): `key: value` lines, CRLF or LF;
/// `version: STSv1`, `mode`, `max_age` and (unless `mode: none`) at
/// least one `mx` are required; unknown keys are ignored.
pub fn parse_policy(body: &str, id: &str, fetched: u64) -> Result<Policy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {line:?} is not key: value"));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_owned()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode {other:?}")),
                })
            }
            "max_age" => {
                let age: u64 = value
                    .parse()
                    .map_err(|_| format!("max_age {value:?} is not a number"))?;
                max_age = Some(age.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no version: STSv1".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".into());
    }
    Ok(Policy {
        mode,
        mx,
        max_age,
        id: id.to_owned(),
        fetched,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The policy cache and what fetching needs.
pub struct Sts {
    dir: PathBuf,
    port: u16,
    roots: Arc<Vec<CertificateDer<'static>>>,
}

impl Sts {
    /// The cache in `<spool>/sts`, fetching from `port`, trusting the
    /// system's roots and `ca_file`'s.
    pub fn new(spool: &Path, port: u16, ca_file: Option<&Path>) -> Sts {
        let mut roots: Vec<CertificateDer<'static>> = Vec::new();
        let native = rustls_native_certs::load_native_certs();
        roots.extend(native.certs);
        if let Some(path) = ca_file {
            roots.extend(extra_roots(path));
        }
        Sts {
            dir: spool.join("sts"),
            port,
            roots: Arc::new(roots),
        }
    }

    /// The trust anchors (system and `ca_file`).
    pub fn roots(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.roots.clone()
    }

    fn cache_path(&self, domain: &str) -> PathBuf {
        self.dir.join(domain)
    }

    /// The cached policy of `domain`, if any and readable.
    pub fn cached(&self, domain: &str) -> Option<Policy> {
        let text = std::fs::read_to_string(self.cache_path(domain)).ok()?;
        let mut lines = text.splitn(3, '\n');
        let id = lines.next()?.strip_prefix("id ")?.to_owned();
        let fetched = lines.next()?.strip_prefix("fetched ")?.parse().ok()?;
        parse_policy(lines.next()?, &id, fetched).ok()
    }

    fn store(&self, domain: &str, policy_text: &str, policy: &Policy) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if !self.dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&self.dir)?;
        }
        let tmp = self.dir.join(format!(".{domain}.{}", std::process::id()));
        std::fs::write(
            &tmp,
            format!(
                "id {}\nfetched {}\n{policy_text}",
                policy.id, policy.fetched
            ),
        )?;
        std::fs::rename(&tmp, self.cache_path(domain))
    }

    /// The policy in force for `domain`, given its `_mta-sts` TXT answer
    /// (`txt_id`: the record's id; `None` when there is none): the cached
    /// one while it is fresh and its id current, else a fresh fetch
    /// (`addrs`: where `mta-sts.<domain>` is). A failed fetch keeps an
    /// unexpired cached policy (RFC 8461 §5.1).
    pub async fn policy(
        &self,
        domain: &str,
        txt_id: Option<&str>,
        addrs: impl AsyncFnOnce() -> Result<Vec<SocketAddr>, String>,
    ) -> Option<Policy> {
        let now = now();
        let cached = self.cached(domain).filter(|p| !p.expired(now));
        let Some(id) = txt_id else {
            // No TXT record: a cached policy stays until it expires.
            return cached;
        };
        if let Some(policy) = &cached
            && policy.id == id
        {
            debug!(domain, policy_id = id, "mta-sts: cached policy");
            return cached;
        }
        let fetched = match addrs().await {
            Ok(addrs) => self.fetch(domain, addrs).await,
            Err(e) => Err(e),
        };
        match fetched.and_then(|text| parse_policy(&text, id, now).map(|p| (text, p))) {
            Ok((text, policy)) => {
                if let Err(e) = self.store(domain, &text, &policy) {
                    warn!(domain, error = %e, "mta-sts: cannot cache the policy");
                }
                info!(
                    domain,
                    policy_id = id,
                    mode = policy.mode.as_str(),
                    max_age = policy.max_age,
                    mx = policy.mx.join(",").as_str(),
                    "mta-sts: policy fetched"
                );
                Some(policy)
            }
            Err(e) => {
                info!(
                    domain,
                    policy_id = id,
                    result = "failure",
                    result_type = "sts-policy-fetch-error",
                    error = %e,
                    cached = cached.is_some(),
                    "mta-sts"
                );
                cached
            }
        }
    }

    async fn fetch(&self, domain: &str, addrs: Vec<SocketAddr>) -> Result<String, String> {
        let host = format!("mta-sts.{domain}");
        let url = if self.port == 443 {
            format!("https://{host}/.well-known/mta-sts.txt")
        } else {
            format!("https://{host}:{}/.well-known/mta-sts.txt", self.port)
        };
        let roots = self.roots.clone();
        let port = self.port;
        tokio::task::spawn_blocking(move || get(&url, addrs, port, &roots))
            .await
            .map_err(|e| format!("fetch task: {e}"))?
    }
}

/// The PEM certificates of `path`, logged and skipped when unreadable.
fn extra_roots(path: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    match std::fs::read(path) {
        Ok(pem) => CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect(),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "smtp.ca_file cannot be read");
            Vec::new()
        }
    }
}

/// Where ureq connects: the addresses looked up with skein's resolver.
#[derive(Debug)]
struct Fixed(Vec<SocketAddr>);

impl ureq::unversioned::resolver::Resolver for Fixed {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for addr in &self.0 {
            if out.try_push(*addr).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// `GET url` (blocking): no redirects (RFC 8461 §3.3), `200` and
/// `text/plain` required, at most 64 KiB.
fn get(
    url: &str,
    addrs: Vec<SocketAddr>,
    port: u16,
    roots: &[CertificateDer<'static>],
) -> Result<String, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let certs: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(FETCH_TIMEOUT))
        .build();
    let addrs = addrs
        .into_iter()
        .map(|a| SocketAddr::new(a.ip(), port))
        .collect();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        Fixed(addrs),
    );
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("text/plain")
    {
        return Err(format!(
            "GET {url}: Content-Type {content_type:?}, not text/plain"
        ));
    }
    response
        .body_mut()
        .with_config()
        .limit(MAX_POLICY)
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_patterns() {
        let cases = [
            ("mail.example.org", "mail.example.org", true),
            ("mail.example.org", "mx.example.org", false),
            ("*.example.org", "mx1.example.org", true),
            ("*.example.org", "a.b.example.org", false),
            ("*.example.org", "example.org", false),
            ("*.example.org", ".example.org", false),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(mx_matches(pattern, host), want, "{pattern} {host}");
        }
    }

    #[test]
    fn txt_records() {
        let cases = [
            ("v=STSv1; id=20160831085700Z;", Some("20160831085700Z")),
            ("v=STSv1;id=abc", Some("abc")),
            ("v=STSv1; id=a-b", None),
            ("v=STSv2; id=abc", None),
            ("id=abc; v=STSv1", None),
            ("v=spf1 -all", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_txt(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn policies() {
        let good = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\nextension: ignored\r\n";
        let p = parse_policy(good, "id1", 100).expect("parses");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.mx, ["mail.example.org", "*.example.net"]);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("MAIL.example.org."));
        assert!(p.allows("mx2.example.net"));
        assert!(!p.allows("other.example.org"));
        assert!(!p.expired(100 + 86399));
        assert!(p.expired(100 + 86400));
        let huge = parse_policy(
            "version: STSv1\nmode: testing\nmx: a\nmax_age: 99999999999\n",
            "x",
            0,
        )
        .expect("parses");
        assert_eq!(huge.max_age, MAX_AGE_LIMIT);
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 10\n", "x", 0).expect("none");
        assert_eq!(none.mode, Mode::None);
        for (bad, why) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", "version"),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "unknown mode",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
            ("version: STSv1\nmode: enforce\nmx: a\n", "no max_age"),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
                "not a number",
            ),
            ("version: STSv1\ngarbage\n", "not key: value"),
        ] {
            let err = parse_policy(bad, "x", 0).expect_err(bad);
            assert!(err.contains(why), "{why} in {err}");
        }
    }

    #[test]
    fn the_cache_round_trips_and_a_damaged_file_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sts = Sts::new(dir.path(), 443, None);
        let text = "version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 600\n";
        let policy = parse_policy(text, "id7", 1000).expect("policy");
        sts.store("example.org", text, &policy).expect("store");
        assert_eq!(sts.cached("example.org"), Some(policy));
        std::fs::write(dir.path().join("sts/example.org"), "garbage").expect("damage");
        assert_eq!(sts.cached("example.org"), None);
        assert_eq!(sts.cached("never.example"), None);
    }
}
