//! Basic auth against a password file, and the HTTPS acceptor.
//!
//! Invariants: a request without valid credentials is refused; the hash
//! check runs on the blocking pool (argon2 takes tens of milliseconds), at
//! most one check per request; malformed headers are a refusal, never a
//! panic.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::HttpError;
use crate::auth::PasswordFile;

/// The users allowed to read the endpoint.
#[derive(Debug)]
pub struct HttpUsers(PasswordFile);

impl HttpUsers {
    /// Loads `path` (any format `edgemq passwd` and mosquitto_passwd write).
    pub fn load(path: &Path) -> Result<HttpUsers, HttpError> {
        PasswordFile::load(path)
            .map(HttpUsers)
            .map_err(|e| HttpError::File {
                file: path.display().to_string(),
                message: e.to_string(),
            })
    }
}

/// True when the request carries `Authorization: Basic` credentials of a
/// user of the file.
pub async fn authorized(users: &Arc<HttpUsers>, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    let (users, user, password) = (users.clone(), user.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || users.0.verify(&user, password.as_bytes()))
        .await
        .unwrap_or(false)
}

/// A TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, HttpError> {
    let error = |file: &Path, message: String| HttpError::File {
        file: file.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(error(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| error(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| error(cert, format!("certificate and key do not fit: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
