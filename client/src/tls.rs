//! TLS client configuration from PEM files.
//!
//! rustls with the `ring` provider only (no aws-lc: it needs cmake and a C
//! toolchain per ARM target). PEM is parsed with `rustls-pki-types`, so there
//! is no extra PEM crate. Errors name the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::ClientError;

/// TLS settings: trust anchors and an optional client certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require client certificates.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsOptions {
    /// Builds the rustls configuration; fails with the offending file named.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca_file {
            for cert in load_certs(ca, "CA file")? {
                roots.add(cert).map_err(|e| tls_err("CA file", ca, e))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert, "certificate")?;
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err("key", key, e))?;
                builder.with_client_auth_cert(chain, key_der)?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), None) => {
                return Err(tls_err(
                    "certificate",
                    cert,
                    "--key is required with --cert",
                ))
            }
            (None, Some(key)) => return Err(tls_err("key", key, "--cert is required with --key")),
        };
        Ok(Arc::new(config))
    }
}

fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_err(what, path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn tls_err(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Tls {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let opts = TlsOptions {
            ca_file: Some(missing.clone()),
            ..Default::default()
        };
        let err = opts.client_config().unwrap_err().to_string();
        assert!(err.contains("CA file") && err.contains("nope.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").unwrap();
        let opts = TlsOptions {
            ca_file: Some(empty),
            ..Default::default()
        };
        let err = opts.client_config().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let opts = TlsOptions {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        let err = opts.client_config().unwrap_err().to_string();
        assert!(err.contains("--key is required"), "{err}");
    }
}
