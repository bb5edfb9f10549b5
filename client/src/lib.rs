//! edgemq-client: an MQTT client library for applications that must not lose
//! QoS 1 messages, plus the `edgemq-pub` and `edgemq-sub` command line tools.
//!
//! Built on rumqttc (3.1.1 and 5, TLS through rustls with the `ring`
//! provider). What it adds:
//! - a bounded [`outbox`] that keeps every QoS 1/2 message until the broker
//!   acknowledged it, across reconnects and broker restarts, including when
//!   the broker lost the session (where rumqttc alone drops its queue);
//! - connect options with edgemq's defaults ([`ConnectOptions`]);
//! - the decoder for the bridge's batches ([`envelope`], re-exported from
//!   the broker crate so encoder and decoder are one code).
//!
//! ```no_run
//! # async fn demo() -> Result<(), edgemq_client::ClientError> {
//! use edgemq_client::{Client, ConnectOptions, OutMessage};
//! let (client, mut events) = Client::connect(ConnectOptions::new("127.0.0.1", 1883))?;
//! client.publish(OutMessage::new("sensors/t1", 1, "21.5")).await?; // waits if the outbox is full
//! client.flush().await?; // every QoS 1 message acknowledged
//! # Ok(()) }
//! ```

pub mod cli;
mod client;
mod error;
mod link;
pub mod options;
pub mod outbox;
pub mod tls;

pub use client::{Client, Event, Events};
pub use edgemq::envelope;
pub use error::{ClientError, ConnectFailure};
pub use link::Received;
pub use options::{ConnectOptions, Protocol, Will};
pub use outbox::OutMessage;
pub use tls::TlsOptions;
