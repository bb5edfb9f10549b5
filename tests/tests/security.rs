//! Security hardening (issue 17) against the real broker binary, with raw
//! MQTT clients speaking edgemq's codec over 127.0.0.1: the deny-list
//! overlap, `$SYS` wills, resend after takeover, client-id binding,
//! pre-authentication memory, subscription memory and the shipped
//! deployment configuration. Every case was first seen failing on the code
//! before the fix (see the security review).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgemq::protocol::{LastWill, QoS, WillProperties};
use edgemq_tests::{edgemq_command, raw_connect, run, Broker};
use security_support::*;

// ---------------------------------------------------------------- H1

#[test]
fn deny_subscribe_refuses_every_overlapping_filter_and_nothing_denied_is_delivered() {
    let broker = Broker::start_with(Some("[acl]\ndeny_subscribe = [\"secret/#\"]\n"));
    let port = broker.port;
    let mut publisher = Raw::accepted(port, connect_packet(V5, "pub"));
    publisher.publish("secret/x", b"retained-secret", QoS::AtLeastOnce, true);
    publisher.publish("open/x", b"retained-open", QoS::AtLeastOnce, true);

    let mut sub = Raw::accepted(port, connect_packet(V5, "sub"));
    let filters = [
        "#",
        "+/x",
        "+/+",
        "$share/g/#",
        "$share/g/+/x",
        "secret/#",
        "secret/+",
        "+/#",
    ];
    for f in filters {
        let codes = sub.subscribe(&[f], QoS::AtLeastOnce);
        assert_eq!(
            codes,
            [0x87],
            "{f} overlaps the denied secret/# and must be refused"
        );
    }
    // Filters that cannot match a denied topic are granted.
    let codes = sub.subscribe(&["open/#", "open/+/z", "$SYS/#"], QoS::AtLeastOnce);
    assert!(codes.iter().all(|&c| c < 0x80), "{codes:?}");
    publisher.publish("secret/y", b"live-secret", QoS::AtLeastOnce, false);
    publisher.publish("open/y", b"live-open", QoS::AtLeastOnce, false);
    let got = sub.publishes(Duration::from_millis(1500));
    assert!(
        got.iter().all(|(t, _)| !t.starts_with("secret")),
        "a denied topic was delivered: {got:?}"
    );
    assert!(got.iter().any(|(t, _)| t == "open/y"), "{got:?}");
}

// ---------------------------------------------------------------- H3

#[test]
fn a_will_on_a_sys_topic_is_refused_and_never_published() {
    let broker = Broker::start();
    let port = broker.port;
    for (version, topic) in [
        (V311, "$SYS/broker/version"),
        (V5, "$SYS/x/1"),
        (V5, "$SYS"),
    ] {
        let mut c = connect_packet(version, "spoofer");
        c.will = Some(LastWill {
            topic: topic.to_string(),
            payload: Bytes::from_static(b"mosquitto 1.4.0"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: WillProperties::default(),
        });
        let (raw, code, _) = Raw::connect(port, c);
        assert!(
            code >= 0x80 || (version == V311 && code != 0),
            "will on {topic}: CONNACK {code:#x}"
        );
        drop(raw);
    }
    let mut sub = Raw::accepted(port, connect_packet(V5, "watcher"));
    let codes = sub.subscribe(
        &["$SYS/broker/version", "$SYS/x/#", "$SYS"],
        QoS::AtMostOnce,
    );
    assert!(codes.iter().all(|&c| c < 0x80));
    let got = sub.publishes(Duration::from_millis(1500));
    assert!(
        got.iter().all(|(_, p)| p.as_ref() != b"mosquitto 1.4.0"),
        "a spoofed $SYS value was served: {got:?}"
    );
}

// ---------------------------------------------------------------- H2

const THREE_USERS_ACL: &str = "user alice\ntopic read secret/#\nuser bob\ntopic readwrite bob/#\nuser admin\ntopic readwrite #\n";

#[test]
fn messages_resent_after_a_takeover_are_filtered_by_the_new_users_read_acl() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(dir.path(), &["alice", "bob", "admin"], THREE_USERS_ACL);
    let broker = Broker::start_with(Some(&config));
    let port = broker.port;
    let mut c = login(V311, "alice-dash", "alice");
    c.clean_start = false;
    let mut alice = Raw::accepted(port, c);
    assert_eq!(alice.subscribe(&["secret/#"], QoS::AtLeastOnce), [1]);
    let mut admin = Raw::accepted(port, login(V311, "admin-1", "admin"));
    for i in 0..3 {
        admin.publish(
            &format!("secret/inflight/{i}"),
            b"s",
            QoS::AtLeastOnce,
            false,
        );
    }
    // alice receives them and acknowledges none, then drops.
    let got = alice.publishes(Duration::from_millis(1000));
    assert_eq!(got.len(), 3, "{got:?}");
    drop(alice);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = login(V311, "alice-dash", "bob");
    c.clean_start = false;
    let (mut bob, code, _) = Raw::connect(port, c);
    if code == 0 {
        let got = bob.publishes(Duration::from_millis(1500));
        assert!(got.is_empty(), "bob received alice's messages: {got:?}");
    }
}

// ---------------------------------------------------------------- M4

#[test]
fn with_client_id_binding_one_user_cannot_take_another_users_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(dir.path(), &["alice", "bob"], THREE_USERS_ACL);
    let config = format!("{config}client_id_binding = \"username-prefix\"\n");
    let broker = Broker::start_with(Some(&config));
    let port = broker.port;
    let mut c = login(V5, "alice-dash", "alice");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    let alice = Raw::accepted(port, c);
    // bob can neither take alice's id (online) nor wipe it.
    let (_bob, code, _) = Raw::connect(port, login(V5, "alice-dash", "bob"));
    assert_eq!(code, 0x85, "client identifier not valid");
    // bob's own ids work, and an anonymous client cannot use a user's id.
    Raw::accepted(port, login(V5, "bob-1", "bob"));
    Raw::accepted(port, login(V5, "bob", "bob"));
    let (_anon, code, _) = Raw::connect(port, connect_packet(V5, "alice-2"));
    assert_eq!(code, 0x85);
    drop(alice);
}

// ---------------------------------------------------------------- H7, M2

/// The first `len` bytes of a v3.1.1 CONNECT that declares 1 MiB.
fn huge_connect_prefix(len: usize) -> Vec<u8> {
    let remaining: usize = (1 << 20) - 5;
    let mut out = vec![0x10];
    let mut n = remaining;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    let id_len = 0xFFFFu16;
    out.extend_from_slice(&id_len.to_be_bytes());
    out.resize(len, b'a');
    out
}

#[test]
fn unauthenticated_megabyte_connects_do_not_grow_memory() {
    let broker = Broker::start_with(Some("[server]\nmax_connections = 100\n"));
    let port = broker.port;
    let before = rss_kib(broker.pid());
    let body = huge_connect_prefix((1 << 20) - 16);
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut s = raw_connect(port);
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                // The broker may close early: that is the point.
                let _ = s.write_all(&body);
                s
            })
        })
        .collect();
    let sockets: Vec<TcpStream> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(broker.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("200 x 1 MiB CONNECT: RSS {before} -> {after} KiB (+{grown_mib} MiB)");
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB ({before} -> {after} KiB)"
    );
    // A legitimate client still gets in while the sockets are open.
    Raw::accepted(port, connect_packet(V5, "legit"));
    drop(sockets);
}

#[test]
fn idle_sockets_do_not_take_the_slots_of_clients_that_connect() {
    let broker = Broker::start_with(Some("[server]\nmax_connections = 20\n"));
    let port = broker.port;
    let idle: Vec<TcpStream> = (0..25).map(|_| raw_connect(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Raw::accepted(port, connect_packet(V311, "legit"));
    c.ping();
    drop(idle);
}

#[test]
fn one_address_holds_few_sockets_that_have_not_logged_in() {
    let broker = Broker::start_with(Some("[server]\nmax_pending_per_address = 5\n"));
    let port = broker.port;
    // Logged-in clients do not count: ten of them from the same address.
    let clients: Vec<Raw> = (0..10)
        .map(|i| Raw::accepted(port, connect_packet(V311, &format!("c{i}"))))
        .collect();
    let idle: Vec<TcpStream> = (0..5).map(|_| raw_connect(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // A sixth socket that has not logged in is closed before it is read.
    let mut sixth = raw_connect(port);
    sixth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let started = Instant::now();
    let r = sixth.read(&mut [0u8; 8]);
    assert!(
        matches!(r, Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(2),
        "sixth pending socket kept: {r:?}"
    );
    drop(idle);
    assert!(
        edgemq_tests::wait_until(Duration::from_secs(5), || {
            Raw::try_connect(port, connect_packet(V311, "after")) == Some(0)
        }),
        "the address got no slot back"
    );
    drop(clients);
}

#[test]
fn a_connect_over_the_first_packet_limit_is_refused_before_it_is_buffered() {
    let broker = Broker::start();
    let port = broker.port;
    let mut s = raw_connect(port);
    // Only the header and 1 KiB: a CONNECT declaring 1 MiB is closed at
    // once instead of being waited for.
    s.write_all(&huge_connect_prefix(1024)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    let started = Instant::now();
    let r = s.read(&mut b);
    assert!(
        matches!(r, Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(4),
        "not closed: {r:?} after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- H4, H5

/// A SUBSCRIBE with `filters` (v3.1.1, QoS 0), encoded by hand so any
/// count fits.
fn subscribe_bytes(filters: &[String]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for f in filters {
        body.extend_from_slice(&(f.len() as u16).to_be_bytes());
        body.extend_from_slice(f.as_bytes());
        body.push(0);
    }
    let mut out = vec![0x82];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&body);
    out
}

#[test]
fn one_subscribe_of_50000_wildcards_against_100_retained_stays_bounded() {
    let broker = Broker::start();
    let port = broker.port;
    let mut publisher = Raw::accepted(port, connect_packet(V311, "pub"));
    for i in 0..100 {
        publisher.publish(&format!("ret/{i}"), b"0123456789", QoS::AtMostOnce, true);
    }
    publisher.ping();
    let before = rss_kib(broker.pid());
    let mut sub = Raw::accepted(port, connect_packet(V311, "greedy"));
    let filters = vec!["#".to_string(); 50_000];
    sub.s.write_all(&subscribe_bytes(&filters)).unwrap();
    // Wait for the SUBACK (or the close), and read nothing else.
    let mut first = [0u8; 1];
    let _ = sub.s.read(&mut first);
    publisher.ping();
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(broker.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("SUBSCRIBE 50,000 x #: RSS {before} -> {after} KiB (+{grown_mib} MiB)");
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB ({before} -> {after} KiB)"
    );
}

#[test]
fn subscriptions_per_client_are_capped() {
    let broker = Broker::start_with(Some("[limits]\nmax_subscriptions_per_client = 10\n"));
    let port = broker.port;
    let mut c = Raw::accepted(port, connect_packet(V5, "many"));
    let filters: Vec<String> = (0..8).map(|i| format!("t/{i}")).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    assert!(c.subscribe(&refs, QoS::AtMostOnce).iter().all(|&c| c == 0));
    // Replacing an existing subscription does not count twice.
    assert_eq!(c.subscribe(&["t/0", "t/1"], QoS::AtMostOnce), [0, 0]);
    let filters: Vec<String> = (8..12).map(|i| format!("t/{i}")).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    assert_eq!(c.subscribe(&refs, QoS::AtMostOnce), [0, 0, 0x97, 0x97]);
}

// ---------------------------------------------------------------- H8

#[test]
fn the_shipped_config_has_no_anonymous_lan_listener() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/edgemq.toml");
    // Installed as docs/ARM.md says: certificates, password file and the
    // shipped ACL under /etc/edgemq (here a temporary directory).
    let etc = tempfile::tempdir().unwrap();
    let certs = etc.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    edgemq_tests::make_pki(&certs);
    auth_files(etc.path(), &["plc-1"], "");
    let acl = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/edgemq.acl");
    std::fs::copy(acl, etc.path().join("acl")).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let installed = etc.path().join("edgemq.toml");
    std::fs::write(
        &installed,
        text.replace("/etc/edgemq", etc.path().to_str().unwrap()),
    )
    .unwrap();
    let out = run(
        edgemq_command().arg("check-config").arg(&installed),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config: {stderr}");
    assert!(!stderr.contains("warning"), "check-config warns: {stderr}");
    let config = edgemq::config::Config::from_file(std::path::Path::new(path)).unwrap();
    for l in &config.listeners {
        if !l.address.ip().is_loopback() {
            assert!(
                !l.anonymous_allowed(),
                "{}: anonymous on the LAN",
                l.address
            );
            assert!(l.protocol.is_tls(), "{}: plaintext on the LAN", l.address);
            assert!(config.auth.password_file.is_some() && config.auth.acl_file.is_some());
        }
    }
}
