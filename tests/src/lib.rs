//! Shared harness for edgemq's end-to-end tests: start the real binaries on
//! loopback, wait for them, kill them, and clean up.
//!
//! The broker binary is found next to the test executable's target dir
//! (`target/<profile>/edgemq`, built by `scripts/test.sh` before the tests
//! run) or at `$EDGEMQ_BIN`. `$EDGEMQ_RUNNER` is an optional command prefix,
//! e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`, to run an ARM
//! build under qemu-user while the test itself runs natively.
//! Nothing here sleeps for synchronisation: waits poll a condition with a
//! deadline and fail with the broker's log attached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Blocks until something accepts TCP connections on 127.0.0.1:`port`;
/// panics after 10 s.
pub fn wait_listening(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
        "nothing listening on {port}"
    );
}

/// Waits until every thread of process `pid` is traced (strace -f -p
/// attaches to them one after another); panics with what to fix when it
/// cannot attach (ptrace needs root, CAP_SYS_PTRACE or
/// `kernel.yama.ptrace_scope = 0`).
pub fn wait_traced(pid: u32) {
    let traced = |status: &str| {
        status
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
    };
    let all_traced = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        let mut any = false;
        for task in tasks.flatten() {
            any = true;
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if !traced(&status) {
                return false;
            }
        }
        any
    };
    assert!(
        wait_until(Duration::from_secs(10), all_traced),
        "strace could not attach to every thread of {pid}: it needs ptrace on a \
         non-child process (root, CAP_SYS_PTRACE or kernel.yama.ptrace_scope = 0)"
    );
}

fn target_dir_binary(name: &str) -> PathBuf {
    // current_exe: target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    profile_dir.join(name)
}

/// Path of one of the workspace's binaries (`edgemq`, `edgemq-pub`, ...).
pub fn binary(name: &str) -> PathBuf {
    if name == "edgemq" {
        if let Ok(p) = std::env::var("EDGEMQ_BIN") {
            let path = PathBuf::from(p);
            assert!(
                path.is_absolute() && path.exists(),
                "EDGEMQ_BIN={} must be an absolute path to an existing binary \
                 (cargo runs tests in the package directory)",
                path.display()
            );
            return path;
        }
    }
    let path = target_dir_binary(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`) or set EDGEMQ_BIN",
        path.display()
    );
    path
}

/// A `Command` running the broker binary, through `$EDGEMQ_RUNNER` (for
/// example qemu-user for an ARM build) when that is set.
pub fn edgemq_command() -> Command {
    match std::env::var("EDGEMQ_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("env"));
            c.args(parts).arg(binary("edgemq"));
            c
        }
        _ => Command::new(binary("edgemq")),
    }
}

/// Checks an external tool is installed; the tests never skip silently.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/install-deps.sh (CI installs it)"
    );
}

/// A running edgemq broker on 127.0.0.1.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: Option<String>,
    starts: u32,
}

impl Broker {
    /// Starts with the embedded defaults.
    pub fn start() -> Broker {
        Self::start_with(None)
    }

    /// Starts with `config` (TOML) written to a file and passed with --config.
    pub fn start_with(config: Option<&str>) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Broker {
            // Port 0: the broker binds a port of its own and reports it
            // (see `spawn`), so tests never race each other for a free port.
            port: 0,
            child: None,
            dir,
            config: config.map(str::to_string),
            starts: 0,
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("broker-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut cmd = edgemq_command();
        // A config with its own listeners gets the harness's plain listener
        // added to them; otherwise --listen sets it.
        let own_listeners = self
            .config
            .as_deref()
            .is_some_and(|c| c.contains("[[listener]]"));
        if let Some(cfg) = &self.config {
            let path = self.dir.path().join("edgemq.toml");
            let cfg = match own_listeners {
                true => format!("{cfg}\n[[listener]]\naddress = \"{}\"\n", self.addr()),
                false => cfg.clone(),
            };
            std::fs::write(&path, cfg).expect("write config");
            cmd.arg("--config").arg(path);
        }
        if !own_listeners {
            cmd.arg("--listen").arg(self.addr().to_string());
        }
        let log = std::fs::File::create(self.log_path()).expect("log file");
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--log-level")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("cannot start edgemq"));
        // Ready when *this* process says it started (it listens only after
        // recovering its store), naming the addresses it bound, and our
        // listener (the last one: `--listen`, or the one added above)
        // answers. A restart asks for the port the first start got.
        let log_path = self.log_path();
        let child = self.child.as_mut().expect("child");
        let mut bound = None;
        let up = wait_until(Duration::from_secs(30), || {
            bound = std::fs::read_to_string(&log_path)
                .ok()
                .and_then(|log| started_listeners(&log).pop());
            matches!(child.try_wait(), Ok(None))
                && bound.is_some_and(|addr| {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                })
        });
        assert!(up, "edgemq did not start listening; log:\n{}", self.log());
        if let Some(addr) = bound {
            self.port = addr.port();
        }
    }

    /// The broker's log of its latest run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replaces the configuration the next start (`restart`) writes.
    pub fn set_config(&mut self, config: &str) {
        self.config = Some(config.to_string());
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.terminate_status().and_then(|s| s.code())
    }

    /// SIGTERM and wait (at most 10 s) for exit; returns the exit status,
    /// `None` when it did not exit (it is then killed).
    pub fn terminate_status(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The listener addresses a broker's log reports on its `edgemq started`
/// line, in configuration order (empty until that line is written).
pub fn started_listeners(log: &str) -> Vec<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("edgemq started"))
        .filter_map(|l| l.split_once("listeners=").map(|(_, rest)| rest))
        .flat_map(|rest| {
            let list = rest.split_whitespace().next().unwrap_or_default();
            list.split(',')
                .filter_map(|a| a.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A real Mosquitto on 127.0.0.1 (the stand-in cloud broker).
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: String,
}

impl Mosquitto {
    /// Starts on a free port. Mosquitto cannot bind port 0 and report it,
    /// so a port another process took meanwhile is retried with a new one.
    pub fn start(extra_conf: &str) -> Mosquitto {
        let mut last_log = String::new();
        for _ in 0..5 {
            let mut m = Mosquitto::new(free_port(), extra_conf);
            match m.try_spawn() {
                Ok(()) => return m,
                Err(log) => last_log = log,
            }
        }
        panic!("mosquitto did not start on five free ports; last log:\n{last_log}");
    }

    /// Starts on `port` (a restart on the port a test already uses).
    pub fn start_on(port: u16, extra_conf: &str) -> Mosquitto {
        let mut m = Mosquitto::new(port, extra_conf);
        m.spawn();
        m
    }

    /// Starts on `port`, or returns Mosquitto's log when it cannot.
    pub fn try_start_on(port: u16, extra_conf: &str) -> Result<Mosquitto, String> {
        let mut m = Mosquitto::new(port, extra_conf);
        m.try_spawn().map(|()| m)
    }

    fn new(port: u16, extra_conf: &str) -> Mosquitto {
        Mosquitto {
            port,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra_conf.to_string(),
        }
    }

    /// The directory of its configuration and persistence (for files the
    /// extra configuration names).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("mosquitto did not start on port {}:\n{log}", self.port);
        }
    }

    /// Starts the process and waits until it listens; `Err(its log)` when
    /// it exits first (its port was taken) or does not listen in 10 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).expect("mosquitto.conf");
        writeln!(
            f,
            // `user root`: started as root (CI), Mosquitto would otherwise
            // switch to its own user and lose access to our temp files.
            "listener {} 127.0.0.1\n{}user root\npersistence_location {}/\n{}",
            self.port,
            match self.extra.contains("allow_anonymous") {
                true => "",
                false => "allow_anonymous true\n",
            },
            self.dir.path().display(),
            self.extra
        )
        .expect("write mosquitto.conf");
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: run scripts/install-deps.sh");
        let log_path = self.dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path).expect("mosquitto.log");
        let child = self.child.insert(
            Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start mosquitto"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        // Ready when it says so: a port that answers may be another
        // process's, which our Mosquitto failed to bind.
        let mut exited = false;
        let up = wait_until(Duration::from_secs(10), || {
            exited = !matches!(child.try_wait(), Ok(None));
            exited
                || (std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(" running"))
                    && TcpStream::connect(addr).is_ok())
        });
        if up && !exited {
            return Ok(());
        }
        self.stop();
        Err(std::fs::read_to_string(&log_path).unwrap_or_default())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again without stopping first (after `terminate`).
    pub fn spawn_again(&mut self) {
        self.spawn();
    }

    /// SIGTERM: Mosquitto saves its persistence database, then exits.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command with a deadline, returning its output.
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{cmd:?} timed out after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `mosquitto_sub` collecting `count` messages (or until `secs`).
pub fn mosquitto_sub(port: u16, args: &[&str], count: usize, secs: u32) -> Child {
    require_tool("mosquitto_sub");
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-C", &count.to_string(), "-W", &secs.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run mosquitto_sub")
}

/// Runs `mosquitto_pub` to completion.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Output {
    require_tool("mosquitto_pub");
    run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        Duration::from_secs(30),
    )
    .expect("mosquitto_pub")
}

/// Publishes `lines` as QoS 1 messages on `topic` with one `mosquitto_pub
/// -l`, which exits once every PUBACK has arrived; panics if it fails.
pub fn mosquitto_pub_lines(port: u16, topic: &str, lines: &[String]) {
    require_tool("mosquitto_pub");
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run mosquitto_pub");
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write to mosquitto_pub");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the retained `$SYS` topic reads `want` (at most 20 s);
/// returns the last value seen.
pub fn wait_sys(port: u16, topic: &str, want: &str) -> String {
    let mut sub = Sub::spawn(port, &["-t", topic]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline && last != want {
        for line in sub.messages(1, Duration::from_secs(1)) {
            last = line.rsplit(' ').next().unwrap_or_default().to_string();
        }
    }
    last
}

/// Connects a raw TCP socket to the broker (for byte-level tests).
pub fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_nodelay(true).ok();
    s
}

/// A `mosquitto_sub -d` process whose output is read line by line, so a
/// test can wait for its SUBACK before publishing and then collect messages.
pub struct Sub {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sub {
    /// Starts `mosquitto_sub -d -v` with `args` (topics, -V, -q, -c, -i ...).
    pub fn spawn(port: u16, args: &[&str]) -> Sub {
        require_tool("mosquitto_sub");
        // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-d", "-v"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines }
    }

    /// Waits for the SUBACK; panics with what was seen if it does not come.
    pub fn wait_subscribed(&mut self) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("received SUBACK") => return,
                Ok(line) => seen.push(line),
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("mosquitto_sub exited ({status}) before its SUBACK: {seen:?}");
                    }
                }
            }
        }
        panic!("no SUBACK within 15 s: {seen:?}");
    }

    /// Collects up to `n` messages as `topic payload` lines (debug lines
    /// skipped), waiting at most `timeout` in all.
    pub fn messages(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if is_debug_line(&line) => {}
                Ok(line) => out.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Every line (debug included) that arrives within `timeout`.
    pub fn raw_lines(&mut self, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(line);
        }
        out
    }

    /// Stops the subscriber (SIGKILL: no DISCONNECT is sent).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the subscriber with SIGINT: mosquitto_sub sends DISCONNECT.
    pub fn interrupt(mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_debug_line(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (mid")
}

/// Runs the real openssl tool in `dir`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a throw-away PKI with the real openssl tool in `dir`: `ca.pem`,
/// and `server.pem`/`server.key` for localhost and 127.0.0.1.
pub fn make_pki(dir: &Path) {
    require_tool("openssl");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=edgemq test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// Makes a client certificate `NAME.pem`/`NAME.key` with Common Name
/// `name`, signed by the CA [`make_pki`] made in `dir`.
pub fn make_client_cert(dir: &Path, name: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={name}");
    // Extensions make it an X.509 v3 certificate, which webpki requires.
    let ext = format!("{name}.cnf");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("client ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// Reads the next MQTT packet from a raw socket with edgemq's codec; `None`
/// when the connection closed or sent something undecodable.
pub fn read_packet(
    s: &mut TcpStream,
    buf: &mut bytes::BytesMut,
    version: edgemq::protocol::ProtocolVersion,
) -> Option<edgemq::protocol::Packet> {
    edgemq::framed::read_packet_blocking(s, buf, version, 1 << 24).ok()
}
