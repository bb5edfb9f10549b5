//! TLS towards the cloud: rustls with the ring provider, PEM files parsed
//! with rustls-pki-types, the server name always checked.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::config::bridge::TlsConfig;

/// The connector and the name to verify, built once per bridge.
pub struct Tls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Builds the TLS client for `config`; `host` is the host part of the
/// bridge address, used when `server_name` is not set.
pub fn build(config: &TlsConfig, host: &str) -> Result<Tls, String> {
    let read_certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&config.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", config.ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .map_err(|e| e.to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("cert_file and key_file go together".to_string()),
    };
    let name = config
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(client)),
        server_name,
    })
}
