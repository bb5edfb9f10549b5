//! Shared parts of `edgemq-pub` and `edgemq-sub`: connection flags named as
//! in mosquitto_pub/sub, exit codes, output formatting.
//!
//! Exit codes (documented in client/README.md so scripts can rely on them):
//! 0 success, 1 runtime error (message rejected, subscription refused, IO),
//! 2 bad arguments, 3 broker unreachable, 4 not authorized (credentials),
//! 5 connection refused for another reason, 6 TLS failure, 7 connection lost
//! for good, 27 `-W` timeout expired (as mosquitto_sub).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::Args;

use crate::{ConnectFailure, ConnectOptions, Event, Events, Protocol, TlsOptions};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Runtime error: message rejected, subscription refused, IO error.
pub const EXIT_ERROR: u8 = 1;
/// Bad command line arguments (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// The broker could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The broker refused the credentials.
pub const EXIT_NOT_AUTHORIZED: u8 = 4;
/// The broker refused the connection for another reason.
pub const EXIT_REFUSED: u8 = 5;
/// TLS handshake or certificate failure.
pub const EXIT_TLS: u8 = 6;
/// An established connection was lost and the tool could not finish.
pub const EXIT_LOST: u8 = 7;
/// `-W` timeout expired (same code as mosquitto_sub).
pub const EXIT_TIMEOUT: u8 = 27;

/// Connection flags common to both tools.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "localhost")]
    pub host: String,
    /// Broker port (default 1883, or 8883 with --cafile).
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// Client id (default: edgemq-PID-NANOS).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// User name.
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Keepalive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub keepalive: u64,
    /// Persistent session (clean session / clean start off); needs -i.
    #[arg(short = 'c', long = "disable-clean-session", requires = "id")]
    pub persistent: bool,
    /// Protocol version: mqttv311 (or 311) and mqttv5 (or 5).
    #[arg(short = 'V', long = "protocol-version", default_value = "mqttv311", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// CA certificate file (PEM); enables TLS.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM); needs --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM); needs --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Debug logging on stderr.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "mqttv311" | "311" | "v311" => Ok(Protocol::V311),
        "mqttv5" | "5" | "v5" => Ok(Protocol::V5),
        "mqttv31" | "31" => Err("MQTT 3.1 is not supported; use mqttv311 or mqttv5".into()),
        _ => Err(format!(
            "unknown protocol version {s:?}; use mqttv311 or mqttv5"
        )),
    }
}

impl ConnArgs {
    /// Connect options for these flags.
    pub fn options(&self) -> ConnectOptions {
        let tls = (self.cafile.is_some() || self.cert.is_some()).then(|| TlsOptions {
            ca_file: self.cafile.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
        });
        let default_port = if tls.is_some() { 8883 } else { 1883 };
        let mut o = ConnectOptions::new(&self.host, self.port.unwrap_or(default_port));
        o.client_id = self.id.clone().unwrap_or_default();
        o.protocol = self.protocol;
        o.keep_alive = Duration::from_secs(self.keepalive.max(1));
        o.clean_session = !self.persistent;
        o.username = self.username.clone();
        o.password = self.password.clone();
        o.tls = tls;
        o
    }

    /// Logs to stderr: warnings, or everything from edgemq and rumqttc with -d.
    pub fn init_tracing(&self) {
        let filter = if self.debug { "debug" } else { "warn" };
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
            )
            .try_init();
    }
}

/// Exit code for a connection failure.
pub fn failure_code(failure: &ConnectFailure) -> u8 {
    match failure {
        ConnectFailure::NotAuthorized(_) => EXIT_NOT_AUTHORIZED,
        ConnectFailure::Refused(_) => EXIT_REFUSED,
        ConnectFailure::Unreachable(_) => EXIT_UNREACHABLE,
        ConnectFailure::Tls(_) => EXIT_TLS,
        ConnectFailure::Lost(_) => EXIT_LOST,
    }
}

/// Exit code for a library error: usage for invalid input, else runtime error.
pub fn error_code(e: &crate::ClientError) -> u8 {
    use crate::ClientError as E;
    match e {
        E::InvalidTopic(_) | E::InvalidFilter(_) | E::InvalidQos(_) => EXIT_USAGE,
        E::Tls { .. } | E::TlsConfig(_) => EXIT_TLS,
        _ => EXIT_ERROR,
    }
}

/// Waits for the first CONNACK; the first failure ends the tool (a script
/// wants a prompt answer, not silent retries against a wrong host).
pub async fn wait_connected(events: &mut Events) -> Result<(), (u8, String)> {
    loop {
        match events.recv().await {
            Some(Event::Connected { .. }) => return Ok(()),
            Some(Event::Disconnected(f)) => return Err((failure_code(&f), f.to_string())),
            Some(_) => continue,
            None => return Err((EXIT_ERROR, "client closed".into())),
        }
    }
}

/// Sends DISCONNECT and waits (at most 5 s) until it is written: the
/// connection task ends and closes the event stream then.
pub async fn close(client: &crate::Client, events: &mut Events) {
    if client.disconnect().await.is_err() {
        return;
    }
    let drained = async { while events.recv().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        tracing::warn!("DISCONNECT not sent within 5 s");
    }
}

/// Prints `error: message` to stderr and returns the code.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// One message as `edgemq-sub` prints it: a received message or one
/// message unpacked from an envelope (which adds its timestamp).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Topic.
    pub topic: &'a str,
    /// QoS.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Payload.
    pub payload: &'a [u8],
    /// Gateway receive time, for envelope contents.
    pub timestamp_ms: Option<u64>,
    /// v5 user properties.
    pub user_properties: &'a [(String, String)],
}

impl<'a> From<&'a crate::Received> for Line<'a> {
    fn from(m: &'a crate::Received) -> Self {
        Line {
            topic: &m.topic,
            qos: m.qos,
            retain: m.retain,
            payload: &m.payload,
            timestamp_ms: None,
            user_properties: &m.user_properties,
        }
    }
}

impl<'a> From<&'a crate::envelope::Message> for Line<'a> {
    fn from(m: &'a crate::envelope::Message) -> Self {
        Line {
            topic: &m.topic,
            qos: m.qos,
            retain: m.retain,
            payload: &m.payload,
            timestamp_ms: Some(m.timestamp_ms),
            user_properties: &m.user_properties,
        }
    }
}

impl Line<'_> {
    /// One JSON object, for `--json`: payload as text when it is UTF-8,
    /// else `payload_b64` (the envelope's JSON convention).
    pub fn json(&self) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("topic".into(), self.topic.into());
        obj.insert("qos".into(), self.qos.into());
        obj.insert("retain".into(), self.retain.into());
        if let Some(ts) = self.timestamp_ms {
            obj.insert("timestamp_ms".into(), ts.into());
        }
        match std::str::from_utf8(self.payload) {
            Ok(text) => obj.insert("payload".into(), text.into()),
            Err(_) => obj.insert(
                "payload_b64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(self.payload)
                    .into(),
            ),
        };
        if !self.user_properties.is_empty() {
            let props: Vec<serde_json::Value> = self
                .user_properties
                .iter()
                .map(|(k, v)| serde_json::json!([k, v]))
                .collect();
            obj.insert("user_properties".into(), props.into());
        }
        serde_json::Value::Object(obj).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_line_uses_text_or_base64() {
        let line = |payload, timestamp_ms, user_properties| Line {
            topic: "a/b",
            qos: 1,
            retain: false,
            payload,
            timestamp_ms,
            user_properties,
        };
        let text = line(b"hi", None, &[]).json();
        assert_eq!(
            text,
            r#"{"payload":"hi","qos":1,"retain":false,"topic":"a/b"}"#
        );
        let props = [("k".to_string(), "v".to_string())];
        let bin = line(&[0xff], Some(5), &props).json();
        let v: serde_json::Value = serde_json::from_str(&bin).unwrap();
        assert_eq!(v["payload_b64"], "/w==");
        assert_eq!(v["timestamp_ms"], 5);
        assert_eq!(v["user_properties"], serde_json::json!([["k", "v"]]));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(parse_protocol("mqttv5").unwrap(), Protocol::V5);
        assert_eq!(parse_protocol("311").unwrap(), Protocol::V311);
        assert!(parse_protocol("mqttv31")
            .unwrap_err()
            .contains("not supported"));
    }
}
