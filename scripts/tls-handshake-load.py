#!/usr/bin/env python3
"""What TLS handshakes cost the other clients: the QoS 1 round trip of a
plain-TCP publisher while N threads do TLS handshakes against the same broker
(RSA 2048 server key: the server's signature is the expensive part).

    python3 scripts/tls-handshake-load.py --bin target/release/edgemq [--threads 50]

Starts its own broker (worker_threads = 1, as shipped) on 127.0.0.1 with a
plain and an mqtts listener, measures the publisher alone, then with the
handshake threads, and prints the round-trip percentiles of both phases.
A measurement, not a test: nothing is asserted.
"""
import argparse, os, socket, ssl, struct, subprocess, sys, tempfile, threading, time


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def mqtt_string(s):
    b = s.encode(); return struct.pack("!H", len(b)) + b


def packet(first, body):
    out, n = bytearray([first]), len(body)
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def read_packet(s):
    head = s.recv(1)
    if not head:
        raise EOFError
    mult, n = 1, 0
    while True:
        b = s.recv(1)[0]; n += (b & 0x7F) * mult; mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return head[0], body


def publisher(port, seconds, out):
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(packet(0x10, mqtt_string("MQTT") + bytes([4, 2]) + struct.pack("!H", 0) + mqtt_string("rtt-pub")))
    read_packet(s)
    end, pkid = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        pkid = pkid % 65535 + 1
        t = time.monotonic()
        s.sendall(packet(0x32, mqtt_string("rtt/x") + struct.pack("!H", pkid) + b"p"))
        while read_packet(s)[0] >> 4 != 4:
            pass
        out.append(time.monotonic() - t)
    s.close()


def handshaker(port, stop, counts):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    n = 0
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw) as tls:
                    tls.do_handshake()
            n += 1
        except OSError:
            time.sleep(0.01)
    counts.append(n)


def summary(name, rtts):
    rtts = sorted(rtts)
    if not rtts:
        return f"{name}: no round trips"
    q = lambda p: rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000
    return f"{name}: {len(rtts)} round trips, p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {rtts[-1]*1000:.2f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=4)
    a = ap.parse_args()
    d = tempfile.mkdtemp()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/key.pem",
                    "-out", f"{d}/cert.pem", "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    plain, tls = free_port(), free_port()
    with open(f"{d}/edgemq.toml", "w") as f:
        f.write(f'[server]\nworker_threads = 1\nmax_connections = 1000\n\n[[listener]]\naddress = "127.0.0.1:{plain}"\n\n'
                f'[[listener]]\naddress = "127.0.0.1:{tls}"\nprotocol = "mqtts"\n'
                f'cert_file = "{d}/cert.pem"\nkey_file = "{d}/key.pem"\n')
    log = open(f"{d}/broker.log", "w")
    broker = subprocess.Popen([a.bin, "--config", f"{d}/edgemq.toml", "--data-dir", f"{d}/data"], stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", plain)).close(); socket.create_connection(("127.0.0.1", tls)).close(); break
            except OSError:
                time.sleep(0.1)
        alone = []
        publisher(plain, a.seconds, alone)
        stop, counts, loaded = threading.Event(), [], []
        ts = [threading.Thread(target=handshaker, args=(tls, stop, counts)) for _ in range(a.threads)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        publisher(plain, a.seconds, loaded)
        stop.set()
        for t in ts:
            t.join()
        print(summary("alone", alone))
        print(summary(f"with {a.threads} handshake threads", loaded))
        print(f"handshakes: {sum(counts)} in {a.seconds + 0.5:.1f} s")
    finally:
        broker.terminate(); broker.wait()


if __name__ == "__main__":
    sys.exit(main())
