//! Config tests: the embedded defaults, merging, and error locations.

use super::*;

#[test]
fn embedded_defaults_equal_rust_defaults() {
    let parsed = Config::from_toml(&default_config_text(), "default.toml").unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::from_toml("", "x.toml").unwrap(), Config::default());
}

#[test]
fn file_keys_override_defaults_key_by_key() {
    let c = Config::from_toml("[limits]\nmax_inflight = 7\n", "x.toml").unwrap();
    assert_eq!(c.limits.max_inflight, 7);
    assert_eq!(
        c.limits.max_queued_messages,
        Limits::default().max_queued_messages
    );
    assert_eq!(c.listeners, Config::default().listeners);
}

#[test]
fn listener_blocks_replace_the_default_listener() {
    let text = "[[listener]]\naddress = \"0.0.0.0:1884\"\n[[listener]]\naddress = \"127.0.0.1:1885\"\nallow_anonymous = false\n";
    let c = Config::from_toml(text, "x.toml").unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert!(
        !c.listeners[0].anonymous_allowed(),
        "non-loopback defaults to credentials"
    );
    assert!(!c.listeners[1].anonymous_allowed());
    assert!(Config::default().listeners[0].anonymous_allowed());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = "[server]\nmax_connections = 5\n\n[limits]\nmax_inflihgt = 3\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:5: key `limits.max_inflihgt`:"),
        "{err}"
    );
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn wrong_type_names_file_line_and_key() {
    let text = "[sys]\ninterval_secs = \"often\"\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:2: key `sys.interval_secs`:"),
        "{err}"
    );
}

#[test]
fn bad_address_names_listener_key() {
    let text = "[[listener]]\naddress = \"nowhere\"\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:2: key `listener.address`:"),
        "{err}"
    );
}

#[test]
fn semantic_error_names_line_and_key() {
    let text = "[log]\nlevel = \"info\"\n[limits]\n\nmax_inflight = 0\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "edge.toml:5: key `limits.max_inflight`: must be greater than 0"
    );
}

#[test]
fn zero_write_timeout_is_rejected() {
    let text = "[limits]\nwrite_timeout_ms = 0\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "edge.toml:2: key `limits.write_timeout_ms`: must be greater than 0"
    );
    let c = Config::from_toml("[limits]\nwrite_timeout_ms = 1500\n", "x.toml").unwrap();
    assert_eq!(c.limits.write_timeout_ms, 1500);
}

#[test]
fn invalid_deny_filter_is_rejected() {
    let text = "[acl]\ndeny_subscribe = [\"a/#/b\"]\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:2: key `acl.deny_subscribe`:"),
        "{err}"
    );
}

#[test]
fn storage_section_is_checked_with_its_key() {
    let text = "[storage]\ndurability = \"interval\"\nsegment_size = 1000\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:3: key `storage.segment_size`:"),
        "{err}"
    );
    let ok = Config::from_toml("[storage]\ndurability = \"memory\"\n", "edge.toml").unwrap();
    assert_eq!(ok.storage.durability, crate::storage::SyncMode::Memory);
}

#[test]
fn syntax_error_names_line() {
    let text = "[server]\nmax_connections = = 3\n";
    let err = Config::from_toml(text, "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("edge.toml:2:"), "{err}");
}

#[test]
fn tls_listener_keys_are_checked_and_located() {
    let err = |text: &str| {
        Config::from_toml(text, "edge.toml")
            .unwrap_err()
            .to_string()
    };
    let e =
        err("[[listener]]\naddress = \"0.0.0.0:8883\"\nprotocol = \"mqtts\"\nkey_file = \"k\"\n");
    // A missing key is located at its table's header.
    assert!(
        e.starts_with("edge.toml:1: key `listener.cert_file`"),
        "{e}"
    );
    assert!(e.contains("protocol \"mqtts\" needs cert_file"), "{e}");
    let e = err("[[listener]]\naddress = \"0.0.0.0:1883\"\nca_file = \"ca.pem\"\n");
    assert!(e.starts_with("edge.toml:3: key `listener.ca_file`"), "{e}");
    assert!(e.contains("only for TLS listeners"), "{e}");
    let e = err("[[listener]]\naddress = \"0.0.0.0:8883\"\nprotocol = \"wss\"\ncert_file = \"c\"\nkey_file = \"k\"\nrequire_certificate = true\n");
    assert!(
        e.starts_with("edge.toml:6: key `listener.require_certificate`"),
        "{e}"
    );
    assert!(e.contains("needs ca_file"), "{e}");
    let e = err("[[listener]]\naddress = \"0.0.0.0:8883\"\nprotocol = \"quic\"\n");
    assert!(e.starts_with("edge.toml:3: key `listener.protocol`"), "{e}");
    let ok = Config::from_toml(
        "[[listener]]\naddress = \"0.0.0.0:8883\"\nprotocol = \"mqtts\"\ncert_file = \"c\"\nkey_file = \"k\"\nca_file = \"ca\"\nuse_identity_as_username = true\n",
        "edge.toml",
    )
    .unwrap();
    assert!(ok.listeners[0].protocol.is_tls());
}

/// The store's wear keys are validated by `check-config` with file, line and key.
#[test]
fn wear_keys_are_checked_with_their_line() {
    let err = |text: &str| {
        Config::from_toml(text, "edge.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err("[storage]\ndurability = \"sync\"\nack_sync_interval_ms = 0\n");
    assert!(
        e.starts_with("edge.toml:3: key `storage.ack_sync_interval_ms`:"),
        "{e}"
    );
    let e = err("[storage]\ncommit_delay_us = 200000\n");
    assert!(
        e.starts_with("edge.toml:2: key `storage.commit_delay_us`:"),
        "{e}"
    );
    let ok = Config::from_toml(
        "[storage]\nack_sync_interval_ms = 250\ncommit_delay_us = 1500\n",
        "edge.toml",
    )
    .unwrap();
    assert_eq!(
        (ok.storage.ack_sync_interval_ms, ok.storage.commit_delay_us),
        (250, 1500)
    );
}

#[test]
fn flow_control_keys_parse_and_a_bad_policy_names_its_key() {
    let c = Config::default();
    assert_eq!(c.limits.slow_consumer_timeout_ms, 5000);
    assert_eq!(c.limits.qos0_overflow, super::Qos0Overflow::Wait);
    let text = "[limits]\nslow_consumer_timeout_ms = 0\nqos0_overflow = \"drop\"\n";
    let c = Config::from_toml(text, "x.toml").unwrap();
    assert_eq!(c.limits.slow_consumer_timeout_ms, 0);
    assert_eq!(c.limits.qos0_overflow, super::Qos0Overflow::Drop);
    let err = Config::from_toml("[limits]\nqos0_overflow = \"maybe\"\n", "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("edge.toml:2: key `limits.qos0_overflow`"),
        "{err}"
    );
}

/// `spill_after_ms` (write-behind) is validated with file, line and key.
#[test]
fn spill_after_is_checked_with_its_line() {
    let e = Config::from_toml("[storage]\n\nspill_after_ms = 60000\n", "edge.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("edge.toml:3: key `storage.spill_after_ms`:"),
        "{e}"
    );
    let ok = Config::from_toml("[storage]\nspill_after_ms = 0\n", "edge.toml").unwrap();
    assert_eq!(ok.storage.spill_after_ms, 0);
    assert_eq!(Config::default().storage.spill_after_ms, 100);
}

/// The compressed copy the binary prints is the file, byte for byte.
#[test]
fn the_embedded_default_config_is_the_file() {
    assert_eq!(
        default_config_text(),
        include_str!("../../config/default.toml")
    );
}
