//! TLS for `mqtts` and `wss` listeners: rustls with the ring provider.
//!
//! Certificates and keys are PEM files read with rustls-pki-types. Client
//! certificates are verified against the listener's `ca_file` when one is
//! set (optional, or required with `require_certificate`); with
//! `use_identity_as_username` the verified certificate's Common Name is the
//! client's user name, as in Mosquitto.
//!
//! Certificates expire and get renewed: [`TlsAcceptorCell::reload`] (called
//! on SIGHUP) re-reads the files and swaps the acceptor. Handshakes already
//! done, and so every open connection, are unaffected; a reload that fails
//! keeps the previous certificate and says why.
//!
//! Handshakes run off the broker's worker threads ([`accept`]): the
//! signature of a handshake is CPU work (about 1 ms for RSA 2048 on a Pi 4),
//! and 50 of them at once would stall every client served by the single
//! default worker. One dedicated thread (`edgemq-tls`, a current-thread
//! runtime) does all handshakes; each is bounded by the connect-timeout
//! deadline there too, so a stalled ClientHello holds only its socket until
//! then (handshakes in progress are bounded by `max_connections`). The
//! finished stream goes back to the worker, which does the record layer.

use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::ListenerConfig;

/// Errors building a listener's TLS configuration; they name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener {listener}: {file}: {message}")]
    File {
        listener: String,
        file: String,
        message: String,
    },
    #[error("listener {listener}: {message}")]
    Config { listener: String, message: String },
}

/// A listener's current acceptor, replaceable while the listener runs.
pub struct TlsAcceptorCell {
    config: ListenerConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl TlsAcceptorCell {
    /// Reads the listener's certificate files.
    pub fn new(config: &ListenerConfig) -> Result<Arc<Self>, TlsError> {
        let acceptor = build_acceptor(config)?;
        Ok(Arc::new(TlsAcceptorCell {
            config: config.clone(),
            acceptor: RwLock::new(acceptor),
        }))
    }

    /// The acceptor for the next handshake.
    pub fn current(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; on error the previous acceptor stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build_acceptor(&self.config)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        Ok(())
    }

    /// The listener this acceptor serves.
    pub fn listener(&self) -> &ListenerConfig {
        &self.config
    }
}

/// The handshake thread's runtime (`None` if it could not be started: then
/// handshakes run where they are awaited, as before).
fn handshake_runtime() -> Option<Handle> {
    static RUNTIME: OnceLock<Option<Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("edgemq-tls".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// Runs the server side of a TLS handshake on the handshake thread, within
/// `deadline`; the socket stays registered with the caller's runtime.
pub async fn accept(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    deadline: tokio::time::Instant,
) -> std::io::Result<TlsStream<TcpStream>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
    let handshake = async move {
        tokio::time::timeout_at(deadline, acceptor.accept(stream))
            .await
            .map_err(|_| timed_out())?
    };
    match handshake_runtime() {
        Some(runtime) => runtime
            .spawn(handshake)
            .await
            .map_err(std::io::Error::other)?,
        None => handshake.await,
    }
}

fn build_acceptor(config: &ListenerConfig) -> Result<TlsAcceptor, TlsError> {
    let listener = config.address.to_string();
    let config_error = |message: String| TlsError::Config {
        listener: listener.clone(),
        message,
    };
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(config_error("cert_file and key_file are required".into()));
    };
    let chain = read_certificates(&listener, cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
        listener: listener.clone(),
        file: key_file.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match &config.ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(&listener, ca_file)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    listener: listener.clone(),
                    file: ca_file.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crl_file) = &config.crl_file {
                let crls = CertificateRevocationListDer::pem_file_iter(crl_file)
                    .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsError::File {
                        listener: listener.clone(),
                        file: crl_file.display().to_string(),
                        message: e.to_string(),
                    })?;
                verifier = verifier.with_crls(crls);
            }
            let verifier = match config.require_certificate {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| config_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // No ALPN list: rustls would refuse clients that offer other protocol
    // names, and MQTT clients rarely agree on one.
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_certificates(
    listener: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |message: String| TlsError::File {
        listener: listener.to_string(),
        file: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The Common Name of a (verified) client certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(name)
}
