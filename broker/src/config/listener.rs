//! `[[listener]]` blocks: where edgemq listens, over which transport, and
//! who may connect there.
//!
//! Each listener has its own transport (`mqtt`, `mqtts`, `ws`, `wss`), its
//! own TLS files and its own anonymous policy, so a gateway can offer
//! anonymous plain MQTT on loopback, password-protected TLS on its LAN
//! address and a secure WebSocket for dashboards at the same time.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Listener transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    Mqtt,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSocket (subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerProtocol {
    /// Does this transport run over TLS?
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerProtocol::Mqtts | ListenerProtocol::Wss)
    }

    /// Does this transport carry MQTT in WebSocket frames?
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }
}

/// One `[[listener]]` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default = "default_protocol")]
    pub protocol: ListenerProtocol,
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// TLS: the server's certificate chain (PEM), leaf first.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// TLS: the server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS: CA certificates (PEM) that client certificates must chain to.
    /// With it, clients may present a certificate; see `require_certificate`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: refuse the handshake of clients without a valid certificate.
    #[serde(default)]
    pub require_certificate: bool,
    /// TLS: the client certificate's Common Name becomes the user name (for
    /// ACLs); the CONNECT's user name and password are then ignored.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// TLS: certificate revocation lists (PEM) for client certificates;
    /// reloaded on SIGHUP with the certificates. Needs `ca_file`.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
    /// WebSocket: browser origins (`https://dash.example`) allowed to
    /// connect; see `server::websocket::OriginPolicy`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_protocol() -> ListenerProtocol {
    ListenerProtocol::Mqtt
}

impl ListenerConfig {
    /// A plain MQTT listener on `address` with the default anonymous policy.
    pub fn mqtt(address: SocketAddr) -> Self {
        ListenerConfig {
            address,
            protocol: ListenerProtocol::Mqtt,
            allow_anonymous: None,
            cert_file: None,
            key_file: None,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
            crl_file: None,
            allowed_origins: Vec::new(),
        }
    }

    /// Anonymous clients are accepted when configured so, or by default on
    /// loopback addresses only (the Mosquitto 2 rule).
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.address.ip().is_loopback())
    }

    /// Checks the TLS keys fit the transport: `(key, message)` on error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let tls = self.protocol.is_tls();
        let proto = format!("{:?}", self.protocol).to_lowercase();
        if tls {
            if self.cert_file.is_none() {
                return Err(("cert_file", format!("protocol {proto:?} needs cert_file")));
            }
            if self.key_file.is_none() {
                return Err(("key_file", format!("protocol {proto:?} needs key_file")));
            }
        } else {
            let tls_keys = [
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("crl_file", self.crl_file.is_some()),
                ("require_certificate", self.require_certificate),
                ("use_identity_as_username", self.use_identity_as_username),
            ];
            if let Some((key, _)) = tls_keys.iter().find(|(_, set)| *set) {
                return Err((key, format!("only for TLS listeners (protocol {proto:?})")));
            }
        }
        if self.crl_file.is_some() && self.ca_file.is_none() {
            return Err((
                "crl_file",
                "needs ca_file (it revokes client certificates)".into(),
            ));
        }
        if !self.protocol.is_websocket() && !self.allowed_origins.is_empty() {
            return Err((
                "allowed_origins",
                format!("only for WebSocket listeners (protocol {proto:?})"),
            ));
        }
        if (self.require_certificate || self.use_identity_as_username) && self.ca_file.is_none() {
            let key = match self.require_certificate {
                true => "require_certificate",
                false => "use_identity_as_username",
            };
            return Err((key, "needs ca_file to verify client certificates".into()));
        }
        Ok(())
    }
}
