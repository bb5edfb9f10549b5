//! The byte-stream trait shared by the listeners and the bridge.
//!
//! A leaf: it imports only tokio, so the bridge (which dials out) and the
//! server (which accepts) can both name a boxed stream without importing
//! each other.

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream of any transport (TCP, TLS, a WebSocket pipe), for code
/// that picks the transport at run time: the TLS/WebSocket listeners and
/// the bridge's cloud link.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}
