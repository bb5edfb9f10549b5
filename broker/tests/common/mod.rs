//! Helpers for the broker's smoke tests: start the real `edgemq` binary on a
//! free loopback port, and a raw MQTT client that speaks bytes through the
//! crate's codec (or literal bytes for malformed input).

#![allow(dead_code, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgemq::framed::{self, FramedError};
use edgemq::protocol::{self, Connect, ConnectProperties, Packet, ProtocolVersion};

/// A running `edgemq` process, killed on drop.
pub struct BrokerProcess {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts the broker with the embedded defaults.
    pub fn start() -> BrokerProcess {
        Self::start_with("")
    }

    /// Starts the broker with `config` (TOML) merged over the defaults. It
    /// listens on port 0 and the port it got is read from its log, so tests
    /// never race each other for a free port.
    pub fn start_with(config: &str) -> BrokerProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("edgemq.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgemq"))
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--log-level")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgemq");
        let stderr = child.stderr.take().expect("stderr");
        match wait_listening(stderr) {
            Some(port) => BrokerProcess {
                child,
                port,
                _dir: dir,
            },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("edgemq did not start listening");
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the broker's log until it reports the port it listens on (Some)
/// or exits (None); then keeps draining the log in the background.
fn wait_listening(stderr: std::process::ChildStderr) -> Option<u16> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let needle = "listening address=127.0.0.1:";
    let found = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some((_, rest)) = line.split_once(needle) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    break digits.parse().ok();
                }
            }
            _ => break None,
        }
    };
    std::thread::spawn(move || for _ in lines {});
    found
}

/// A minimal MQTT client over a blocking socket.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    /// Opens a socket (no CONNECT sent).
    pub fn open(port: u16, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Opens a socket and completes a CONNECT; returns the client and CONNACK.
    pub fn connect(port: u16, connect: Connect) -> (Raw, protocol::ConnAck) {
        let mut raw = Raw::open(port, connect.protocol);
        raw.send(&Packet::Connect(Box::new(connect)));
        match raw.recv() {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out).expect("encode");
        self.send_bytes(&out);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next packet, or `None` when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        match framed::read_packet_blocking(
            &mut self.stream,
            &mut self.buf,
            self.version,
            u32::MAX >> 4,
        ) {
            Ok(p) => Some(p),
            Err(FramedError::Closed) => None,
            Err(FramedError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(FramedError::Io(e)) => panic!("read failed (timeout?): {e}"),
            Err(e) => panic!("broker sent a malformed packet: {e}"),
        }
    }

    /// Reads until the broker closes; returns what it sent meanwhile.
    pub fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(p) = self.recv() {
            packets.push(p);
        }
        packets
    }
}

/// A CONNECT with clean start, no credentials.
pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}
