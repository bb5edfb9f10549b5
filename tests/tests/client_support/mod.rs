//! Test support for the client and firmware-sim end-to-end tests, on top
//! of the one harness (`edgemq_tests`: free ports, the Mosquitto fixture,
//! the edgemq broker process): a pausable TCP proxy to cut and hold links,
//! an async wait, and the paths of the workspace's binaries.
#![allow(clippy::expect_used, dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

// The old names keep working: every test file includes this module.
#[allow(unused_imports)]
pub use edgemq_tests::{free_port, wait_listening};

/// Polls `cond` every 10 ms until it holds; panics with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Mosquitto as these tests want it: nothing persisted, no queue limits.
const NO_PERSISTENCE: &str = "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n";

/// A real Mosquitto without persistence (the harness's fixture), killed
/// (SIGKILL) on drop.
pub struct Mosquitto {
    inner: edgemq_tests::Mosquitto,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        Mosquitto::start_with(port, "allow_anonymous true\n", tempfile::tempdir().unwrap())
    }

    /// On a free port, retried on another when one is taken meanwhile.
    pub fn start_any_port() -> Mosquitto {
        let inner = edgemq_tests::Mosquitto::start(NO_PERSISTENCE);
        Mosquitto {
            port: inner.port,
            inner,
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts with extra configuration lines; `dir` holds files they name.
    pub fn start_with(port: u16, extra: &str, dir: tempfile::TempDir) -> Mosquitto {
        let inner = edgemq_tests::Mosquitto::start_on(port, &format!("{NO_PERSISTENCE}{extra}"));
        Mosquitto {
            inner,
            port,
            _dir: dir,
        }
    }

    /// kill -9, as a crash or power cut: no persistence, no goodbye.
    pub fn kill(mut self) {
        self.inner.stop();
    }
}

/// A TCP proxy in front of a broker. `hold()` stops forwarding client bytes
/// (publishes stay unacknowledged), `cut()` drops every connection and
/// refuses new ones, `resume()` forwards again.
pub struct Proxy {
    pub port: u16,
    forwarding: watch::Sender<bool>,
    accepting: Arc<Mutex<bool>>,
    conns: Arc<Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (forwarding, _) = watch::channel(true);
        let accepting = Arc::new(Mutex::new(true));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (fwd, acc, cs) = (forwarding.clone(), accepting.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*acc.lock().unwrap() {
                    continue; // dropped: the client sees the connection closed
                }
                let addr: SocketAddr = ([127, 0, 0, 1], upstream).into();
                let rx = fwd.subscribe();
                cs.lock().unwrap().spawn(pipe(client, addr, rx));
            }
        });
        Proxy {
            port,
            forwarding,
            accepting,
            conns,
            _accept: accept,
        }
    }

    pub fn hold(&self) {
        self.forwarding.send_replace(false);
    }

    pub fn cut(&self) {
        *self.accepting.lock().unwrap() = false;
        self.conns.lock().unwrap().abort_all();
    }

    pub fn resume(&self) {
        *self.accepting.lock().unwrap() = true;
        self.forwarding.send_replace(true);
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, mut forwarding: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if forwarding.wait_for(|f| *f).await.is_err() || sw.write_all(&buf[..n]).await.is_err()
            {
                return;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! { _ = up => {}, _ = down => {} }
}

/// Directory of the workspace's built binaries (next to this test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

/// Path of a workspace binary; builds its package once per test process so
/// the binary is never stale.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(package.to_string());
    }
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// The broker under test: edgemq (the real binary, its own data dir) or Mosquitto.
pub enum TestBroker {
    Edgemq(edgemq_tests::Broker),
    Mosquitto(Mosquitto),
}

impl TestBroker {
    /// The real edgemq binary on a free port, with a fresh data directory.
    pub fn edgemq() -> TestBroker {
        // EDGEMQ_BIN (e.g. the aarch64 build under qemu) is used as given.
        if std::env::var_os("EDGEMQ_BIN").is_none() {
            binary("edgemq", "edgemq");
        }
        TestBroker::Edgemq(edgemq_tests::Broker::start())
    }

    /// A real Mosquitto on a free port, without persistence.
    pub fn mosquitto() -> TestBroker {
        TestBroker::Mosquitto(Mosquitto::start_any_port())
    }

    pub fn port(&self) -> u16 {
        match self {
            TestBroker::Edgemq(b) => b.port,
            TestBroker::Mosquitto(m) => m.port,
        }
    }

    /// kill -9, then start again on the same port with nothing of the old
    /// state: edgemq's data directory is deleted, Mosquitto never persists.
    pub fn crash_and_restart_empty(self) -> TestBroker {
        match self {
            TestBroker::Edgemq(mut b) => {
                b.kill9();
                let data = b.data_dir();
                if data.exists() {
                    std::fs::remove_dir_all(&data).unwrap();
                }
                b.restart();
                TestBroker::Edgemq(b)
            }
            TestBroker::Mosquitto(m) => {
                let port = m.port;
                m.kill();
                TestBroker::Mosquitto(Mosquitto::start(port))
            }
        }
    }
}
