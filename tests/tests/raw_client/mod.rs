//! A raw MQTT client over a blocking loopback socket, built on edgemq's own
//! codec, for the durability tests that must control packet ids, the DUP
//! flag and exactly which acknowledgement arrives (real clients hide those).
//! Reads time out (10 s), so a missing packet fails the test instead of
//! hanging it.
#![allow(clippy::expect_used, dead_code, clippy::unwrap_used)]

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use edgemq::framed::{self, FramedError};
use edgemq::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, QoS, Subscribe,
    SubscribeFilter,
};

pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const V311: ProtocolVersion = ProtocolVersion::V311;

/// The store and queue settings that make a store fill up within a few
/// hundred 1 KB messages.
pub const SMALL_STORE: &str =
    "[limits]\nmax_queued_messages = 10\n\n[storage]\ncapacity = 327680\nsegment_size = 65536\n";

/// What a read gave.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Packet(Packet),
    Timeout,
    Closed,
}

pub struct Raw {
    pub s: TcpStream,
    buf: BytesMut,
    pub v: ProtocolVersion,
}

impl Raw {
    /// Connects and returns the client with its CONNACK's session-present
    /// flag. v5 sessions with `clean == false` ask for a one-hour expiry.
    pub fn connect(port: u16, v: ProtocolVersion, id: &str, clean: bool) -> (Raw, bool) {
        Raw::connect_with(port, connect_packet(v, id, clean))
    }

    /// Connects with `connect` as built (wills, expiry).
    pub fn connect_with(port: u16, connect: Connect) -> (Raw, bool) {
        let v = connect.protocol;
        let id = connect.client_id.clone();
        let s = edgemq_tests::raw_connect(port);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw {
            s,
            buf: BytesMut::new(),
            v,
        };
        raw.send(Packet::Connect(Box::new(connect)));
        match raw.recv() {
            Some(Packet::ConnAck(c)) if c.reason_code == 0 => {
                let present = c.session_present;
                (raw, present)
            }
            other => panic!("no CONNACK for {id}: {other:?}"),
        }
    }

    pub fn encode(&self, p: &Packet, out: &mut BytesMut) {
        protocol::encode(p, self.v, out).unwrap();
    }

    pub fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        self.encode(&p, &mut out);
        self.s.write_all(&out).unwrap();
    }

    /// Sends several packets in one write (one TCP segment on loopback).
    pub fn send_all(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for p in packets {
            self.encode(p, &mut out);
        }
        self.s.write_all(&out).unwrap();
    }

    /// The next packet; `None` when the connection closed (or 10 s passed).
    pub fn recv(&mut self) -> Option<Packet> {
        match self.next() {
            Event::Packet(p) => Some(p),
            Event::Timeout | Event::Closed => None,
        }
    }

    /// The next packet, or why there is none.
    pub fn next(&mut self) -> Event {
        match framed::read_packet_blocking(&mut self.s, &mut self.buf, self.v, 1 << 24) {
            Ok(p) => Event::Packet(p),
            Err(FramedError::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Event::Timeout
            }
            Err(_) => Event::Closed,
        }
    }

    /// Every packet until the server closes the connection.
    pub fn recv_until_closed(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = self.recv() {
            out.push(p);
        }
        out
    }

    /// True when the connection still answers a PINGREQ.
    pub fn alive(&mut self) -> bool {
        self.send(Packet::PingReq);
        matches!(self.recv(), Some(Packet::PingResp))
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Default::default(),
            filters: vec![SubscribeFilter::new(filter, qos)],
        }));
        match self.recv() {
            Some(Packet::SubAck(a)) => assert!(a.reason_codes[0] < 0x80, "SUBACK {a:?}"),
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    pub fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default()));
    }

    /// Receives deliveries, acknowledging each (QoS 2 through PUBCOMP),
    /// until `done` says so or `within` passes; returns their payloads.
    pub fn drain(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&[Bytes]) -> bool,
    ) -> Vec<Bytes> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        self.s
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while Instant::now() < deadline && !done(&got) {
            match self.next() {
                Event::Packet(Packet::Publish(p)) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self.send(Packet::PubAck(ack(p.pkid))),
                        QoS::ExactlyOnce => self.send(Packet::PubRec(ack(p.pkid))),
                    }
                    got.push(p.payload);
                }
                Event::Packet(Packet::PubRel(r)) => self.send(Packet::PubComp(ack(r.pkid))),
                Event::Packet(_) | Event::Timeout => {}
                Event::Closed => break,
            }
        }
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        got
    }
}

/// A CONNECT; v5 sessions with `clean == false` ask for a one-hour expiry.
pub fn connect_packet(v: ProtocolVersion, id: &str, clean: bool) -> Connect {
    Connect {
        protocol: v,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: (v == V5 && !clean).then_some(3600),
            ..ConnectProperties::default()
        },
    }
}

/// strace attached to every thread of `pid`, delaying each `pwrite64` by
/// `delay` (only the store thread writes with it): widens the window
/// between a request to the store thread and its write, as a slow SD card
/// would. Returns once strace is attached; kill the child to detach.
pub fn delay_pwrites(pid: u32, delay: Duration) -> std::process::Child {
    trace_pwrites(pid, delay, std::path::Path::new("/dev/null"))
}

/// [`delay_pwrites`], logging each completed pwrite64 to `out`.
pub fn trace_pwrites(pid: u32, delay: Duration, out: &std::path::Path) -> std::process::Child {
    edgemq_tests::require_tool("strace");
    let child = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=pwrite64", "-o"])
        .arg(out)
        .arg("-e")
        .arg(format!("inject=pwrite64:delay_enter={}", delay.as_micros()))
        .arg("-p")
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    edgemq_tests::wait_traced(pid);
    child
}

pub fn ack(pkid: u16) -> PubAck {
    PubAck {
        pkid,
        ..PubAck::default()
    }
}

pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: impl Into<Bytes>) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        ..Default::default()
    })
}

/// A persistent session subscribed to `filter` at QoS 2, then offline.
pub fn park_subscriber(port: u16, v: ProtocolVersion, id: &str, filter: &str) {
    let (mut s, _) = Raw::connect(port, v, id, false);
    s.subscribe(filter, QoS::ExactlyOnce);
    s.disconnect();
}

/// Publishes QoS 1 messages on `topic` from 3.1.1 clients until one is
/// not acknowledged (the store is full): 1 KB ones, then 1-byte ones, so
/// that no message larger than one byte still fits. Returns how many were
/// acknowledged.
pub fn fill_store(port: u16, topic: &str) -> usize {
    let mut acked = 0;
    for size in [1024, 1] {
        let (mut p, _) = Raw::connect(port, V311, "filler", true);
        for i in 1..=5000u16 {
            p.send(publish(topic, QoS::AtLeastOnce, i, vec![b'f'; size]));
            match p.recv() {
                Some(Packet::PubAck(a)) if a.pkid == i => acked += 1,
                _ => break,
            }
            assert!(i < 5000, "the store never filled up");
        }
    }
    acked
}
