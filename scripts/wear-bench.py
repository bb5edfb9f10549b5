#!/usr/bin/env python3
"""Flash wear per message (issue 13): edgemq's settings and Mosquitto's
crash-safe mode, on the same load.

Load: 10 publishers, 100 QoS 1 messages per second in all, 64-byte payloads,
for --seconds per scenario. Scenarios:
  offline   a persistent subscriber (clean session off) is offline, sync mode
  cloud-up  a [[bridge]] to a Mosquitto "cloud" that is up and acknowledging
  cloud-down the same bridge, nothing listens at the cloud's address
  interval  `durability = "interval"`, offline persistent subscriber
  mosquitto Mosquitto with `autosave_on_changes` (autosave_interval 1),
            offline persistent subscriber
Reports, per message: bytes the broker process caused to be written
(/proc/<pid>/io write_bytes: page-cache writeback, the page granularity
included), write syscalls (syscw) and, for edgemq, the store's own counters
from /metrics (wear_bytes = programs + erases, syncs, and the share of
messages write-behind never wrote: `spared`, all destinations acknowledged
within `spill_after_ms`), plus the publishers' PUBACK latency p50/p99.

Usage: python3 scripts/wear-bench.py [--seconds 20] [--only offline,cloud-up]
       [--edgemq target/debug/edgemq] [--set storage.commit_delay_us=2000]
Needs: python3-paho-mqtt 2.x, mosquitto; 127.0.0.1 only.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PUBLISHERS = 10
RATE = 100
PAYLOAD = b"x" * 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError(f"nothing listens on {port}")


def proc_io(pid):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def metrics(port):
    if port is None:
        return {}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(edgemq_store_[a-z_]+) ([0-9.]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def client(cid, port, clean=True):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def offline_subscriber(port):
    c = client("wear-bench-sub", port, clean=False)
    r = c.subscribe("bench/#", qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    return r


def publish_load(port, seconds):
    """10 publishers at RATE/10 msg/s each; returns (messages, latencies)."""
    lat, sent, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    # Each publisher times its own PUBACKs (on_publish) and waits for them.
    def run_timed(i):
        c = client(f"wear-bench-pub-{i}", port)
        period = PUBLISHERS / RATE
        nxt = time.monotonic() + i * period / PUBLISHERS
        acked = {}
        c.on_publish = lambda cl, ud, mid, rc, props: acked.__setitem__(mid, time.monotonic())
        starts = {}
        while time.monotonic() < stop:
            time.sleep(max(0.0, nxt - time.monotonic()))
            nxt += period
            info = c.publish(f"bench/{i}", PAYLOAD, qos=1)
            starts[info.mid] = time.monotonic()
        deadline = time.monotonic() + 10
        while len(acked) < len(starts) and time.monotonic() < deadline:
            time.sleep(0.01)
        c.disconnect()
        c.loop_stop()
        with lock:
            sent[0] += len(starts)
            lat.extend(acked[m] - starts[m] for m in starts if m in acked)

    threads = [threading.Thread(target=run_timed, args=(i,)) for i in range(PUBLISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0], lat


def edgemq_config(workdir, port, mport, durability, cloud_port, extra):
    conf = os.path.join(workdir, "edgemq.toml")
    with open(conf, "w") as f:
        f.write(f'[[listener]]\nprotocol = "mqtt"\naddress = "127.0.0.1:{port}"\n\n')
        f.write(f'[storage]\ndir = "{workdir}/data"\ndurability = "{durability}"\n')
        for k, v in extra:
            f.write(f"{k} = {v}\n")
        f.write(f'\n[metrics]\nlisten = "127.0.0.1:{mport}"\n')
        if cloud_port:
            f.write(f'\n[[bridge]]\nname = "cloud"\naddress = "127.0.0.1:{cloud_port}"\n'
                    f'client_id = "wear-bench-gw"\nreconnect_max_ms = 1000\n'
                    f'[[bridge.forward]]\nfilter = "bench/#"\nremote_prefix = "gw/"\nqos = 1\n')
    return conf


def mosquitto(port, workdir, extra):
    conf = os.path.join(workdir, f"mosquitto-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                f"max_queued_messages 10000000\nlog_dest none\n{extra}")
    p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def scenario(name, args):
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        port, mport = free_port(), free_port()
        cloud, cloud_port, mport_used = None, None, mport
        extra = [tuple(s.split("=", 1)) for s in args.set]
        extra = [(k.split(".", 1)[1], v) for k, v in extra if k.startswith("storage.")]
        if name == "mosquitto":
            broker = mosquitto(port, workdir, f"persistence true\npersistence_location {workdir}/\n"
                                               "autosave_interval 1\nautosave_on_changes true\n")
            mport_used = None
        else:
            durability = "interval" if name == "interval" else "sync"
            if name.startswith("cloud"):
                cloud_port = free_port()
                if name == "cloud-up":
                    cloud = mosquitto(cloud_port, workdir, "persistence false\n")
            conf = edgemq_config(workdir, port, mport, durability, cloud_port, extra)
            broker = subprocess.Popen([args.edgemq, "--config", conf, "--log-level", "warn"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port)
            wait_port(mport)
        try:
            if not name.startswith("cloud"):
                offline_subscriber(port)
            time.sleep(2 if name.startswith("cloud") else 0.5)
            io0, m0 = proc_io(broker.pid), metrics(mport_used)
            n, lat = publish_load(port, args.seconds)
            time.sleep(1.5)  # the ack timer and Mosquitto's autosave
            io1, m1 = proc_io(broker.pid), metrics(mport_used)
        finally:
            broker.terminate()
            broker.wait()
            if cloud:
                cloud.terminate()
                cloud.wait()
        d = lambda k: io1[k] - io0[k]
        row = {
            "scenario": name, "messages": n,
            "write_bytes/msg": d("write_bytes") / max(n, 1),
            "syscw/msg": d("syscw") / max(n, 1),
        }
        if m1:
            md = lambda k: m1.get(k, 0) - m0.get(k, 0)
            row["store wear bytes/msg"] = md("edgemq_store_wear_bytes") / max(n, 1)
            row["store syncs/msg"] = md("edgemq_store_syncs") / max(n, 1)
            row["never written %"] = 100 * md("edgemq_store_spared") / max(n, 1)
        lat.sort()
        if lat:
            row["PUBACK p50 ms"] = 1000 * statistics.median(lat)
            row["PUBACK p99 ms"] = 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--only", default="offline,cloud-up,cloud-down,interval,mosquitto")
    ap.add_argument("--edgemq", default=os.path.join(TARGET, "release", "edgemq"))
    ap.add_argument("--workdir", default=None, help="where data dirs go (default: $TMPDIR)")
    ap.add_argument("--set", action="append", default=[], help="storage.KEY=VALUE (TOML value)")
    args = ap.parse_args()
    cols = ["scenario", "messages", "write_bytes/msg", "syscw/msg", "store wear bytes/msg",
            "store syncs/msg", "never written %", "PUBACK p50 ms", "PUBACK p99 ms"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in args.only.split(","):
        row = scenario(name, args)
        cells = []
        for c in cols:
            v = row.get(c, "–")
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
