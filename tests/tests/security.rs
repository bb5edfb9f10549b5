//! Security hardening (issue 17) against the real broker binary, with raw
//! MQTT clients speaking edgemq's codec over 127.0.0.1: the deny-list
//! overlap, `$SYS` wills, resend after takeover, client-id binding,
//! pre-authentication memory, subscription memory, revocation on SIGHUP,
//! log escaping and the shipped deployment configuration. Every case was
//! first seen failing on the code before the fix (see the security review).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, LastWill, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, WillProperties,
};
use edgemq_tests::{edgemq_command, raw_connect, read_packet, run, wait_until, Broker};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A raw client: a socket, its read buffer and its protocol version.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn with_user(mut c: Connect, user: &str, password: &str) -> Connect {
    c.username = Some(user.to_string());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

impl Raw {
    /// Connects and returns the client with the CONNACK's (code, session present).
    fn connect(port: u16, connect: Connect) -> (Raw, u8, bool) {
        let version = connect.protocol;
        let mut raw = Raw {
            s: raw_connect(port),
            buf: BytesMut::new(),
            version,
        };
        raw.send(&Packet::Connect(Box::new(connect)));
        match raw.next(Duration::from_secs(10)) {
            Some(Packet::ConnAck(a)) => (raw, a.reason_code, a.session_present),
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// Connects and asserts the CONNACK accepts.
    fn accepted(port: u16, connect: Connect) -> Raw {
        let (raw, code, _) = Raw::connect(port, connect);
        assert_eq!(code, 0, "CONNACK refused");
        raw
    }

    fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out).unwrap();
        self.s.write_all(&out).unwrap();
    }

    /// The next packet within `timeout`; `None` on timeout or close.
    fn next(&mut self, timeout: Duration) -> Option<Packet> {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        read_packet(&mut self.s, &mut self.buf, self.version)
    }

    /// Subscribes to `filters` at `qos`; returns the SUBACK codes.
    fn subscribe(&mut self, filters: &[&str], qos: QoS) -> Vec<u8> {
        self.send(&Packet::Subscribe(Subscribe {
            pkid: 7,
            filters: filters
                .iter()
                .map(|f| SubscribeFilter::new(*f, qos))
                .collect(),
            ..Subscribe::default()
        }));
        loop {
            match self.next(Duration::from_secs(20)) {
                Some(Packet::SubAck(a)) => return a.reason_codes,
                Some(Packet::Publish(_)) => {}
                other => panic!("expected a SUBACK, got {other:?}"),
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.send(&Packet::Publish(Publish {
            qos,
            retain,
            pkid: if qos == QoS::AtMostOnce { 0 } else { 1 },
            topic: topic.to_string(),
            payload: Bytes::copy_from_slice(payload),
            ..Publish::default()
        }));
        if qos == QoS::AtLeastOnce {
            match self.next(Duration::from_secs(10)) {
                Some(Packet::PubAck(_)) => {}
                other => panic!("expected a PUBACK, got {other:?}"),
            }
        }
    }

    /// A PINGREQ round trip: everything sent before was handled.
    fn ping(&mut self) {
        self.send(&Packet::PingReq);
        loop {
            match self.next(Duration::from_secs(20)) {
                Some(Packet::PingResp) => return,
                Some(Packet::Publish(_)) => {}
                other => panic!("expected a PINGRESP, got {other:?}"),
            }
        }
    }

    /// Every PUBLISH received within `window` (topic, payload).
    fn publishes(&mut self, window: Duration) -> Vec<(String, Bytes)> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next(left) {
                Some(Packet::Publish(p)) => out.push((p.topic, p.payload)),
                Some(_) => {}
                None => return out,
            }
        }
    }
}

/// The broker's resident set size in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A password file (mosquitto_passwd, fast `$7$` entries) with `users`
/// (each user's password is its name reversed) and an ACL file.
fn auth_files(dir: &std::path::Path, users: &[&str], acl: &str) -> String {
    let pw = dir.join("passwd");
    for (i, user) in users.iter().enumerate() {
        let password: String = user.chars().rev().collect();
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.args(["-b", pw.to_str().unwrap(), user, &password]);
        let out = run(&mut cmd, Duration::from_secs(10)).unwrap();
        assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    }
    let acl_path = dir.join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    format!(
        "[auth]\npassword_file = {:?}\nacl_file = {:?}\n",
        pw.to_str().unwrap(),
        acl_path.to_str().unwrap()
    )
}

fn login(version: ProtocolVersion, client_id: &str, user: &str) -> Connect {
    let password: String = user.chars().rev().collect();
    with_user(connect_packet(version, client_id), user, &password)
}

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
    // A legitimate client still gets in while the sockets are open.
    Raw::accepted(port, connect_packet(V5, "legit"));
    drop(sockets);
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB ({before} -> {after} KiB)"
    );
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

// ---------------------------------------------------------------- M1

#[test]
fn parallel_password_guesses_are_refused_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(dir.path(), &["alice"], "user alice\ntopic read #\n");
    let broker = Broker::start_with(Some(&config));
    let port = broker.port;
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let c = with_user(
                    connect_packet(V5, &format!("g{i}")),
                    "alice",
                    &format!("guess{i}"),
                );
                Raw::connect(port, c).1
            })
        })
        .collect();
    let codes: Vec<u8> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    let checked = codes.iter().filter(|&&c| c == 0x86).count();
    let refused = codes.iter().filter(|&&c| c == 0x9F).count();
    assert_eq!(checked + refused, 20, "{codes:?}");
    assert!(
        checked <= 4,
        "{checked} of 20 parallel guesses were checked: {codes:?}"
    );
}

// ---------------------------------------------------------------- L2

#[test]
fn user_names_are_escaped_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(dir.path(), &["alice"], "user alice\ntopic read #\n");
    let broker = Broker::start_with(Some(&config));
    let forged = "x\n2026-01-01T00:00:00Z  INFO forged line\u{1b}[2K";
    let (_c, code, _) = Raw::connect(
        broker.port,
        with_user(connect_packet(V311, "evil"), forged, "pw"),
    );
    assert_ne!(code, 0);
    assert!(wait_until(Duration::from_secs(5), || broker
        .log()
        .contains("login failed")));
    let log = broker.log();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z  INFO forged"))
            && !log.contains('\u{1b}'),
        "the user name was logged raw:\n{log}"
    );
}

// ---------------------------------------------------------------- M5

#[test]
fn sighup_disconnects_users_removed_from_the_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(
        dir.path(),
        &["alice", "bob"],
        "user alice\ntopic readwrite a/#\nuser bob\ntopic readwrite b/#\n",
    );
    let broker = Broker::start_with(Some(&config));
    let port = broker.port;
    let mut alice = Raw::accepted(port, login(V5, "a1", "alice"));
    let mut bob = Raw::accepted(port, login(V5, "b1", "bob"));
    assert_eq!(bob.subscribe(&["b/#"], QoS::AtMostOnce), [0]);
    // alice is removed; bob loses his grant on b/#.
    let pw = dir.path().join("passwd");
    let text = std::fs::read_to_string(&pw).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("alice:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&pw, kept).unwrap();
    std::fs::write(dir.path().join("acl"), "user bob\ntopic readwrite c/#\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    for (name, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut closed = false;
        while Instant::now() < deadline {
            match c.next(Duration::from_millis(200)) {
                Some(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason_code, 0x87, "{name}");
                }
                Some(_) => {}
                None => {
                    if matches!(c.s.peek(&mut [0u8; 1]), Ok(0)) {
                        closed = true;
                        break;
                    }
                }
            }
        }
        assert!(closed, "{name} still connected after SIGHUP revoked it");
    }
}
