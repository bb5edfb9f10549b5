//! Raw MQTT clients and fixtures shared by the security e2e tests
//! (`security.rs`, `security_auth.rs`): a socket speaking edgemq's codec,
//! password/ACL files written by the real `mosquitto_passwd`, and the
//! broker's RSS from /proc.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edgemq::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter,
};
use edgemq_tests::{raw_connect, read_packet, run};

pub const V311: ProtocolVersion = ProtocolVersion::V311;
pub const V5: ProtocolVersion = ProtocolVersion::V5;

/// A raw client: a socket, its read buffer and its protocol version.
pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
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

pub fn with_user(mut c: Connect, user: &str, password: &str) -> Connect {
    c.username = Some(user.to_string());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

impl Raw {
    /// Connects and returns the client with the CONNACK's (code, session present).
    pub fn connect(port: u16, connect: Connect) -> (Raw, u8, bool) {
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

    /// Connects; the CONNACK's code, or `None` when the socket was closed.
    pub fn try_connect(port: u16, connect: Connect) -> Option<u8> {
        let version = connect.protocol;
        let mut raw = Raw {
            s: raw_connect(port),
            buf: BytesMut::new(),
            version,
        };
        raw.s
            .write_all(&{
                let mut out = BytesMut::new();
                protocol::encode(&Packet::Connect(Box::new(connect)), version, &mut out).ok()?;
                out
            })
            .ok()?;
        match raw.next(Duration::from_secs(10)) {
            Some(Packet::ConnAck(a)) => Some(a.reason_code),
            _ => None,
        }
    }

    /// Connects and asserts the CONNACK accepts.
    pub fn accepted(port: u16, connect: Connect) -> Raw {
        let (raw, code, _) = Raw::connect(port, connect);
        assert_eq!(code, 0, "CONNACK refused");
        raw
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out).unwrap();
        self.s.write_all(&out).unwrap();
    }

    /// The next packet within `timeout`; `None` on timeout or close.
    pub fn next(&mut self, timeout: Duration) -> Option<Packet> {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        read_packet(&mut self.s, &mut self.buf, self.version)
    }

    /// Subscribes to `filters` at `qos`; returns the SUBACK codes.
    pub fn subscribe(&mut self, filters: &[&str], qos: QoS) -> Vec<u8> {
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

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
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
    pub fn ping(&mut self) {
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
    pub fn publishes(&mut self, window: Duration) -> Vec<(String, Bytes)> {
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
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A password file (mosquitto_passwd, fast `$7$` entries) with `users`
/// (each user's password is its name reversed) and an ACL file.
pub fn auth_files(dir: &std::path::Path, users: &[&str], acl: &str) -> String {
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

pub fn login(version: ProtocolVersion, client_id: &str, user: &str) -> Connect {
    let password: String = user.chars().rev().collect();
    with_user(connect_packet(version, client_id), user, &password)
}
