//! How a TLS session is described in logs and in the Received field.
//! (The certificate is loaded by `skein_preflight::tls`, the one check
//! `skein config check` shares.)

/// `TLSv1.3 TLS13_AES_256_GCM_SHA384`, or what is known of it.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    match conn.negotiated_cipher_suite() {
        Some(suite) => format!("{version} {:?}", suite.suite()),
        None => version,
    }
}
