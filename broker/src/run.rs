//! The library entry point: [`run`] wires and serves a broker from a
//! [`Config`] until `shutdown` completes. The `edgemq` binary calls it
//! after parsing its command line, so a test that runs the broker in
//! process wires it exactly as the binary does.
//!
//! Order (each step an invariant the tests rely on):
//! 1. the listener ports are reserved first, so a port conflict fails
//!    before the store is recovered;
//! 2. the store is opened and recovered, the sessions restored, then the
//!    bridges and the `$SYS`/metrics tasks start;
//! 3. only then do the listeners accept connections (`/healthz` answers
//!    only once the store is recovered);
//! 4. after `shutdown` the server closes every connection and the store is
//!    flushed before `run` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::AuthError;
use crate::bridge::BridgeStats;
use crate::broker::durable::{self, DurableStore};
use crate::broker::Broker;
use crate::config::Config;
use crate::hooks::{MemoryOnly, Persistence};
use crate::server::{self, ServerError};
use crate::storage::{StorageConfig, StoreError, StoreHandle, SyncMode};
use crate::sys;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be reserved or opened.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The `[http] listen` (or `[metrics] listen`) address could not be bound.
    #[error("cannot bind the http listener {0}: {1}")]
    MetricsBind(SocketAddr, std::io::Error),
    /// The `[http]` password or TLS files could not be loaded.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The password or ACL file could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store could not be opened or recovered (its directory).
    #[error("cannot open the store in {0}: {1}")]
    OpenStore(String, StoreError),
    /// Sessions could not be restored from the store.
    #[error("cannot restore durable state: {0}")]
    Restore(StoreError),
}

/// Serves a broker configured by `config` until `shutdown` completes, then
/// closes every connection and flushes the store. Must run inside a tokio
/// runtime (the binary sizes it with `config.worker_threads()`).
pub async fn run(config: Arc<Config>, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    // Ports are taken now (a conflict fails before the store recovery) but
    // accept connections only once the broker can serve them.
    let reserved = server::reserve(&config.listeners)?;
    let metrics_listener = match config.http.effective_listen(&config.metrics) {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::MetricsBind(addr, e))?,
        ),
        None => None,
    };
    let http_users = match &config.http.password_file {
        Some(path) => Some(Arc::new(crate::http::HttpUsers::load(path)?)),
        None => None,
    };
    let store = open_store(&config.storage)?;
    let persistence: Arc<dyn Persistence> = match &store {
        Some(handle) => Arc::new(DurableStore::new(handle.clone())),
        None => Arc::new(MemoryOnly),
    };
    let auth = Arc::new(crate::auth::FileAuth::load(&config.auth)?);
    let tls_cells = reserved.iter().filter_map(|r| r.tls_acceptor()).collect();
    spawn_reload_on_sighup(auth.clone(), tls_cells);
    let broker = Broker::new(config.clone(), persistence, auth);
    if let Some(handle) = &store {
        let restored = durable::restore(&broker, handle)
            .await
            .map_err(RunError::Restore)?;
        tracing::info!(
            sessions = restored.sessions,
            messages = restored.messages,
            retained = restored.retained,
            expired_sessions = restored.expired,
            "restored durable state"
        );
    }
    if !config.bridges.is_empty() && store.is_none() {
        tracing::warn!("bridges with durability = \"memory\": their lanes are not persisted");
    }
    let bridges = crate::bridge::start(&broker, &config.bridges).await;
    spawn_observability(
        &broker,
        &config,
        &store,
        bridges,
        metrics_listener.map(|l| (l, http_users)),
    )?;
    let listeners = reserved
        .into_iter()
        .map(server::ReservedListener::listen)
        .collect::<Result<Vec<_>, _>>()?;
    // The addresses actually bound, in configuration order: a listener on
    // port 0 reports its port here (the test harness reads this line).
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap_or(l.config.address).to_string())
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listeners = %addresses.join(","),
        "edgemq started"
    );
    server::Server::run(broker, listeners, shutdown).await;
    // Acks, the session saves of the connections just closed and the wills
    // just published are queued to the store thread: make them durable
    // before the process exits (M3).
    if let Some(handle) = &store {
        match handle.flush().await {
            Ok(()) => tracing::info!("store flushed"),
            Err(e) => tracing::error!(error = %e, "final store flush failed"),
        }
    }
    tracing::info!("edgemq stopped");
    Ok(())
}

/// Starts the `$SYS` publisher and the HTTP endpoint (each when
/// configured), both fed by the store's and the bridges' statistics.
fn spawn_observability(
    broker: &Arc<Broker>,
    config: &Config,
    store: &Option<StoreHandle>,
    bridges: Vec<Arc<BridgeStats>>,
    http: Option<(tokio::net::TcpListener, Option<Arc<crate::http::HttpUsers>>)>,
) -> Result<(), RunError> {
    let bridges = Arc::new(bridges);
    let bridges_for_sys = bridges.clone();
    let store_for_sys = store.clone();
    let extra: sys::ExtraTopics = Arc::new(move || {
        let mut topics = store_for_sys
            .as_ref()
            .map(|s| s.stats().sys_topics())
            .unwrap_or_default();
        topics.extend(bridges_for_sys.iter().flat_map(|b| b.sys_topics()));
        topics
    });
    if config.sys.interval_secs > 0 {
        let interval = std::time::Duration::from_secs(config.sys.interval_secs);
        tokio::spawn(sys::run(broker.clone(), interval, extra.clone()));
    }
    if let Some((listener, users)) = http {
        // Served only now: /healthz answers once the store is recovered.
        let (store_h, store_s) = (store.clone(), store.clone());
        let state = crate::http::HttpState {
            broker: broker.clone(),
            extra,
            histogram: Arc::new(move || store_h.as_ref().map(|s| s.stats().sync_latency)),
            bridges: Arc::new(move || bridges.iter().flat_map(|b| b.sys_topics()).collect()),
            store: Arc::new(move || {
                store_s
                    .as_ref()
                    .map(|s| s.stats().sys_topics())
                    .unwrap_or_default()
            }),
            users,
            max_page_size: config.http.max_page_size,
        };
        crate::http::serve(listener, Arc::new(state), &config.http)?;
    }
    Ok(())
}

/// SIGHUP re-reads the password and ACL files and the TLS listeners'
/// certificates (a failed reload keeps the previous ones; open connections
/// are not touched).
fn spawn_reload_on_sighup(
    auth: Arc<crate::auth::FileAuth>,
    tls: Vec<Arc<server::tls::TlsAcceptorCell>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match auth.reload() {
                        Ok(()) => tracing::info!("SIGHUP: password and ACL files reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGHUP: reload failed; keeping the previous files")
                        }
                    }
                    for cell in &tls {
                        let address = cell.listener().address;
                        match cell.reload() {
                            Ok(()) => tracing::info!(%address, "SIGHUP: TLS certificate reloaded"),
                            Err(e) => tracing::error!(
                                error = %e,
                                "SIGHUP: TLS reload failed; keeping the previous certificate"
                            ),
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
}

/// Opens and recovers the durable store, unless `durability = "memory"`.
fn open_store(config: &StorageConfig) -> Result<Option<StoreHandle>, RunError> {
    if config.durability == SyncMode::Memory {
        tracing::info!("durability = memory: nothing is persisted");
        return Ok(None);
    }
    let (handle, report) = StoreHandle::open(config)
        .map_err(|e| RunError::OpenStore(config.dir.display().to_string(), e))?;
    tracing::info!(
        dir = %config.dir.display(),
        segments = report.segments,
        records = report.records,
        torn_segments = report.torn_segments,
        messages = report.messages,
        retained = report.retained,
        sessions = report.sessions,
        millis = report.millis,
        "store recovered"
    );
    Ok(Some(handle))
}
