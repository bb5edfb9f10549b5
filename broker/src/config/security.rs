//! Security checks of a configuration that are warnings, not errors, and
//! the redacted `Debug` of bridge blocks.
//!
//! Invariants: [`Config::security_warnings`] never fails a configuration
//! (Mosquitto-style setups stay valid); `edgemq check-config` prints every
//! warning and the broker logs them at start. A bridge's password never
//! appears in any `Debug` output (`{:?}` of a `Config` shows `<redacted>`).

use std::fmt;

use super::bridge::BridgeConfig;
use super::Config;

impl Config {
    /// What an operator should know about this configuration's exposure.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let acl = self.auth.acl_file.is_some();
        for l in &self.listeners {
            if l.address.ip().is_loopback() {
                continue;
            }
            if l.anonymous_allowed() {
                out.push(format!(
                    "listener {}: anonymous clients accepted on a non-loopback address{}",
                    l.address,
                    match acl {
                        true => "",
                        false => " with no acl_file: any host can read and write every topic",
                    }
                ));
            }
            if !l.protocol.is_tls() && self.auth.password_file.is_some() {
                out.push(format!(
                    "listener {}: passwords travel in plaintext (protocol {:?}, not TLS)",
                    l.address, l.protocol
                ));
            }
        }
        if self.auth.client_id_binding != super::auth::ClientIdBinding::None
            && self.auth.password_file.is_none()
            && !self.listeners.iter().any(|l| l.use_identity_as_username)
        {
            out.push(
                "client_id_binding without password_file or certificate user names: \
                 nothing verifies the user names it binds to"
                    .to_string(),
            );
        }
        if let Some(addr) = self.http.effective_listen(&self.metrics) {
            let open = self.http.password_file.is_none();
            let plain = self.http.cert_file.is_none();
            if !addr.ip().is_loopback() && (open || plain) {
                out.push(format!(
                    "http on {addr}: {}, and it tells client ids, addresses and bridge names",
                    match (open, plain) {
                        (true, true) => "unauthenticated, plaintext",
                        (true, false) => "unauthenticated",
                        _ => "plaintext (basic auth passwords travel in clear)",
                    }
                ));
            }
        }
        for b in &self.bridges {
            if b.password.is_some() && b.tls.is_none() {
                out.push(format!(
                    "bridge {:?}: the password is sent without TLS (no [bridge.tls])",
                    b.name
                ));
            }
            for d in &b.downlinks {
                let first = d.filter.split('/').next().unwrap_or_default();
                if first == "#" || first == "+" {
                    out.push(format!(
                        "bridge {:?}: downlink filter {:?} lets the cloud write almost any local topic",
                        b.name, d.filter
                    ));
                }
            }
        }
        out
    }
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("keepalive_secs", &self.keepalive_secs)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("batch", &self.batch)
            .field("forwards", &self.forwards)
            .field("downlinks", &self.downlinks)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("max_inflight", &self.max_inflight)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("orphan_lanes", &self.orphan_lanes)
            .field("max_stored_messages", &self.max_stored_messages)
            .field("max_stored_bytes", &self.max_stored_bytes)
            .field("overflow", &self.overflow)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bridge_passwords_are_redacted_and_exposure_is_warned_about() {
        let text = r##"
[[listener]]
address = "0.0.0.0:1883"
allow_anonymous = true
[[bridge]]
name = "cloud"
address = "cloud.example.com:1883"
client_id = "gw"
username = "gw"
password = "hunter2-cloud"
[[bridge.downlink]]
filter = "#"
"##;
        let config = Config::from_toml(text, "t.toml").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2-cloud"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let w = config.security_warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("anonymous") && w[0].contains("no acl_file"));
        assert!(w[1].contains("without TLS"));
        assert!(w[2].contains("downlink filter"));
        assert!(Config::default().security_warnings().is_empty());
    }
}
