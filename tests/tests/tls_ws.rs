//! TLS and WebSocket listeners (issue 7): Mosquitto's clients over TLS with
//! passwords and with client certificates (`use_identity_as_username` and
//! ACLs), certificates reloaded on SIGHUP without dropping connections,
//! and paho-mqtt over ws:// and wss://. Every certificate is made by the
//! real openssl tool for the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgemq_tests::{
    free_port, make_client_cert, make_pki, mosquitto_pub, require_tool, run, wait_until, Broker,
    Sub,
};

const WAIT: Duration = Duration::from_secs(10);

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

fn tls_listener(port: u16, dir: &Path, extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nprotocol = \"mqtts\"\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
        path(dir, "server.pem"),
        path(dir, "server.key"),
    )
}

fn passwd_file(dir: &Path) -> String {
    require_tool("mosquitto_passwd");
    let pw = path(dir, "passwd");
    let out = run(
        Command::new("mosquitto_passwd").args(["-c", "-b", &pw, "alice", "secret"]),
        WAIT,
    )
    .unwrap();
    assert!(out.status.success());
    pw
}

#[test]
fn tls_listener_with_passwords_for_mosquitto_clients() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let pw = passwd_file(dir.path());
    let tls_port = free_port();
    let config = format!(
        "[auth]\npassword_file = {pw:?}\n{}",
        tls_listener(tls_port, dir.path(), "allow_anonymous = false")
    );
    let broker = Broker::start_with(Some(&config));
    let ca = path(dir.path(), "ca.pem");
    let tls_port_s = tls_port.to_string();
    let tls = |extra: &[&str]| {
        let mut args = vec!["-p", &tls_port_s, "--cafile", &ca, "-t", "secure/t"];
        args.extend_from_slice(extra);
        mosquitto_pub(broker.port, &args)
    };
    let mut sub = Sub::spawn(
        tls_port,
        &[
            "--cafile", &ca, "-u", "alice", "-P", "secret", "-t", "secure/#",
        ],
    );
    sub.wait_subscribed();
    for version in ["tlsv1.2", "tlsv1.3"] {
        let out = tls(&[
            "-u",
            "alice",
            "-P",
            "secret",
            "--tls-version",
            version,
            "-m",
            version,
        ]);
        assert!(out.status.success(), "{version}: {out:?}");
    }
    assert_eq!(
        sub.messages(2, WAIT),
        vec!["secure/t tlsv1.2", "secure/t tlsv1.3"]
    );
    // Refused: no credentials on a listener without anonymous access, a
    // wrong password, and plain MQTT spoken to the TLS port.
    assert!(!tls(&["-m", "anon"]).status.success());
    assert!(!tls(&["-u", "alice", "-P", "wrong", "-m", "bad"])
        .status
        .success());
    let plain = mosquitto_pub(
        broker.port,
        &["-p", &tls_port_s, "-t", "secure/t", "-m", "x"],
    );
    assert!(!plain.status.success());
    // The plain listener and the TLS subscriber are unaffected.
    let out = mosquitto_pub(broker.port, &["-t", "secure/t", "-m", "plain"]);
    assert!(out.status.success());
    assert_eq!(sub.messages(1, WAIT), vec!["secure/t plain"]);
}

#[test]
fn client_certificates_name_the_user_for_acls() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    make_client_cert(dir.path(), "sensor-7");
    let acl = path(dir.path(), "acl");
    std::fs::write(
        &acl,
        "topic read sensors/#\nuser sensor-7\ntopic write sensors/7/#\n",
    )
    .unwrap();
    let tls_port = free_port();
    let config = format!(
        "[auth]\nacl_file = {acl:?}\n{}",
        tls_listener(
            tls_port,
            dir.path(),
            &format!(
                "ca_file = {:?}\nrequire_certificate = true\nuse_identity_as_username = true",
                path(dir.path(), "ca.pem")
            )
        )
    );
    let broker = Broker::start_with(Some(&config));
    let mut sub = Sub::spawn(broker.port, &["-t", "sensors/#"]);
    sub.wait_subscribed();
    let (ca, cert, key) = (
        path(dir.path(), "ca.pem"),
        path(dir.path(), "sensor-7.pem"),
        path(dir.path(), "sensor-7.key"),
    );
    let tls_port_s = tls_port.to_string();
    let publish = |topic: &str, payload: &str, with_cert: bool| {
        let mut args = vec!["-p", &tls_port_s, "--cafile", &ca, "-q", "1"];
        if with_cert {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        // The CONNECT's user name is ignored: the certificate names the user.
        args.extend(["-u", "mallory", "-P", "x", "-t", topic, "-m", payload]);
        mosquitto_pub(broker.port, &args)
    };
    let out = publish("sensors/8/t", "not-mine", true);
    assert!(out.status.success(), "{out:?}\n{}", broker.log());
    assert!(publish("sensors/7/t", "mine", true).status.success());
    assert!(
        !publish("sensors/7/t", "no-cert", false).status.success(),
        "a client without a certificate must fail the handshake"
    );
    assert!(publish("sensors/7/t", "again", true).status.success());
    assert_eq!(
        sub.messages(2, WAIT),
        vec!["sensors/7/t mine", "sensors/7/t again"],
        "the denied publish must not be delivered"
    );
}

#[test]
fn sighup_reloads_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, live) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("live"),
    );
    for d in [&old, &new, &live] {
        std::fs::create_dir(d).unwrap();
    }
    make_pki(&old);
    make_pki(&new);
    let install = |from: &Path| {
        for f in ["server.pem", "server.key"] {
            std::fs::copy(from.join(f), live.join(f)).unwrap();
        }
    };
    install(&old);
    let tls_port = free_port();
    let broker = Broker::start_with(Some(&tls_listener(tls_port, &live, "")));
    let (old_ca, new_ca) = (path(&old, "ca.pem"), path(&new, "ca.pem"));
    let mut sub = Sub::spawn(tls_port, &["--cafile", &old_ca, "-t", "r"]);
    sub.wait_subscribed();
    let tls_port_s = tls_port.to_string();
    let publish = |ca: &str, payload: &str| {
        mosquitto_pub(
            broker.port,
            &["-p", &tls_port_s, "--cafile", ca, "-t", "r", "-m", payload],
        )
        .status
        .success()
    };
    assert!(publish(&old_ca, "before"));
    install(&new);
    let hup = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The reload is asynchronous: wait until the new certificate is served.
    assert!(
        wait_until(WAIT, || publish(&new_ca, "after")),
        "the new certificate was not served; log:\n{}",
        broker.log()
    );
    assert!(!publish(&old_ca, "stale"), "the old certificate is gone");
    assert_eq!(
        sub.messages(2, WAIT),
        vec!["r before", "r after"],
        "the connection made before the reload still receives"
    );
    assert!(broker.log().contains("TLS certificate reloaded"));
}

/// Runs tests/python/ws_client.py against `port` and checks both directions.
fn websocket_round_trip(broker: &Broker, port: u16, cafile: Option<&str>) {
    require_tool("python3");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/ws_client.py");
    let topic = format!("ws/{port}");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(port.to_string()).arg(&topic);
    if let Some(ca) = cafile {
        cmd.arg(ca);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if first != "subscribed" {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("ws client: {first} {err}\nbroker log:\n{}", broker.log());
    }
    let mut back = Sub::spawn(broker.port, &["-t", &format!("{topic}/back")]);
    back.wait_subscribed();
    let out = mosquitto_pub(broker.port, &["-t", &topic, "-m", "to-ws", "-q", "1"]);
    assert!(out.status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(rest, vec!["to-ws", "published"]);
    assert!(child.wait().unwrap().success());
    assert_eq!(
        back.messages(1, WAIT),
        vec![format!("{topic}/back from-ws")]
    );
}

#[test]
fn websocket_clients_over_ws_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let (ws_port, wss_port) = (free_port(), free_port());
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{ws_port}\"\nprotocol = \"ws\"\n\
         [[listener]]\naddress = \"127.0.0.1:{wss_port}\"\nprotocol = \"wss\"\ncert_file = {:?}\nkey_file = {:?}\n",
        path(dir.path(), "server.pem"),
        path(dir.path(), "server.key"),
    );
    let broker = Broker::start_with(Some(&config));
    websocket_round_trip(&broker, ws_port, None);
    websocket_round_trip(&broker, wss_port, Some(&path(dir.path(), "ca.pem")));
    // A WebSocket client that offers only other subprotocols is turned away.
    let mut s = TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: chat\r\n\r\n",
    )
    .unwrap();
    let mut response = [0u8; 12];
    s.read_exact(&mut response).unwrap();
    assert_eq!(&response, b"HTTP/1.1 400");
}
