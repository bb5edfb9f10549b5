#!/usr/bin/env python3
"""Interoperability checks with paho-mqtt (Python), run by tests/tests/interop_paho.rs.

Usage: paho_interop.py PORT CHECK
Checks:
  qos      MQTT 3.1.1 and 5: subscribe, publish QoS 0/1/2, receive in order
  will     v5 will delay interval: a reconnect in time cancels the will,
           a longer absence publishes it
  props    v5 user properties, content type, response topic, correlation data
Exit 0 and print "ok" on success; print the reason and exit 1 otherwise.
"""

import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


def client(cid, protocol, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol, **kw)
    c.inbox = queue.Queue()
    c.on_message = lambda cl, ud, msg: cl.inbox.put(msg)
    return c


def connect(c, port, **kw):
    done = queue.Queue()
    c.on_connect = lambda cl, ud, flags, rc, props=None: done.put(rc)
    c.connect(HOST, port, keepalive=30, **kw)
    c.loop_start()
    rc = done.get(timeout=10)
    if rc != 0:
        raise SystemExit(f"connect refused: {rc}")


def subscribe(c, topic, qos):
    done = queue.Queue()
    c.on_subscribe = lambda cl, ud, mid, codes, props=None: done.put(codes)
    c.subscribe(topic, qos)
    codes = done.get(timeout=10)
    if any(getattr(code, "is_failure", False) for code in codes):
        raise SystemExit(f"subscribe refused: {codes}")


def expect(c, n, timeout=10):
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        try:
            out.append(c.inbox.get(timeout=0.2))
        except queue.Empty:
            pass
    return out


def check_qos(port):
    for name, proto in (("v311", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
        sub = client(f"paho-sub-{name}", proto)
        connect(sub, port)
        subscribe(sub, f"paho/{name}/#", 2)
        pub = client(f"paho-pub-{name}", proto)
        connect(pub, port)
        sent = []
        for qos in (0, 1, 2):
            for i in range(5):
                payload = f"{qos}-{i}"
                info = pub.publish(f"paho/{name}/{qos}", payload, qos=qos)
                info.wait_for_publish(timeout=10)
                sent.append(payload)
        got = [m.payload.decode() for m in expect(sub, len(sent))]
        if got != sent:
            raise SystemExit(f"{name}: sent {sent} got {got}")
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def will_client(port, delay):
    props = Properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = delay
    c = client("paho-will", mqtt.MQTTv5)
    c.will_set("paho/will", "gone", qos=1, properties=props)
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 60
    connect(c, port, clean_start=False, properties=cp)
    return c


def drop(c):
    # Close the socket without DISCONNECT: the will applies.
    c.loop_stop()
    c.socket().close()


def check_will(port):
    watcher = client("paho-watch", mqtt.MQTTv5)
    connect(watcher, port)
    subscribe(watcher, "paho/will", 1)
    c = will_client(port, 2)
    drop(c)
    c = will_client(port, 2)  # back within the delay: the will is cancelled
    time.sleep(3)
    if expect(watcher, 1, timeout=0.5):
        raise SystemExit("will published although the client reconnected within its delay")
    drop(c)
    got = expect(watcher, 1, timeout=10)
    if [m.payload.decode() for m in got] != ["gone"]:
        raise SystemExit(f"delayed will not published: {got}")


def check_props(port):
    sub = client("paho-props-sub", mqtt.MQTTv5)
    connect(sub, port)
    subscribe(sub, "paho/props", 1)
    pub = client("paho-props-pub", mqtt.MQTTv5)
    connect(pub, port)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "farm-7"), ("unit", "C")]
    props.ContentType = "application/json"
    props.ResponseTopic = "paho/reply"
    props.CorrelationData = b"\x01\x02"
    pub.publish("paho/props", '{"t":21.5}', qos=1, properties=props).wait_for_publish(timeout=10)
    got = expect(sub, 1)
    if not got:
        raise SystemExit("no message")
    p = got[0].properties
    checks = [
        (p.UserProperty, [("site", "farm-7"), ("unit", "C")]),
        (p.ContentType, "application/json"),
        (p.ResponseTopic, "paho/reply"),
        (p.CorrelationData, b"\x01\x02"),
    ]
    for have, want in checks:
        if have != want:
            raise SystemExit(f"property mismatch: {have!r} != {want!r}")


def main():
    port, check = int(sys.argv[1]), sys.argv[2]
    {"qos": check_qos, "will": check_will, "props": check_props}[check](port)
    print("ok")


if __name__ == "__main__":
    main()
