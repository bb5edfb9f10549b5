#!/usr/bin/env python3
"""A real MQTT-over-WebSocket client (paho-mqtt), run by tests/tests/tls_ws.rs.

Usage: ws_client.py PORT TOPIC [CAFILE]
Connects over ws:// (or wss:// when CAFILE is given, verifying the server
against it), subscribes to TOPIC and prints "subscribed"; prints the payload
of the first message it receives, then publishes "from-ws" (QoS 1) to
TOPIC/back, waits for the PUBACK, prints "published" and exits 0. Any
failure prints the reason and exits 1.
"""

import queue
import ssl
import sys

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"


def main():
    port, topic = int(sys.argv[1]), sys.argv[2]
    cafile = sys.argv[3] if len(sys.argv) > 3 else None
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="ws-client",
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    c.ws_set_options(path="/mqtt")
    if cafile:
        c.tls_set(ca_certs=cafile, cert_reqs=ssl.CERT_REQUIRED)
    events = queue.Queue()
    c.on_connect = lambda cl, ud, flags, rc, props=None: events.put(("connack", rc))
    c.on_subscribe = lambda cl, ud, mid, rcs, props=None: events.put(("suback", rcs))
    c.on_message = lambda cl, ud, msg: events.put(("message", msg.payload))
    c.on_publish = lambda cl, ud, mid, rc, props=None: events.put(("puback", rc))
    c.connect(HOST, port, keepalive=30)
    c.loop_start()

    def expect(kind):
        got, value = events.get(timeout=20)
        if got != kind:
            raise SystemExit(f"expected {kind}, got {got} {value}")
        return value

    rc = expect("connack")
    if rc != 0:
        raise SystemExit(f"connect refused: {rc}")
    c.subscribe(topic, qos=1)
    expect("suback")
    print("subscribed", flush=True)
    print(expect("message").decode(), flush=True)
    c.publish(topic + "/back", b"from-ws", qos=1)
    expect("puback")
    print("published", flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    try:
        main()
    except queue.Empty:
        print("timed out waiting for the broker", flush=True)
        sys.exit(1)
