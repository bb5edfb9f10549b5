//! `edgemq import-mosquitto`: a mosquitto.conf translated to edgemq TOML.
//!
//! Translated: `listener`/`port`/`bind_address`, `protocol websockets`,
//! `certfile`/`keyfile`/`cafile`, `require_certificate`,
//! `use_identity_as_username`, `allow_anonymous`, `password_file`,
//! `acl_file`, `max_queued_messages`, `max_inflight_messages`,
//! `persistent_client_expiration`, `max_keepalive`, `max_packet_size`,
//! `persistence`/`persistence_location`, and `connection` bridge blocks
//! (`address`, `topic`, `remote_clientid`, `remote_username`,
//! `remote_password`, `keepalive_interval`, `bridge_protocol_version`,
//! `bridge_cafile`/`bridge_certfile`/`bridge_keyfile`).
//!
//! Invariants: every option that is not translated is reported once with
//! its line and a reason (never silently dropped); the output is valid TOML
//! (strings are escaped by the `toml` crate) whose keys all exist in
//! edgemq's configuration; nothing panics on any input.

use std::fmt::Write as _;

/// A mosquitto option the translation could not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub option: String,
    pub reason: String,
}

/// The translation: TOML text and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    pub toml: String,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Default)]
struct Listener {
    port: String,
    bind: Option<String>,
    websockets: bool,
    cert_file: Option<String>,
    key_file: Option<String>,
    ca_file: Option<String>,
    require_certificate: Option<bool>,
    use_identity_as_username: Option<bool>,
    allow_anonymous: Option<bool>,
}

#[derive(Debug, Default)]
struct Bridge {
    name: String,
    address: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    keepalive: Option<String>,
    protocol: Option<&'static str>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    /// (filter, remote_prefix, qos)
    forwards: Vec<(String, String, u8)>,
    /// (filter, strip_prefix, qos)
    downlinks: Vec<(String, String, u8)>,
}

#[derive(Debug, Default)]
struct State {
    listeners: Vec<Listener>,
    /// `port` / `bind_address`: the default listener (Mosquitto 1.x style).
    default_listener: Option<Listener>,
    in_bridge: bool,
    bridges: Vec<Bridge>,
    allow_anonymous: Option<bool>,
    auth: Vec<(&'static str, String)>,
    limits: Vec<(&'static str, u64)>,
    storage: Vec<(&'static str, String)>,
    skipped: Vec<Skipped>,
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn boolean(value: &str) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `persistent_client_expiration`: `<n><h|d|w|m|y>` in seconds.
fn duration_secs(value: &str) -> Option<u64> {
    let unit = value.chars().last()?;
    let n: u64 = value.get(..value.len().checked_sub(1)?)?.parse().ok()?;
    let per = match unit {
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        'm' => 2_592_000,
        'y' => 31_536_000,
        _ => return None,
    };
    n.checked_mul(per)
}

/// Translates the text of a mosquitto.conf.
pub fn translate(text: &str) -> Translation {
    let mut s = State::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index.saturating_add(1);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = trimmed
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((trimmed, ""));
        option(&mut s, line, key, value);
    }
    Translation {
        toml: render(&s),
        skipped: s.skipped,
    }
}

fn skip(s: &mut State, line: usize, option: &str, reason: &str) {
    s.skipped.push(Skipped {
        line,
        option: option.to_string(),
        reason: reason.to_string(),
    });
}

/// The listener the listener options apply to now.
fn current_listener(s: &mut State) -> &mut Listener {
    if s.listeners.is_empty() {
        return s.default_listener.get_or_insert_with(|| Listener {
            port: "1883".into(),
            ..Listener::default()
        });
    }
    let last = s.listeners.len() - 1;
    &mut s.listeners[last]
}

fn option(s: &mut State, line: usize, key: &str, value: &str) {
    let as_bool = boolean(value);
    match key {
        "listener" => {
            s.in_bridge = false;
            let mut parts = value.split_whitespace();
            let port = parts.next().unwrap_or("1883").to_string();
            if port.parse::<u16>().is_err() {
                return skip(
                    s,
                    line,
                    key,
                    "unix sockets (port 0 + path) are not supported",
                );
            }
            s.listeners.push(Listener {
                port,
                bind: parts.next().map(str::to_string),
                ..Listener::default()
            });
        }
        "port" => match value.parse::<u16>() {
            Ok(_) => current_listener(s).port = value.to_string(),
            Err(_) => skip(s, line, key, "not a port number"),
        },
        "bind_address" => current_listener(s).bind = Some(value.to_string()),
        "protocol" => match value {
            "websockets" => current_listener(s).websockets = true,
            "mqtt" => {}
            _ => skip(s, line, key, "only mqtt and websockets listeners exist"),
        },
        "certfile" => current_listener(s).cert_file = Some(value.to_string()),
        "keyfile" => current_listener(s).key_file = Some(value.to_string()),
        "cafile" => current_listener(s).ca_file = Some(value.to_string()),
        "require_certificate" | "use_identity_as_username" | "allow_anonymous"
            if as_bool.is_none() =>
        {
            skip(s, line, key, "not true or false")
        }
        "require_certificate" => current_listener(s).require_certificate = as_bool,
        "use_identity_as_username" => current_listener(s).use_identity_as_username = as_bool,
        "allow_anonymous" => s.allow_anonymous = as_bool,
        "password_file" => s.auth.push(("password_file", value.to_string())),
        "acl_file" => s.auth.push(("acl_file", value.to_string())),
        "max_queued_messages" | "max_inflight_messages" | "max_keepalive" | "max_packet_size" => {
            limit(s, line, key, value)
        }
        "persistent_client_expiration" => match duration_secs(value) {
            Some(secs) => s
                .limits
                .push(("max_session_expiry", secs.min(u64::from(u32::MAX)))),
            None => skip(s, line, key, "not a duration like 14d"),
        },
        "persistence" => {
            if as_bool == Some(false) {
                s.storage.push(("durability", "memory".into()));
            }
        }
        "persistence_location" => s.storage.push(("dir", value.to_string())),
        "connection" => {
            s.in_bridge = true;
            s.bridges.push(Bridge {
                name: value.to_string(),
                ..Bridge::default()
            });
        }
        _ if s.in_bridge => bridge_option(s, line, key, value),
        _ => skip(s, line, key, reason_for(key)),
    }
}

fn limit(s: &mut State, line: usize, key: &str, value: &str) {
    let Ok(n) = value.parse::<u64>() else {
        return skip(s, line, key, "not a number");
    };
    let (edgemq_key, max) = match key {
        "max_queued_messages" => ("max_queued_messages", u64::MAX),
        "max_inflight_messages" => ("max_inflight", u64::from(u16::MAX)),
        "max_keepalive" => ("max_keepalive", u64::from(u16::MAX)),
        _ => ("max_packet_size", u64::from(u32::MAX)),
    };
    if n == 0 && key != "max_keepalive" {
        return skip(
            s,
            line,
            key,
            "0 (unlimited) has no edgemq equivalent: every queue is bounded; the default stays",
        );
    }
    s.limits.push((edgemq_key, n.min(max)));
}

fn bridge_option(s: &mut State, line: usize, key: &str, value: &str) {
    let Some(b) = s.bridges.last_mut() else {
        return;
    };
    match key {
        "address" | "addresses" => {
            let first = value.split_whitespace().next().unwrap_or("");
            let address = match first.contains(':') {
                true => first.to_string(),
                false => format!("{first}:1883"),
            };
            b.address = Some(address);
            if value.split_whitespace().count() > 1 {
                skip(
                    s,
                    line,
                    key,
                    "only the first address is used (no failover list)",
                );
            }
        }
        "remote_clientid" | "clientid" => b.client_id = Some(value.to_string()),
        "remote_username" => b.username = Some(value.to_string()),
        "remote_password" => b.password = Some(value.to_string()),
        "keepalive_interval" => b.keepalive = Some(value.to_string()),
        "bridge_protocol_version" => match value {
            "mqttv50" => b.protocol = Some("v5"),
            "mqttv311" => b.protocol = Some("v311"),
            _ => skip(s, line, key, "only mqttv311 and mqttv50 are supported"),
        },
        "bridge_cafile" => b.ca_file = Some(value.to_string()),
        "bridge_certfile" => b.cert_file = Some(value.to_string()),
        "bridge_keyfile" => b.key_file = Some(value.to_string()),
        "topic" => bridge_topic(s, line, value),
        "cleansession" | "local_cleansession" => skip(
            s,
            line,
            key,
            "edgemq bridges always keep their sessions and store their lanes",
        ),
        _ => skip(s, line, key, "bridge option without an edgemq equivalent"),
    }
}

/// `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]`.
fn bridge_topic(s: &mut State, line: usize, value: &str) {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let pattern = parts.first().copied().unwrap_or("");
    let direction = parts.get(1).copied().unwrap_or("out");
    let qos = parts.get(2).and_then(|q| q.parse::<u8>().ok()).unwrap_or(0);
    let unquote = |p: Option<&&str>| {
        p.map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (local, remote) = (unquote(parts.get(3)), unquote(parts.get(4)));
    if pattern.is_empty() || qos > 2 || !matches!(direction, "out" | "in" | "both") {
        return skip(s, line, "topic", "malformed topic line");
    }
    if !local.is_empty() {
        return skip(
            s,
            line,
            "topic",
            "a local prefix (rewriting local topics) has no edgemq equivalent",
        );
    }
    let Some(b) = s.bridges.last_mut() else {
        return;
    };
    if direction != "in" {
        b.forwards.push((pattern.to_string(), remote.clone(), qos));
    }
    if direction != "out" {
        b.downlinks
            .push((format!("{remote}{pattern}"), remote, qos));
    }
}

fn reason_for(key: &str) -> &'static str {
    match key {
        "log_dest"
        | "log_type"
        | "log_timestamp"
        | "log_timestamp_format"
        | "connection_messages" => {
            "edgemq logs to stderr (the journal under systemd); set [log] level"
        }
        "user" => "the systemd unit runs edgemq as user edgemq",
        "pid_file" => "edgemq runs in the foreground under systemd: no pid file",
        "autosave_interval" | "autosave_on_changes" | "persistence_file" => {
            "edgemq writes every change to its store as it happens ([storage] durability)"
        }
        "include_dir" => "included files are not followed: translate each and merge them",
        "per_listener_settings" => {
            "auth is global in edgemq ([auth]); allow_anonymous is per listener"
        }
        "sys_interval" => "set [sys] interval_secs",
        "psk_file" | "psk_hint" => "TLS-PSK is not supported: use certificates",
        "plugin" | "auth_plugin" | "plugin_opt" => "plugins are not supported",
        _ => "no edgemq equivalent",
    }
}

fn render(s: &State) -> String {
    let mut out = String::from(
        "# Translated from a mosquitto.conf by `edgemq import-mosquitto`.\n\
         # Check it with `edgemq check-config FILE`; see `edgemq --print-default-config`.\n",
    );
    let listeners: Vec<&Listener> = match (&s.default_listener, s.listeners.is_empty()) {
        (Some(d), _) => std::iter::once(d).chain(s.listeners.iter()).collect(),
        (None, _) => s.listeners.iter().collect(),
    };
    if listeners.is_empty() {
        out.push_str(
            "# No listener in the mosquitto.conf: edgemq's default, 127.0.0.1:1883\n\
             # (loopback only, as Mosquitto 2 without a listener).\n",
        );
    }
    for l in &listeners {
        let tls = l.cert_file.is_some();
        let protocol = match (l.websockets, tls) {
            (false, false) => "mqtt",
            (false, true) => "mqtts",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let bind = l.bind.as_deref().unwrap_or("0.0.0.0");
        let address = match bind.contains(':') {
            true => format!("[{bind}]:{}", l.port),
            false => format!("{bind}:{}", l.port),
        };
        let _ = writeln!(out, "\n[[listener]]\naddress = {}", q(&address));
        let _ = writeln!(out, "protocol = {}", q(protocol));
        // Mosquitto 2 refuses anonymous clients unless allowed.
        let _ = writeln!(
            out,
            "allow_anonymous = {}",
            l.allow_anonymous.or(s.allow_anonymous).unwrap_or(false)
        );
        for (k, v) in [
            ("cert_file", &l.cert_file),
            ("key_file", &l.key_file),
            ("ca_file", &l.ca_file),
        ] {
            if let Some(v) = v {
                let _ = writeln!(out, "{k} = {}", q(v));
            }
        }
        for (k, v) in [
            ("require_certificate", l.require_certificate),
            ("use_identity_as_username", l.use_identity_as_username),
        ] {
            if let Some(v) = v {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
    }
    if !s.limits.is_empty() {
        out.push_str("\n[limits]\n");
        for (k, v) in &s.limits {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
    if !s.storage.is_empty() {
        out.push_str("\n[storage]\n");
        for (k, v) in &s.storage {
            let _ = writeln!(out, "{k} = {}", q(v));
        }
    }
    if !s.auth.is_empty() {
        out.push_str("\n[auth]\n");
        for (k, v) in &s.auth {
            let _ = writeln!(out, "{k} = {}", q(v));
        }
    }
    for b in &s.bridges {
        render_bridge(&mut out, b);
    }
    out
}

fn render_bridge(out: &mut String, b: &Bridge) {
    let _ = writeln!(out, "\n[[bridge]]\nname = {}", q(&b.name));
    let address = b.address.clone().unwrap_or_else(|| "127.0.0.1:1883".into());
    let _ = writeln!(out, "address = {}", q(&address));
    let client_id = b
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgemq.{}", b.name));
    let _ = writeln!(out, "client_id = {}", q(&client_id));
    if let Some(p) = b.protocol {
        let _ = writeln!(out, "protocol = {}", q(p));
    }
    if let Some(k) = b.keepalive.as_ref().and_then(|k| k.parse::<u16>().ok()) {
        let _ = writeln!(out, "keepalive_secs = {k}");
    }
    for (k, v) in [("username", &b.username), ("password", &b.password)] {
        if let Some(v) = v {
            let _ = writeln!(out, "{k} = {}", q(v));
        }
    }
    if let Some(ca) = &b.ca_file {
        let _ = writeln!(out, "[bridge.tls]\nca_file = {}", q(ca));
        for (k, v) in [("cert_file", &b.cert_file), ("key_file", &b.key_file)] {
            if let Some(v) = v {
                let _ = writeln!(out, "{k} = {}", q(v));
            }
        }
    }
    for (filter, prefix, qos) in &b.forwards {
        let _ = writeln!(
            out,
            "[[bridge.forward]]\nfilter = {}\nremote_prefix = {}\nqos = {qos}",
            q(filter),
            q(prefix)
        );
    }
    for (filter, strip, qos) in &b.downlinks {
        let _ = writeln!(
            out,
            "[[bridge.downlink]]\nfilter = {}\nstrip_prefix = {}\nqos = {qos}",
            q(filter),
            q(strip)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{duration_secs, translate};

    #[test]
    fn every_untranslated_option_is_reported_with_its_line() {
        let t = translate("log_dest syslog\nlistener 1883\nfoo bar\nmax_queued_messages 0\n");
        let lines: Vec<(usize, &str)> = t
            .skipped
            .iter()
            .map(|s| (s.line, s.option.as_str()))
            .collect();
        assert_eq!(
            lines,
            [(1, "log_dest"), (3, "foo"), (4, "max_queued_messages")]
        );
        assert!(t.toml.contains("address = \"0.0.0.0:1883\""), "{}", t.toml);
    }

    #[test]
    fn durations_and_garbage() {
        assert_eq!(duration_secs("14d"), Some(14 * 86_400));
        assert_eq!(duration_secs("2h"), Some(7_200));
        assert_eq!(duration_secs("d"), None);
        assert_eq!(duration_secs("é"), None);
        assert_eq!(duration_secs("99999999999999999999y"), None);
        // Never panics on odd input.
        let t = translate("topic\nconnection\ntopic # sideways 9\nlistener x\n\u{0}\n");
        assert!(!t.skipped.is_empty());
    }
}
