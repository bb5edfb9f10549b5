//! edgemq: a small, fast MQTT 3.1.1 and 5.0 broker for ARM edge gateways.
//!
//! The crate is both the `edgemq` binary and a library, so the end-to-end
//! tests, the client tools and the benchmarks can share its codec and its
//! formats. The module tree follows the data flow of `DESIGN.md` section 3:
//! bytes come in through `server` and `connection`, are decoded by
//! `protocol`, tracked by `session`, fanned out by `router`, made durable by
//! `storage` and forwarded to the cloud by `bridge`.

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod hooks;
pub mod http;
pub mod import;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod storage;
pub mod sys;
