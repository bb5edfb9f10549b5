//! Security hardening (issue 17), authentication side, against the real
//! broker binary: parallel password guesses, log escaping, revocation on
//! SIGHUP, and the low findings (WebSocket origins, protocol laxness).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgemq::protocol::{Packet, Publish, PublishProperties, QoS};
use edgemq_tests::{free_port, raw_connect, wait_until, Broker};
use security_support::*;

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

// ---------------------------------------------------------------- L4

/// A WebSocket upgrade request's status line, with or without `Origin`.
fn ws_upgrade_status(port: u16, origin: Option<&str>) -> String {
    let mut s = raw_connect(port);
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{origin}\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap_or(0);
    String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_anonymous_websocket_listener_refuses_foreign_browser_origins() {
    let ws = free_port();
    let listed = free_port();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{ws}\"\nprotocol = \"ws\"\n\
         [[listener]]\naddress = \"127.0.0.1:{listed}\"\nprotocol = \"ws\"\n\
         allowed_origins = [\"http://dash.local\"]\n"
    );
    let _broker = Broker::start_with(Some(&config));
    assert!(
        ws_upgrade_status(ws, None).contains(" 101 "),
        "a non-browser client"
    );
    let same = ws_upgrade_status(ws, Some(&format!("http://127.0.0.1:{ws}")));
    assert!(
        same.contains(" 101 "),
        "same origin on an IP address: {same}"
    );
    let foreign = ws_upgrade_status(ws, Some("http://evil.example"));
    assert!(foreign.contains(" 403 "), "{foreign}");
    assert!(ws_upgrade_status(listed, Some("http://dash.local")).contains(" 101 "));
    let other = ws_upgrade_status(listed, Some("http://evil.example"));
    assert!(other.contains(" 403 "), "{other}");
}

// ---------------------------------------------------------------- L8

#[test]
fn a_client_publish_with_a_subscription_identifier_is_a_protocol_error() {
    let broker = Broker::start();
    let mut c = Raw::accepted(broker.port, connect_packet(V5, "sid"));
    c.send(&Packet::Publish(Publish {
        qos: QoS::AtMostOnce,
        topic: "a".to_string(),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            subscription_identifiers: vec![7],
            ..PublishProperties::default()
        },
        ..Publish::default()
    }));
    match c.next(Duration::from_secs(5)) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, 0x82),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
}

#[test]
fn a_v311_keep_alive_over_max_keepalive_is_refused() {
    let broker = Broker::start_with(Some("[limits]\nmax_keepalive = 600\n"));
    let mut c = connect_packet(V311, "ka");
    c.keep_alive = 601;
    assert_eq!(
        Raw::connect(broker.port, c).1,
        2,
        "identifier rejected, as Mosquitto"
    );
    let mut c = connect_packet(V311, "ka");
    c.keep_alive = 0;
    assert_eq!(Raw::connect(broker.port, c).1, 2);
    let mut c = connect_packet(V311, "ka");
    c.keep_alive = 60;
    Raw::accepted(broker.port, c);
}

// ---------------------------------------------------------------- L5

#[test]
fn the_metrics_endpoint_serves_a_few_requests_at_a_time() {
    let port = free_port();
    let broker = Broker::start_with(Some(&format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 4\n"
    )));
    // Four slow requests hold every slot of `[http] max_connections`...
    let slow: Vec<std::net::TcpStream> = (0..4).map(|_| raw_connect(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a fifth connection is closed at once instead of being held.
    let mut fifth = raw_connect(port);
    fifth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let started = Instant::now();
    let r = fifth.read(&mut [0u8; 16]);
    assert!(
        matches!(r, Ok(0) | Err(_)) && started.elapsed() < Duration::from_secs(2),
        "fifth metrics connection held: {r:?} after {:?}",
        started.elapsed()
    );
    drop(slow);
    // Once they are gone, requests are served again.
    assert!(wait_until(Duration::from_secs(5), || {
        let mut s = raw_connect(port);
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }));
    drop(broker);
}

// ---------------------------------------------------------------- H6

#[test]
fn a_publish_with_too_many_user_properties_closes_the_connection() {
    let broker = Broker::start();
    let mut c = Raw::accepted(broker.port, connect_packet(V5, "props"));
    c.send(&Packet::Publish(Publish {
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "p/1".to_string(),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            user_properties: vec![(String::new(), String::new()); 20_000],
            ..PublishProperties::default()
        },
        ..Publish::default()
    }));
    match c.next(Duration::from_secs(5)) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, 0x97),
        other => panic!("expected DISCONNECT 0x97, got {other:?}"),
    }
    let mut sub = Raw::accepted(broker.port, connect_packet(V5, "reader"));
    sub.subscribe(&["p/#"], QoS::AtMostOnce);
    assert!(
        sub.publishes(Duration::from_millis(500)).is_empty(),
        "it was retained"
    );
}

// ---------------------------------------------------------------- M5 (CRL)

/// Revokes `name`'s certificate (if given) and writes `crl.pem` with the
/// real openssl CA commands.
fn write_crl(dir: &std::path::Path, revoke: Option<&str>) {
    let cnf = dir.join("ca.cnf");
    if !cnf.exists() {
        std::fs::write(
            &cnf,
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    }
    let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
    if let Some(name) = revoke {
        let cert = format!("{name}.pem");
        let mut args = vec!["ca"];
        args.extend(ca);
        args.extend(["-revoke", &cert]);
        edgemq_tests::openssl(dir, &args);
    }
    let mut args = vec!["ca"];
    args.extend(ca);
    args.extend(["-gencrl", "-out", "crl.pem"]);
    edgemq_tests::openssl(dir, &args);
}

#[test]
fn revoked_client_certificates_are_refused_and_sighup_reloads_the_crl() {
    let dir = tempfile::tempdir().unwrap();
    edgemq_tests::make_pki(dir.path());
    edgemq_tests::make_client_cert(dir.path(), "alice");
    edgemq_tests::make_client_cert(dir.path(), "bob");
    write_crl(dir.path(), Some("alice"));
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let tls_port = free_port();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{tls_port}\"\nprotocol = \"mqtts\"\n\
         cert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nrequire_certificate = true\n\
         crl_file = {:?}\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("crl.pem"),
    );
    let broker = Broker::start_with(Some(&config));
    let publish = |name: &str| {
        let (ca, cert, key) = (
            p("ca.pem"),
            p(&format!("{name}.pem")),
            p(&format!("{name}.key")),
        );
        let port = tls_port.to_string();
        let args = [
            "-p", &port, "--cafile", &ca, "--cert", &cert, "--key", &key, "-t", "t", "-m", "x",
        ];
        edgemq_tests::mosquitto_pub(broker.port, &args)
            .status
            .success()
    };
    assert!(!publish("alice"), "a revoked certificate was accepted");
    assert!(publish("bob"), "log:\n{}", broker.log());
    // bob is revoked too; SIGHUP reloads the CRL with the certificates.
    write_crl(dir.path(), Some("bob"));
    let hup = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(10), || !publish("bob")),
        "bob still accepted after the CRL reload; log:\n{}",
        broker.log()
    );
}
