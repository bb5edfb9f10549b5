#!/usr/bin/env python3
"""Bridge forwarding: edgemq mirror, edgemq envelope+lz4 and Mosquitto's own
bridge, on the same load, side by side (issue 5's figures).

For each variant: a cloud Mosquitto, an edge broker bridging `sensors/#` to it,
N QoS 1 telemetry readings published at the edge with `mosquitto_pub -l`, and
a cloud subscriber that counts them (`edgemq-sub --unbatch` for envelopes).
Reports forwarded messages per second (publish start to last arrival) and
uplink bytes per message (the cloud's $SYS/broker/bytes/received delta / N).

Usage: python3 scripts/bench_bridge.py [--messages 20000] [--rounds 2]
Needs a release build: cargo build --release -p edgemq -p edgemq-client
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EDGEMQ = os.path.join(TARGET, "release", "edgemq")
SUB = os.path.join(TARGET, "release", "edgemq-sub")


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


def mosquitto(port, workdir, name, extra=""):
    conf = os.path.join(workdir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nsys_interval 1\n"
                f"max_queued_messages 10000000\npersistence false\nlog_dest none\n{extra}")
    p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def cloud_bytes(port):
    out = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", "$SYS/broker/bytes/received", "-C", "1", "-W", "5"],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def edgemq_edge(port, cloud, workdir, envelope):
    conf = os.path.join(workdir, "edge.toml")
    batch = ('[bridge.batch]\nmode = "envelope"\nenvelope_topic = "gw-0001/batch"\ncompression = "lz4"\n'
             if envelope else "")
    with open(conf, "w") as f:
        f.write(f'[[bridge]]\nname = "cloud"\naddress = "127.0.0.1:{cloud}"\nclient_id = "gw-0001"\n{batch}'
                f'[[bridge.forward]]\nfilter = "sensors/#"\nremote_prefix = "gw-0001/"\nqos = 1\n')
    p = subprocess.Popen([EDGEMQ, "--config", conf, "--listen", f"127.0.0.1:{port}", "--data-dir",
                          os.path.join(workdir, "data"), "--log-level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def mosquitto_edge(port, cloud, workdir):
    return mosquitto(port, workdir, "edge",
                     f"connection cloud\naddress 127.0.0.1:{cloud}\nclientid gw-0001\n"
                     "topic sensors/# out 1 \"\" gw-0001/\ncleansession true\n")


def run(variant, n):
    with tempfile.TemporaryDirectory() as workdir:
        cloud_port, edge_port = free_port(), free_port()
        cloud = mosquitto(cloud_port, workdir, "cloud")
        if variant == "mosquitto bridge":
            edge = mosquitto_edge(edge_port, cloud_port, workdir)
        else:
            edge = edgemq_edge(edge_port, cloud_port, workdir, variant.endswith("lz4"))
        try:
            time.sleep(1.0)  # bridges connect
            sub_args = [SUB, "-p", str(cloud_port), "-q", "1", "-C", str(n), "-W", "120"]
            sub_args += (["-V", "mqttv5", "--unbatch", "-t", "gw-0001/batch"] if variant.endswith("lz4")
                         else ["-t", "gw-0001/#"])
            sub = subprocess.Popen(sub_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            before = cloud_bytes(cloud_port)
            lines = "".join(f'{{"seq":{i},"t":21.5}}\n' for i in range(n))
            start = time.time()
            subprocess.run(["mosquitto_pub", "-p", str(edge_port), "-q", "1", "-t", "sensors/t1", "-l"],
                           input=lines, text=True, check=True)
            sub.wait(timeout=180)
            elapsed = time.time() - start
            time.sleep(2.2)  # the cloud's $SYS interval is 1 s
            after = cloud_bytes(cloud_port)
            return {"rate": n / elapsed, "bytes": (after - before) / n, "ok": sub.returncode == 0}
        finally:
            for p in (edge, cloud):
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    opts = ap.parse_args()
    variants = ["edgemq mirror", "edgemq envelope+lz4", "mosquitto bridge"]
    results = {v: [] for v in variants}
    for r in range(opts.rounds):
        for v in variants:
            res = run(v, opts.messages)
            print(f"[{r + 1}/{opts.rounds}] {v:22} {res}", file=sys.stderr)
            results[v].append(res)
    print(f"Bridge forwarding, {opts.messages} QoS 1 readings of ~20 bytes published at the edge with "
          f"`mosquitto_pub -l`; medians of {opts.rounds} rounds (`python3 scripts/bench_bridge.py "
          f"--messages {opts.messages} --rounds {opts.rounds}`):\n")
    print("| variant | forwarded msg/s | uplink bytes per message | all delivered |")
    print("|---|---|---|---|")
    for v in variants:
        rs = results[v]
        print(f"| {v} | {statistics.median(x['rate'] for x in rs):,.0f} | "
              f"{statistics.median(x['bytes'] for x in rs):.1f} | {all(x['ok'] for x in rs)} |")


if __name__ == "__main__":
    main()
