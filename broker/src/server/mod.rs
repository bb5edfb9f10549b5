//! Listeners, admission and graceful shutdown.
//!
//! Each listener runs an accept loop; every accepted socket becomes one
//! connection task ([`crate::connection::serve`]), which is generic over
//! `AsyncRead + AsyncWrite`: TLS ([`tls`]) and WebSocket ([`websocket`])
//! listeners wrap the stream first, in the connection's own task and within
//! the connect timeout, so a slow handshake never stalls the accept loop.
//!
//! Admission, before anything is read: a socket beyond
//! `max_pending_connections` (sockets that have not logged in yet) is
//! closed at once; with `max_connections` clients logged in, a new socket
//! is read only up to its protocol level (16 bytes at most, never through
//! TLS) and refused cleanly (v5 CONNACK 0x97, 3.1.1 return code 3). Idle
//! sockets therefore never take a logged-in client's place, and memory
//! before login is bounded by `max_pending_connections` ×
//! `max_connect_size`. One address may hold at most
//! `max_pending_per_address` of the pending sockets (released at login), so
//! a single host cannot take them all. Shutdown: the accept loops stop, every
//! connection is told (v5 DISCONNECT 0x8B) and flushes, and [`Server::run`]
//! returns once all connection tasks ended or the grace period ran out.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

pub mod tls;
pub mod websocket;

use tokio::net::TcpStream;

use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::connection::{self, CertificateUser, ConnectionInfo};
use tls::{TlsAcceptorCell, TlsError};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A bound listener and its configuration.
pub struct BoundListener {
    pub listener: TcpListener,
    pub config: ListenerConfig,
    /// The TLS acceptor of `mqtts` and `wss` listeners.
    pub tls: Option<Arc<TlsAcceptorCell>>,
}

impl BoundListener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

pub use crate::transport::Transport;

/// The TLS acceptors of `listeners`, to reload on SIGHUP.
pub fn tls_acceptors(listeners: &[BoundListener]) -> Vec<Arc<TlsAcceptorCell>> {
    listeners.iter().filter_map(|l| l.tls.clone()).collect()
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A listener whose address is taken (bound) but which does not accept
/// connections yet: the broker reserves its ports before the (possibly
/// long) store recovery, so a port conflict fails fast, and listens only
/// once it can serve, so clients meanwhile get "connection refused" and
/// retry instead of waiting on a socket nobody reads.
pub struct ReservedListener {
    socket: TcpSocket,
    config: ListenerConfig,
    tls: Option<Arc<TlsAcceptorCell>>,
}

impl ReservedListener {
    /// The TLS acceptor of an `mqtts`/`wss` listener (reloaded on SIGHUP).
    pub fn tls_acceptor(&self) -> Option<Arc<TlsAcceptorCell>> {
        self.tls.clone()
    }

    /// Starts accepting connections (into the kernel's backlog).
    pub fn listen(self) -> Result<BoundListener, ServerError> {
        let address = self.config.address;
        let listener = self
            .socket
            .listen(LISTEN_BACKLOG)
            .map_err(|source| ServerError::Bind { address, source })?;
        Ok(BoundListener {
            listener,
            config: self.config,
            tls: self.tls,
        })
    }
}

/// Binds every configured listener without listening yet (and reads the
/// TLS listeners' certificates).
pub fn reserve(listeners: &[ListenerConfig]) -> Result<Vec<ReservedListener>, ServerError> {
    let mut reserved = Vec::with_capacity(listeners.len());
    for config in listeners {
        let tls = match config.protocol.is_tls() {
            true => Some(TlsAcceptorCell::new(config)?),
            false => None,
        };
        let socket = bind_socket(config.address).map_err(|source| ServerError::Bind {
            address: config.address,
            source,
        })?;
        reserved.push(ReservedListener {
            socket,
            config: config.clone(),
            tls,
        });
    }
    Ok(reserved)
}

/// Binds and listens on every configured listener.
pub async fn bind(listeners: &[ListenerConfig]) -> Result<Vec<BoundListener>, ServerError> {
    reserve(listeners)?
        .into_iter()
        .map(ReservedListener::listen)
        .collect()
}

/// Pending connections the kernel may hold for us. A connection burst
/// (thousands of devices reconnecting after a network flap) must not see
/// SYNs dropped, and retried a second later, because the accept loop was
/// briefly descheduled; std's default of 128 is too small for that.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a socket with SO_REUSEADDR (restarts do not wait for TIME_WAIT).
fn bind_socket(address: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket)
}

/// The running server: the broker plus connection accounting.
#[derive(Clone)]
pub struct Server {
    broker: Arc<Broker>,
    active: Arc<AtomicUsize>,
    /// Sockets not logged in yet, by address.
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Each connection task holds a clone; shutdown waits until all are gone.
    alive: mpsc::Sender<()>,
}

/// A connection being served: counted against max_connections, and
/// awaited by shutdown.
struct Admission {
    over_limit: bool,
    _guard: ActiveGuard,
    _alive: mpsc::Sender<()>,
}

/// One socket of `ip` that has not logged in yet; uncounted when dropped
/// (at login, or when the connection ends first).
struct PendingGuard {
    ip: IpAddr,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

/// Decrements the connection count when a connection task ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Spawns a connection task for an accepted stream of any transport.
    pub fn spawn_connection<S>(&self, stream: S, info: ConnectionInfo)
    where
        S: AsyncRead + AsyncWrite + connection::ReadReady + Unpin + Send + 'static,
    {
        let Some(admission) = self.admit() else {
            return;
        };
        let broker = self.broker.clone();
        tokio::spawn(async move {
            connection::serve(stream, info, broker, admission.over_limit).await;
            drop(admission);
        });
    }

    /// Counts a socket of `ip` that has not logged in yet; `None` when its
    /// address has max_pending_per_address of them already.
    fn pending_guard(&self, ip: IpAddr) -> Option<PendingGuard> {
        let max = self.broker.config.server.max_pending_per_address;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.entry(ip).or_insert(0);
        if *n >= max {
            crate::sys::inc(&self.broker.metrics.connections_refused);
            tracing::debug!(%ip, "closing a new socket: max_pending_per_address reached");
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            ip,
            pending: self.pending.clone(),
        })
    }

    /// Counts a new connection; the count drops with the returned value.
    /// `None`: too many sockets have not logged in yet, close this one.
    fn admit(&self) -> Option<Admission> {
        let sockets = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = ActiveGuard(self.active.clone());
        let connected = self
            .broker
            .metrics
            .clients_connected
            .load(Ordering::Relaxed);
        let connected = usize::try_from(connected).unwrap_or(usize::MAX);
        let server = &self.broker.config.server;
        if sockets.saturating_sub(connected) > server.max_pending_connections {
            crate::sys::inc(&self.broker.metrics.connections_refused);
            tracing::debug!("closing a new socket: max_pending_connections reached");
            return None;
        }
        Some(Admission {
            over_limit: connected >= server.max_connections,
            _guard: guard,
            _alive: self.alive.clone(),
        })
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Runs the accept loops until `shutdown` completes, then shuts down
    /// gracefully.
    pub async fn run(
        broker: Arc<Broker>,
        listeners: Vec<BoundListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let server = Server {
            broker: broker.clone(),
            active: Arc::new(AtomicUsize::new(0)),
            pending: Arc::new(Mutex::new(HashMap::new())),
            alive,
        };
        let mut accept_tasks = Vec::new();
        for bound in listeners {
            let server = server.clone();
            accept_tasks.push(tokio::spawn(accept_loop(server, bound)));
        }
        shutdown.await;
        tracing::info!("shutting down: closing listeners and connections");
        for task in &accept_tasks {
            task.abort();
        }
        broker.begin_shutdown();
        drop(server);
        if tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        broker.flush_wills();
    }
}

async fn accept_loop(server: Server, bound: BoundListener) {
    let anonymous_allowed = bound.config.anonymous_allowed();
    // The address actually bound, so a listener on port 0 reports its port.
    let address = bound.local_addr().unwrap_or(bound.config.address);
    tracing::info!(
        %address,
        protocol = ?bound.config.protocol,
        anonymous_allowed,
        "listening"
    );
    let plain = bound.tls.is_none() && !bound.config.protocol.is_websocket();
    loop {
        match bound.listener.accept().await {
            Ok((stream, peer)) => {
                let Some(pending) = server.pending_guard(peer.ip()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    peer,
                    anonymous_allowed,
                    certificate_user: CertificateUser::NotUsed,
                    pending: Some(Arc::new(pending)),
                };
                if plain {
                    server.spawn_connection(stream, info);
                } else if let Some(admission) = server.admit() {
                    if admission.over_limit {
                        // No TLS handshake (a server signature) for a
                        // socket that will be refused anyway.
                        continue;
                    }
                    let server = server.clone();
                    let tls = bound.tls.clone();
                    let websocket = match bound.config.protocol.is_websocket() {
                        true => Some(websocket::OriginPolicy {
                            allowed: bound.config.allowed_origins.clone(),
                            anonymous: anonymous_allowed,
                        }),
                        false => None,
                    };
                    tokio::spawn(async move {
                        upgrade(&server, stream, info, tls, websocket, admission).await;
                    });
                }
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs the TLS and/or WebSocket handshake of a new connection (bounded by
/// the connect timeout), then serves it.
async fn upgrade(
    server: &Server,
    stream: TcpStream,
    mut info: ConnectionInfo,
    tls: Option<Arc<TlsAcceptorCell>>,
    websocket: Option<websocket::OriginPolicy>,
    admission: Admission,
) {
    let broker = server.broker.clone();
    let limit = Duration::from_millis(broker.config.server.connect_timeout_ms);
    let max_packet = broker.config.limits.max_packet_size;
    let peer = info.peer;
    let span = tracing::debug_span!("handshake", peer = %peer);
    let deadline = tokio::time::Instant::now() + limit;
    let handshake = async {
        let stream: Box<dyn Transport> = match tls {
            Some(cell) => {
                let stream = tls::accept(cell.current(), stream, deadline)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                if cell.listener().use_identity_as_username {
                    let name = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(tls::common_name);
                    info.certificate_user = match name {
                        Some(name) => CertificateUser::Name(Arc::from(name)),
                        None => CertificateUser::Missing,
                    };
                }
                Box::new(stream)
            }
            None => Box::new(stream),
        };
        match websocket {
            Some(origins) => Ok::<Box<dyn Transport>, String>(Box::new(
                websocket::accept(stream, max_packet, origins).await?,
            )),
            None => Ok(stream),
        }
    };
    let stream = match tokio::time::timeout(limit, tracing::Instrument::instrument(handshake, span))
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::info!(peer = %peer, error = %e, "handshake failed"),
        Err(_) => {
            return tracing::debug!(peer = %peer, "handshake not done within the connect timeout")
        }
    };
    connection::serve(stream, info, broker, admission.over_limit).await;
    drop(admission);
}
