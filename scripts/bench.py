#!/usr/bin/env python3
"""Side-by-side broker benchmark: edgemq vs Mosquitto (and rumqttd if installed).

Starts each broker on its own loopback port, runs identical scenarios with the
raw-socket generator `edgemq-bench`, alternating brokers A B A B over several
rounds, and writes BENCHMARKS.md with medians and the edgemq/peer ratios.

Usage: python3 scripts/bench.py [--rounds 3] [--duration 5] [--out BENCHMARKS.md]
Needs: a release build (`cargo build --release -p edgemq -p firmware-sim`),
/usr/sbin/mosquitto, optionally `rumqttd` on PATH (cargo install rumqttd).
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EDGEMQ = os.path.join(TARGET, "release", "edgemq")
BENCH = os.path.join(TARGET, "release", "edgemq-bench")

SCENARIOS = [
    ("fan-in QoS 0, 20 to 1", ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "0"]),
    ("fan-in QoS 1, 20 to 1", ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "1"]),
    ("fan-out QoS 0, 1 to 50", ["--scenario", "fan-out", "--subscribers", "50", "--qos", "0"]),
    ("QoS 1 at 5,000 msg/s", ["--scenario", "latency", "--subscribers", "1", "--qos", "1", "--rate", "5000"]),
    ("1 KiB payloads, fan-in QoS 0, 20 to 1",
     ["--scenario", "fan-in", "--publishers", "20", "--subscribers", "1", "--qos", "0", "--payload", "1024"]),
    ("5,000 idle connections", ["--scenario", "idle", "--connections", "5000"]),
    ("durable QoS 1 into an offline session, 8 publishers (PUBACKs/s)",
     ["--scenario", "durable", "--publishers", "8", "--qos", "1", "--window", "64"]),
]

# Scenarios whose brokers persist: edgemq with durability = "sync", Mosquitto
# with its only loss-free setting (autosave_on_changes); rumqttd has no
# persistence and is left out.
DURABLE = "durable"


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


def start_edgemq(port, workdir, durable=False):
    cfg = os.path.join(workdir, "edgemq.toml")
    with open(cfg, "w") as f:
        if durable:
            # Default queue bounds: the backlog of the offline session spills to the store.
            f.write("[storage]\ndurability = \"sync\"\ncapacity = 268435456\n")
        else:
            f.write("[limits]\nmax_queued_messages = 10000000\nmax_queued_bytes = 4294967295\n")
            f.write("[storage]\ndurability = \"memory\"\n")
    return subprocess.Popen([EDGEMQ, "--config", cfg, "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(workdir, "data"), "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    return subprocess.Popen([shutil.which("rumqttd"), "--config", cfg, "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run_one(name, starter, args, duration):
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        proc = starter(port, workdir, durable=DURABLE in args)
        try:
            wait_port(port, proc)
            cmd = [BENCH, "--port", str(port), "--broker-pid", str(proc.pid), "--duration", str(duration)] + args
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                return {"error": out.stderr.strip()[-300:]}
            return json.loads(out.stdout)
        finally:
            proc.kill()
            proc.wait()


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--only", default=None, help="substring of the scenario names to run")
    opts = ap.parse_args()

    brokers = [("edgemq", start_edgemq), ("mosquitto", start_mosquitto)]
    if shutil.which("rumqttd"):
        brokers.append(("rumqttd", start_rumqttd))
    results = {}
    for title, args in SCENARIOS:
        if opts.only and opts.only not in title:
            continue
        for rnd in range(opts.rounds):
            for name, starter in brokers:  # A B A B: each round runs every broker once
                if DURABLE in args and name == "rumqttd":
                    continue
                r = run_one(name, starter, args, opts.duration)
                results.setdefault(title, {}).setdefault(name, []).append(r)
                print(f"[{rnd + 1}/{opts.rounds}] {title:45} {name:10} {json.dumps(r)[:160]}", file=sys.stderr)
    write_report(opts, brokers, results)


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.2f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"


def write_report(opts, brokers, results):
    names = [b[0] for b in brokers]
    lines = ["# edgemq benchmarks", "",
             "Produced by `python3 scripts/bench.py` "
             f"(`--rounds {opts.rounds} --duration {opts.duration}`) after "
             "`cargo build --release -p edgemq -p firmware-sim`. Load: `edgemq-bench`, a raw-socket generator on "
             "edgemq's codec (firmware-sim/src/bin/edgemq-bench). Brokers run one at a time on 127.0.0.1, "
             "alternating A B A B per round; figures are medians over rounds. Mosquitto: `persistence false`, "
             "`max_queued_messages 10000000`; edgemq: `durability = \"memory\"` and the same queue bound. "
             "Durable scenario: edgemq `durability = \"sync\"` (PUBACK after fdatasync, group commit; default queue "
             "bounds, the backlog spills to a 256 MiB store) vs Mosquitto "
             "`persistence true` + `autosave_on_changes true` (its only setting that keeps acknowledged messages "
             "across kill -9); rumqttd has no persistence.",
             "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "This machine is shared and noisy: compare ratios within one run, not across runs.", ""]
    header = "| scenario | figure | " + " | ".join(names) + " | edgemq / mosquitto |"
    lines += [header, "|" + "---|" * (len(names) + 3)]
    figures = [("delivered_per_sec", "delivered msg/s per subscriber"), ("latency_p50_us", "p50 latency (us)"),
               ("latency_p99_us", "p99 latency (us)"), ("bytes_per_connection", "RSS bytes per connection"),
               ("connect_secs", "seconds to connect all"), ("broker_peak_rss_kib", "broker peak RSS (KiB)"),
               ("broker_cpu_secs_per_million", "broker CPU s per million msgs"),
               ("generator_cpu_secs", "generator CPU s (load side)"), ("broker_cpu_secs", "broker CPU s (window)")]
    for title, per_broker in results.items():
        for key, label in figures:
            meds = {n: median([r.get(key) for r in per_broker.get(n, []) if "error" not in r]) for n in names}
            if all(v is None for v in meds.values()):
                continue
            ratio = "-"
            if meds.get("edgemq") is not None and meds.get("mosquitto"):
                ratio = f"{meds['edgemq'] / meds['mosquitto']:.2f}"
            lines.append(f"| {title} | {label} | " + " | ".join(fmt(meds[n]) for n in names) + f" | {ratio} |")
        errors = [(n, r["error"]) for n in names for r in per_broker.get(n, []) if "error" in r]
        for n, e in errors[:2]:
            lines.append(f"| {title} | error | {n}: {e.splitlines()[-1] if e else 'failed'} | | |")
    with open(opts.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {opts.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
