//! STARTTLS with rustls (the *ring* provider): the client configurations
//! for the three policies and the handshake.
//!
//! `opportunistic` and `require` encrypt without checking the certificate
//! (the handshake's signatures are still checked, so the session is
//! encrypted to whoever holds the key the server presented): MX
//! certificates are rarely verifiable, and refusing them would only push
//! mail back to clear text. `verify` checks the chain against the system's
//! roots and the name against the next-hop host name (the MX name, or the
//! route's host), as RFC 7672 does without DANE.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use skein_config::TlsPolicy;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{info, warn};

use crate::error::SmtpError;

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The client configuration for `policy`, built once per process.
fn client_config(policy: TlsPolicy) -> Result<Arc<ClientConfig>, SmtpError> {
    static UNCHECKED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static VERIFYING: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let slot = match policy {
        TlsPolicy::Verify => &VERIFYING,
        TlsPolicy::None | TlsPolicy::Opportunistic | TlsPolicy::Dane | TlsPolicy::Require => {
            &UNCHECKED
        }
    };
    if let Some(config) = slot.get() {
        return Ok(config.clone());
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::Tls {
            detail: format!("TLS setup: {e}"),
        })?;
    let config = match policy {
        TlsPolicy::Verify => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            if ignored > 0 {
                warn!(
                    added,
                    ignored, "some system CA certificates could not be used"
                );
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsPolicy::None | TlsPolicy::Opportunistic | TlsPolicy::Dane | TlsPolicy::Require => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth()
        }
    };
    Ok(slot.get_or_init(|| Arc::new(config)).clone())
}

/// Runs the TLS handshake over `tcp` for server `name` and returns the
/// stream with a description of the session (`TLSv1.3
/// TLS13_AES_256_GCM_SHA384`).
pub async fn connect(
    tcp: TcpStream,
    name: &str,
    policy: TlsPolicy,
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, String), SmtpError> {
    let config = client_config(policy)?;
    let verified = if policy == TlsPolicy::Verify {
        "verified"
    } else {
        "unverified"
    };
    handshake(tcp, name, config, policy.as_str(), verified, limit).await
}

/// [`connect`] with the certificate checked against DANE TLSA records
/// (`owner`'s usable `records`): the session is described as `dane
/// (TLSA <owner>)` when they match; a mismatch fails the handshake.
pub async fn connect_dane(
    tcp: TcpStream,
    name: &str,
    owner: &str,
    records: Vec<crate::dane::Tlsa>,
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, String), SmtpError> {
    let verifier = crate::dane::DaneVerifier {
        owner: owner.to_owned(),
        records,
        signatures: AnyCertificate(provider()),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::Tls {
            detail: format!("TLS setup: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let label = format!("dane-verified (TLSA {owner})");
    handshake(tcp, name, Arc::new(config), "dane", &label, limit).await
}

/// [`connect`] with the certificate checked (PKIX: `roots`, the name) for
/// an MTA-STS policy. `enforce`: a failure fails the handshake; else it
/// is only logged (`testing`). Each outcome is one `msg="mta-sts"` line.
pub async fn connect_sts(
    tcp: TcpStream,
    name: &str,
    domain: &str,
    id: &str,
    enforce: bool,
    roots: &[CertificateDer<'static>],
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, String), SmtpError> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(roots.iter().cloned());
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| SmtpError::Tls {
                detail: format!("MTA-STS: no usable trust anchors: {e}"),
            })?;
    let verifier = StsVerifier {
        inner,
        domain: domain.to_owned(),
        id: id.to_owned(),
        enforce,
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::Tls {
            detail: format!("TLS setup: {e}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mode = if enforce { "enforce" } else { "testing" };
    let label = format!("mta-sts-{mode} (policy {domain} id {id})");
    let result = handshake(tcp, name, Arc::new(config), "mta-sts", &label, limit).await;
    if result.is_ok() && enforce {
        info!(
            domain,
            policy_id = id,
            mode,
            mx = name,
            result = "success",
            "mta-sts"
        );
    }
    result
}

/// The TLS-RPT result type of a certificate error.
fn rpt_type(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            ..
        }) => "certificate-host-mismatch",
        rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. }) => {
            "certificate-expired"
        }
        _ => "certificate-not-trusted",
    }
}

/// PKIX verification for an MTA-STS policy, enforcing or reporting.
#[derive(Debug)]
struct StsVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    domain: String,
    id: String,
    enforce: bool,
}

impl ServerCertVerifier for StsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => {
                if !self.enforce {
                    info!(
                        domain = %self.domain,
                        policy_id = %self.id,
                        mode = "testing",
                        mx = %server_name.to_str(),
                        result = "success",
                        "mta-sts"
                    );
                }
                Ok(ok)
            }
            Err(e) => {
                info!(
                    domain = %self.domain,
                    policy_id = %self.id,
                    mode = if self.enforce { "enforce" } else { "testing" },
                    mx = %server_name.to_str(),
                    result = "failure",
                    result_type = rpt_type(&e),
                    error = %e,
                    "mta-sts"
                );
                if self.enforce {
                    Err(rustls::Error::General(format!(
                        "MTA-STS policy of {} (enforce): {e}",
                        self.domain
                    )))
                } else {
                    Ok(ServerCertVerified::assertion())
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn handshake(
    tcp: TcpStream,
    name: &str,
    config: Arc<ClientConfig>,
    policy: &str,
    verified: &str,
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, String), SmtpError> {
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| SmtpError::Tls {
        detail: format!("{name:?} is not a usable server name: {e}"),
    })?;
    let connector = TlsConnector::from(config);
    let stream = match tokio::time::timeout(limit, connector.connect(server_name, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(SmtpError::Tls {
                detail: format!("handshake with {name} ({policy} policy): {e}"),
            });
        }
        Err(_) => {
            return Err(SmtpError::Timeout {
                waiting_for: "the TLS handshake",
            });
        }
    };
    let (_, session) = stream.get_ref();
    let version = match session.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    let cipher = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown-cipher".to_owned());
    Ok((stream, format!("{version} {cipher} {verified}")))
}

/// Accepts any certificate chain, but still checks the handshake
/// signatures against the key presented.
#[derive(Debug)]
pub(crate) struct AnyCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
