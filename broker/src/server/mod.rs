//! Listeners, admission and graceful shutdown.
//!
//! Each listener runs an accept loop; every accepted socket becomes one
//! connection task ([`crate::connection::serve`]), which is generic over
//! `AsyncRead + AsyncWrite` so TLS and WebSocket transports only need to
//! wrap the stream and call [`Server::spawn_connection`].
//!
//! Admission: beyond `max_connections` the connection is still read up to
//! its CONNECT so it can be refused cleanly (v5 CONNACK 0x97, 3.1.1 return
//! code 3) instead of being reset. Shutdown: the accept loops stop, every
//! connection is told (v5 DISCONNECT 0x8B) and flushes, and [`Server::run`]
//! returns once all connection tasks ended or the grace period ran out.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::config::{ListenerConfig, ListenerProtocol};
use crate::connection::{self, ConnectionInfo};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A bound listener and its configuration.
pub struct BoundListener {
    pub listener: TcpListener,
    pub config: ListenerConfig,
}

impl BoundListener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds every configured listener.
pub async fn bind(listeners: &[ListenerConfig]) -> Result<Vec<BoundListener>, ServerError> {
    let mut bound = Vec::with_capacity(listeners.len());
    for config in listeners {
        match config.protocol {
            ListenerProtocol::Mqtt => {}
        }
        let listener = listen(config.address).map_err(|source| ServerError::Bind {
            address: config.address,
            source,
        })?;
        bound.push(BoundListener {
            listener,
            config: config.clone(),
        });
    }
    Ok(bound)
}

/// Pending connections the kernel may hold for us. A connection burst
/// (thousands of devices reconnecting after a network flap) must not see
/// SYNs dropped, and retried a second later, because the accept loop was
/// briefly descheduled; std's default of 128 is too small for that.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with SO_REUSEADDR (restarts do not wait for
/// TIME_WAIT) and a deep accept backlog.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The running server: the broker plus connection accounting.
#[derive(Clone)]
pub struct Server {
    broker: Arc<Broker>,
    active: Arc<AtomicUsize>,
    /// Each connection task holds a clone; shutdown waits until all are gone.
    alive: mpsc::Sender<()>,
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
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let count = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        let over_limit = count > self.broker.config.server.max_connections;
        let guard = ActiveGuard(self.active.clone());
        let alive = self.alive.clone();
        let broker = self.broker.clone();
        tokio::spawn(async move {
            connection::serve(stream, info, broker, over_limit).await;
            drop(guard);
            drop(alive);
        });
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
    tracing::info!(address = %bound.config.address, anonymous_allowed, "listening");
    loop {
        match bound.listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    peer,
                    anonymous_allowed,
                };
                server.spawn_connection(stream, info);
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
