//! TLS handshakes run on their own thread, bounded by the connect timeout
//! (issue 17): against the real broker binary, clients that stall in the
//! middle of a ClientHello block neither a working TLS client (real
//! mosquitto_sub/mosquitto_pub) nor the listener, and are closed at the
//! connect timeout. What handshakes cost other clients is measured by
//! `scripts/tls-handshake-load.py`, not asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use edgemq_tests::{free_port, make_pki, mosquitto_pub, Broker, Sub};

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
fn stalled_tls_handshakes_block_no_one_and_end_at_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let tls_port = free_port();
    let config = format!(
        "[server]\nconnect_timeout_ms = 5000\n\n\
         [[listener]]\naddress = \"127.0.0.1:{tls_port}\"\nprotocol = \"mqtts\"\n\
         cert_file = {:?}\nkey_file = {:?}\n",
        path(dir.path(), "server.pem"),
        path(dir.path(), "server.key"),
    );
    let broker = Broker::start_with(Some(&config));
    // Twenty clients send the first bytes of a TLS record and stall.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            s
        })
        .collect();
    // A working TLS subscriber and publisher meanwhile.
    let ca = path(dir.path(), "ca.pem");
    let port_s = tls_port.to_string();
    let mut sub = Sub::spawn(tls_port, &["--cafile", &ca, "-t", "tls/t"]);
    sub.wait_subscribed();
    let out = mosquitto_pub(
        broker.port,
        &[
            "-p", &port_s, "--cafile", &ca, "-t", "tls/t", "-m", "through",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sub.messages(1, Duration::from_secs(10)),
        vec!["tls/t through"]
    );
    // The round trip did not wait for the stalled handshakes to end: they
    // are still open...
    let mut byte = [0u8; 1];
    stalled[0].set_nonblocking(true).unwrap();
    let still_open = stalled[0].read(&mut byte);
    assert!(
        matches!(&still_open, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a stalled handshake ended early: {still_open:?}"
    );
    stalled[0].set_nonblocking(false).unwrap();
    // ...and each is closed at the connect timeout.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        match s.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("a stalled handshake was not closed: {other:?}"),
        }
    }
    drop(broker);
}
