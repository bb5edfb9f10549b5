"""The report half of scripts/bench.py: medians, spread and ratios as Markdown,
written between the `bench.py:begin/end` markers of BENCHMARKS.md (the rest of
the file is left as it is; without the markers the table goes to OUT.table.md).

Every cell is the median over rounds; rates and latencies carry their spread
(half the max-min range over rounds, as a percentage of the median), so a
reader can tell noise from a difference. Loss is "lost of owed": deliveries
owed (messages accepted times subscribers) that never arrived, where † marks a
round whose drain hit its time limit while messages were still arriving.
"""

import os
import platform
import shlex
import statistics
import sys
import time

BEGIN, END = "<!-- bench.py:begin -->", "<!-- bench.py:end -->"

# (report key, label, kind); kind picks the formatting.
FIGURES = [
    ("delivered_per_sec", "delivered msg/s (per subscriber)", "rate"),
    ("accepted_per_sec", "accepted msg/s (PUBACKed at QoS 1, written at QoS 0)", "rate"),
    ("lost", "lost of owed deliveries", "loss"),
    ("latency_p50_us", "p50 latency (us)", "rate"),
    ("latency_p99_us", "p99 latency (us)", "rate"),
    ("bytes_per_connection", "RSS bytes per idle connection", "rate"),
    ("connect_secs", "seconds to connect all", "num"),
    ("broker_peak_rss_kib", "broker peak RSS (MiB)", "mib"),
    ("broker_cpu_secs_per_million", "broker CPU s per million delivered", "num"),
    ("generator_cpu_secs", "generator CPU s (load side)", "num"),
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def num(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def short(v):
    """1234567 -> 1.23M, 45678 -> 45.7k."""
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:,.0f}"


def values(runs, key):
    return [r.get(key) for r in runs if "error" not in r and r.get(key) is not None]


def cell(runs, key, kind):
    vals = values(runs, key)
    if not vals:
        return "-", None
    med = median(vals)
    if kind == "loss":
        owed = median(values(runs, "owed")) or 0
        dagger = "†" if any(r.get("drain_complete") is False for r in runs if "error" not in r) else ""
        return f"{short(med)} of {short(owed)}{dagger}", med
    if kind == "mib":
        return f"{med / 1024:.1f}", med
    text = num(med)
    if kind == "rate" and len(vals) > 1 and med:
        text += f" ±{(max(vals) - min(vals)) / 2 / med * 100:.0f}%"
    return text, med


def header(opts, started):
    cmd = "python3 scripts/bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return [
        f"Produced by `{cmd}` after `cargo build --release -p edgemq -p firmware-sim` and "
        "`scripts/build-peers.sh`. Load: `edgemq-bench`, a raw-socket generator on edgemq's codec "
        "(firmware-sim/src/bin/edgemq-bench) that counts every message end to end: after the measured "
        f"window the publishers stop and the run drains (up to {opts.drain:g} s, ending after a second "
        "with no traffic), then every message the broker accepted during the whole run is checked against "
        "what each subscriber received. Brokers run one at a time on 127.0.0.1, alternating A B C ... per "
        "round; each cell is the median over rounds, ± half the spread (max - min) over rounds.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; started "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', started)}. Shared with other engineers' builds: compare ratios "
        "within one run, not across runs.",
        "",
    ]


def table(names, ratios, results):
    lines = ["| scenario | figure | " + " | ".join(names) + " | "
             + " | ".join(f"{a} / {b}" for a, b in ratios) + " |",
             "|" + "---|" * (len(names) + 2 + len(ratios))]
    for title, per_broker in results.items():
        for key, label, kind in FIGURES:
            if key == "delivered_per_sec" and ("durable" in title or "idle" in title):
                continue  # durable: the subscriber is offline (accepted = PUBACKs); idle: no traffic
            cells = {n: cell(per_broker.get(n, []), key, kind) for n in names}
            if all(c[1] is None for c in cells.values()):
                continue
            if key == "accepted_per_sec" and "durable" in title:
                label = "PUBACKed msg/s (edgemq: after fdatasync)"
            ratio_cells = []
            for a, b in ratios:
                va, vb = cells.get(a, (None, None))[1], cells.get(b, (None, None))[1]
                ratio_cells.append(f"{va / vb:.2f}" if va is not None and vb and kind != "loss" else "-")
            lines.append(f"| {title} | {label} | " + " | ".join(cells[n][0] for n in names) + " | "
                         + " | ".join(ratio_cells) + " |")
        for n in names:
            errs = [r["error"] for r in per_broker.get(n, []) if "error" in r]
            if errs:
                last = errs[-1].splitlines()[-1] if errs[-1] else "failed"
                lines.append(f"| {title} | error ({len(errs)} of {len(per_broker[n])} rounds) | {n}: {last} |"
                             + " |" * (len(names) + len(ratios) - 1))
    return lines


def write_report(opts, names, ratios, results, started):
    section = [BEGIN, ""] + header(opts, started) + table(names, ratios, results) + ["", END]
    text = open(opts.out).read() if os.path.exists(opts.out) else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        out, body = opts.out, head + "\n".join(section) + tail
    else:
        out, body = opts.out + ".table.md", "\n".join(section) + "\n"
    with open(out, "w") as f:
        f.write(body)
    print(f"wrote {out}", file=sys.stderr)
