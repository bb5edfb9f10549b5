//! edgemq: a small, fast MQTT 3.1.1 and 5.0 broker for ARM edge gateways.
//!
//! The crate is both the `edgemq` binary and a library, so the end-to-end
//! tests, the client tools and the benchmarks can share its codec and its
//! formats. Bytes come in through `server` and `connection`, are decoded by
//! `protocol`, tracked by `session`, fanned out by `router`, made durable by
//! `storage` (through `broker::durable`) and forwarded to the cloud by
//! `bridge`.
//!
//! The modules form layers that only import downwards (checked by
//! `scripts/check-layers.py`; docs/ARCHITECTURE.md explains each), bottom
//! first:
//!
//! 0. `protocol`, `framed`, `envelope`, `storage`, `transport`: the codec,
//!    the one reader of whole packets from a stream, the batch format, the
//!    flash store, the byte-stream trait;
//! 1. `message`, `config`: the values every layer passes around, and the
//!    configuration types;
//! 2. `session`: per-client state and the bounded mailbox;
//! 3. `router`, `hooks`, `counters`: fan-out, the persistence and
//!    authentication seams, the counters;
//! 4. `auth`: the file authenticator;
//! 5. `broker`: the shared state and its verbs, the store adapter;
//! 6. `policy`: may this client publish or subscribe;
//! 7. `bridge`, then 8. `connection`: the cloud link and the client tasks;
//! 9. `server`, `sys`, then 10. `metrics`: listeners and observability;
//! 11. `http`, `import`: the operator's HTTP endpoint (metrics, JSON API,
//!     status page) and the mosquitto.conf importer;
//! 12. `run`: the entry point that wires all of them (the binary calls it).
//!
//! Without the default `broker` feature only the layer-0 codec is built
//! (`protocol`, `framed`, `envelope`): what the client and firmware-sim use.

#[cfg(feature = "broker")]
pub mod auth;
#[cfg(feature = "broker")]
pub mod bridge;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "broker")]
pub mod config;
#[cfg(feature = "broker")]
pub mod connection;
#[cfg(feature = "broker")]
pub mod counters;
pub mod envelope;
pub mod framed;
#[cfg(feature = "broker")]
pub mod hooks;
#[cfg(feature = "broker")]
pub mod http;
#[cfg(feature = "broker")]
pub mod import;
#[cfg(feature = "broker")]
pub mod message;
#[cfg(feature = "broker")]
pub mod message_age;
#[cfg(feature = "broker")]
pub mod metrics;
#[cfg(feature = "broker")]
pub mod policy;
pub mod protocol;
#[cfg(feature = "broker")]
pub mod router;
#[cfg(feature = "broker")]
pub mod run;
#[cfg(feature = "broker")]
pub mod server;
#[cfg(feature = "broker")]
pub mod session;
#[cfg(feature = "broker")]
pub mod storage;
#[cfg(feature = "broker")]
pub mod sys;
#[cfg(feature = "broker")]
pub mod transport;

#[cfg(feature = "broker")]
pub use run::{run, RunError};
