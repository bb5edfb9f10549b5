#!/usr/bin/env python3
"""Side-by-side broker benchmark: edgemq builds vs Mosquitto, rumqttd and FlashMQ.

Starts each broker on its own loopback port, runs identical scenarios with the
raw-socket generator `edgemq-bench`, alternating brokers A B C ... per round,
and writes the medians (with their spread over rounds) and ratios into the
generated section of BENCHMARKS.md (between the `bench.py:begin/end` markers;
the rest of the file is left alone). Every flood scenario reports delivered,
accepted (PUBACKed at QoS 1, written at QoS 0) and lost messages side by side.

Usage:
  python3 scripts/bench.py [--rounds 3] [--duration 5] [--only fan-in,idle]
      [--edgemq NAME=PATH ...] [--big-queues NAME ...] [--ratio A/B ...]
Needs: `cargo build --release -p edgemq -p firmware-sim`; /usr/sbin/mosquitto;
rumqttd and flashmq on PATH or in $EDGEMQ_PEERS_DIR/bin (default
~/.cache/edgemq-peers/bin, built by scripts/build-peers.sh). A missing peer is
skipped with the reason printed.

edgemq columns: each `--edgemq NAME=PATH` runs with edgemq's default config
(only the listener and the data dir set); `--big-queues NAME` adds a column
"NAME big queues" with `max_queued_messages` and `outbound_capacity` at
1,000,000 (and `max_queued_bytes` at 4 GiB). Without `--edgemq` the build in
$CARGO_TARGET_DIR/release is "edgemq", with big queues.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PEERS_DIR = os.environ.get("EDGEMQ_PEERS_DIR", os.path.expanduser("~/.cache/edgemq-peers"))
BEGIN, END = "<!-- bench.py:begin -->", "<!-- bench.py:end -->"

SCENARIOS = [
    ("fan-in QoS 1, 20 to 1", ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "1"]),
    ("fan-in QoS 0, 20 to 1", ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "0"]),
    ("fan-out QoS 0, 1 to 50", ["--scenario", "fan-out", "--subscribers", "50", "--qos", "0"]),
    ("QoS 1 at 5,000 msg/s, 20 publishers",
     ["--scenario", "latency", "--publishers", "20", "--subscribers", "1", "--qos", "1", "--rate", "5000"]),
    ("1 KiB payloads, fan-in QoS 0, 20 to 1",
     ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "0", "--payload", "1024"]),
    ("5,000 idle connections", ["--scenario", "idle", "--connections", "5000"]),
    ("durable QoS 1 into an offline session, 8 publishers",
     ["--scenario", "durable", "--publishers", "8", "--qos", "1", "--window", "64"]),
]

# Scenarios whose brokers persist: edgemq with durability = "sync", Mosquitto
# with its only loss-free setting (autosave_on_changes). rumqttd has no
# persistence; FlashMQ saves sessions only periodically (save_state_interval).
DURABLE = "durable"
NOT_DURABLE = {"rumqttd": "no persistence", "flashmq": "no per-message persistence (periodic state save only)"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port}")


def edgemq_starter(path, big_queues):
    def start(port, workdir, durable=False):
        cfg = os.path.join(workdir, "edgemq.toml")
        with open(cfg, "w") as f:
            if big_queues:
                f.write("[limits]\nmax_queued_messages = 1000000\noutbound_capacity = 1000000\n"
                        "max_queued_bytes = 4294967295\n")
            if durable:
                # The backlog of the offline session spills to a 256 MiB store.
                f.write("[storage]\ndurability = \"sync\"\ncapacity = 268435456\n")
        return subprocess.Popen([path, "--config", cfg, "--listen", f"127.0.0.1:{port}", "--data-dir",
                                 os.path.join(workdir, "data"), "--log-level", "warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start


def start_mosquitto(port, workdir, durable=False):
    cfg = os.path.join(workdir, "mosquitto.conf")
    with open(cfg, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 10000000\nmax_inflight_messages 0\nlog_dest none\n")
        if durable:
            f.write(f"persistence true\npersistence_location {workdir}/\n"
                    "autosave_on_changes true\nautosave_interval 1\n")
        else:
            f.write("persistence false\n")
    return subprocess.Popen(["/usr/sbin/mosquitto", "-c", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_rumqttd(port, workdir, durable=False):
    cfg = os.path.join(workdir, "rumqttd.toml")
    with open(cfg, "w") as f:
        f.write(f"""id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
""")
    return subprocess.Popen([find_peer("rumqttd"), "--config", cfg, "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_flashmq(port, workdir, durable=False):
    # A config that does not drop: queues up to 65535 messages / 1 GiB per client.
    cfg = os.path.join(workdir, "flashmq.conf")
    with open(cfg, "w") as f:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        f.write(f"""thread_count 2
rlimit_nofile {nofile}
allow_anonymous true
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 1073741824
log_file {workdir}/flashmq.log
log_level error
listen {{
  protocol mqtt
  inet_protocol ip4
  inet4_bind_address 127.0.0.1
  port {port}
}}
""")
    return subprocess.Popen([find_peer("flashmq"), "--config-file", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def find_peer(name):
    """A peer binary from PATH or the build-peers.sh cache, or None."""
    cached = os.path.join(PEERS_DIR, "bin", name)
    return shutil.which(name) or (cached if os.access(cached, os.X_OK) else None)


def brokers_for(opts):
    """(column name, starter) for every broker of the run; prints why a peer is skipped."""
    brokers = []
    builds = opts.edgemq or [f"edgemq={os.path.join(TARGET, 'release', 'edgemq')}"]
    names = []
    for spec in builds:
        name, sep, path = spec.partition("=")
        if not sep or not os.access(path, os.X_OK):
            sys.exit(f"--edgemq {spec}: expected NAME=PATH to an executable")
        names.append(name)
        brokers.append((name, edgemq_starter(path, False)))
    for name in opts.big_queues if opts.big_queues is not None else ([] if opts.edgemq else names[:1]):
        path = dict(b.partition("=")[::2] for b in builds).get(name)
        if path is None:
            sys.exit(f"--big-queues {name}: no --edgemq build of that name")
        brokers.append((f"{name} big queues", edgemq_starter(path, True)))
    peers = {"mosquitto": start_mosquitto, "rumqttd": start_rumqttd, "flashmq": start_flashmq}
    for peer in opts.peers.split(","):
        if peer not in peers:
            sys.exit(f"--peers: unknown peer {peer}")
        if peer == "mosquitto" and not os.access("/usr/sbin/mosquitto", os.X_OK):
            print("skipping mosquitto: /usr/sbin/mosquitto not found (apt-get install mosquitto)", file=sys.stderr)
        elif peer != "mosquitto" and find_peer(peer) is None:
            print(f"skipping {peer}: not on PATH nor in {PEERS_DIR}/bin (run scripts/build-peers.sh)",
                  file=sys.stderr)
        else:
            brokers.append((peer, peers[peer]))
    return brokers


def run_one(bench, starter, args, opts):
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        proc = starter(port, workdir, durable=DURABLE in args)
        try:
            wait_port(port, proc)
            cmd = [bench, "--port", str(port), "--broker-pid", str(proc.pid), "--duration", str(opts.duration),
                   "--drain", str(opts.drain)] + args
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                return {"error": out.stderr.strip()[-300:]}
            return json.loads(out.stdout)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            return {"error": str(e)}
        finally:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=10.0, help="longest drain after the publishers stop (s)")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--json", default=None, help="also write every raw result here")
    ap.add_argument("--merge", default=None,
                    help="a --json file of an earlier run: its scenarios not rerun here stay in the table")
    ap.add_argument("--only", default=None, help="comma-separated beginnings of the scenario names to run")
    ap.add_argument("--edgemq", action="append", help="NAME=PATH of an edgemq build (repeatable)")
    ap.add_argument("--big-queues", action="append", help="NAME of an --edgemq build to also run with big queues")
    ap.add_argument("--peers", default="mosquitto,rumqttd,flashmq")
    ap.add_argument("--ratio", action="append", help="A/B: a ratio column of two broker columns (repeatable)")
    ap.add_argument("--bench", default=os.path.join(TARGET, "release", "edgemq-bench"))
    opts = ap.parse_args()

    brokers = brokers_for(opts)
    names = [b[0] for b in brokers]
    ratios = [r.split("/", 1) for r in (opts.ratio or [f"{names[0]}/{p}" for p in ("flashmq", "mosquitto")
                                                        if p in names])]
    started = time.gmtime()
    results = {}
    for title, args in SCENARIOS:
        if opts.only and not any(title.startswith(o) for o in opts.only.split(",")):
            continue
        for rnd in range(opts.rounds):
            for name, starter in brokers:  # A B C ...: each round runs every broker once
                if DURABLE in args and name in NOT_DURABLE:
                    continue
                r = run_one(opts.bench, starter, args, opts)
                results.setdefault(title, {}).setdefault(name, []).append(r)
                print(f"[{rnd + 1}/{opts.rounds}] {title:40} {name:22} {json.dumps(r)[:200]}", file=sys.stderr)
    if opts.merge:
        with open(opts.merge) as f:
            merged = json.load(f)
        merged.update(results)  # rerun scenarios replace the earlier run's, in the earlier order
        results = merged
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)
    write_report(opts, names, ratios, results, started)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_report import write_report  # noqa: E402
    main()
