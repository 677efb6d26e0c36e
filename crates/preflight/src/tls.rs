//! The STARTTLS certificate (`tls.cert`, `tls.key`) as a rustls server
//! configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or the key does not load.
#[derive(Debug)]
pub struct TlsFileError {
    /// The key that names the file at fault: `tls.cert` or `tls.key`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

/// Loads the PEM certificate chain and key into a server configuration
/// (rustls with the ring provider, its safe default protocol versions:
/// TLS 1.2 and 1.3). A key that does not match the certificate is the
/// certificate's error (the chain is what the key is checked against).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsFileError> {
    let bad = |which: &'static str, path: &Path, e: &dyn std::fmt::Display| TlsFileError {
        key: which,
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("tls.cert", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("tls.cert", cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls.key", key, &e))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls.cert", cert, &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                bad(
                    "tls.key",
                    key,
                    &format!("does not go with {}: {e}", cert.display()),
                )
            })?;
    Ok(Arc::new(config))
}
