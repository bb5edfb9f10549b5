//! Smoke tests with a real client library (rumqttc, v4 and v5 APIs) against
//! the real binary: QoS 0/1/2 both ways, retained messages, persistent
//! sessions and v5 properties.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

mod common;

use std::time::Duration;

use common::BrokerProcess;
use edgemq::protocol::{Packet as P, ProtocolVersion, Subscribe, SubscribeFilter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// Runs a v4 client's event loop, forwarding incoming packets.
fn v4_client(port: u16, id: &str, clean: bool) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(clean);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    (client, rx)
}

/// The next packet matching `pick`, skipping others (with a deadline).
async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    pick: impl Fn(Packet) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(p) => {
                    if let Some(t) = pick(p) {
                        return t;
                    }
                }
                None => panic!("client event loop ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("timed out waiting for a packet")
}

fn publish(p: Packet) -> Option<rumqttc::Publish> {
    match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    }
}

fn suback(p: Packet) -> Option<()> {
    matches!(p, Packet::SubAck(_)).then_some(())
}

#[tokio::test]
async fn v4_qos_levels_in_order() {
    let broker = BrokerProcess::start();
    let (sub, mut sub_rx) = v4_client(broker.port, "sub", true);
    sub.subscribe("q/#", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    next(&mut sub_rx, suback).await;
    let (publ, _pub_rx) = v4_client(broker.port, "pub", true);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(format!("q/{i}"), qos, false, vec![i as u8; 3])
            .await
            .expect("publish");
    }
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let p = next(&mut sub_rx, publish).await;
        assert_eq!(p.topic, format!("q/{i}"));
        assert_eq!(p.qos, qos);
        assert_eq!(&p.payload[..], &[i as u8; 3]);
    }
}

#[tokio::test]
async fn v4_granted_qos_caps_delivery() {
    let broker = BrokerProcess::start();
    let (sub, mut sub_rx) = v4_client(broker.port, "low", true);
    sub.subscribe("cap", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    next(&mut sub_rx, suback).await;
    let (publ, _r) = v4_client(broker.port, "high", true);
    publ.publish("cap", QoS::ExactlyOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(next(&mut sub_rx, publish).await.qos, QoS::AtMostOnce);
}

#[tokio::test]
async fn v4_retained_set_replace_clear() {
    let broker = BrokerProcess::start();
    let (publ, mut pub_rx) = v4_client(broker.port, "retainer", true);
    publ.publish("r/1", QoS::AtLeastOnce, true, "old")
        .await
        .expect("publish");
    publ.publish("r/1", QoS::AtLeastOnce, true, "new")
        .await
        .expect("publish");
    publ.publish("r/2", QoS::AtLeastOnce, true, "two")
        .await
        .expect("publish");
    publ.publish("r/2", QoS::AtLeastOnce, true, "")
        .await
        .expect("clear");
    for _ in 0..4 {
        next(&mut pub_rx, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    let (sub, mut sub_rx) = v4_client(broker.port, "late", true);
    sub.subscribe("r/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let p = next(&mut sub_rx, publish).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("r/1", &b"new"[..], true)
    );
    // A live publish after the retained one has no retain flag.
    publ.publish("r/3", QoS::AtMostOnce, false, "live")
        .await
        .expect("publish");
    let p = next(&mut sub_rx, publish).await;
    assert_eq!(
        (p.topic.as_str(), p.retain),
        ("r/3", false),
        "r/2 was cleared"
    );
}

#[tokio::test]
async fn v4_persistent_session_queues_while_offline() {
    let broker = BrokerProcess::start();
    // First visit over raw bytes, so the test knows when the broker has
    // closed the connection (the session is parked by then).
    let mut first = common::connect_packet(ProtocolVersion::V311, "durable");
    first.clean_start = false;
    let (mut raw, _) = common::Raw::connect(broker.port, first);
    raw.send(&P::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new(
            "d",
            edgemq::protocol::QoS::AtLeastOnce,
        )],
        ..Subscribe::default()
    }));
    assert!(matches!(raw.recv(), Some(P::SubAck(_))));
    raw.send(&P::Disconnect(Default::default()));
    assert!(raw.until_closed().is_empty());
    let (publ, mut pub_rx) = v4_client(broker.port, "feeder", true);
    publ.publish("d", QoS::AtLeastOnce, false, "while away")
        .await
        .expect("publish");
    next(&mut pub_rx, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let (_sub, mut sub_rx) = v4_client(broker.port, "durable", false);
    let present = next(&mut sub_rx, |p| match p {
        Packet::ConnAck(c) => Some(c.session_present),
        _ => None,
    })
    .await;
    assert!(present);
    let p = next(&mut sub_rx, publish).await;
    assert_eq!(&p.payload[..], b"while away");
}

#[tokio::test]
async fn v5_properties_pass_through_with_subscription_ids() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties, SubscribeProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Opts5};

    let broker = BrokerProcess::start();
    let (sub, mut sub_loop) = Client5::new(Opts5::new("sub5", "127.0.0.1", broker.port), 10);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = sub_loop.poll().await {
            if let E5::Incoming(p) = event {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    let props = SubscribeProperties {
        id: Some(42),
        user_properties: Vec::new(),
    };
    sub.subscribe_with_properties("v5/+", Q5::AtLeastOnce, props)
        .await
        .expect("subscribe");
    let wait_suback = async {
        loop {
            if let Some(P5::SubAck(_)) = rx.recv().await {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait_suback)
        .await
        .expect("suback");
    let (publ, mut pub_loop) = Client5::new(Opts5::new("pub5", "127.0.0.1", broker.port), 10);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let properties = PublishProperties {
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c1")),
        user_properties: vec![("k".into(), "v".into())],
        message_expiry_interval: Some(300),
        ..PublishProperties::default()
    };
    publ.publish_with_properties("v5/a", Q5::AtLeastOnce, false, "hi", properties)
        .await
        .expect("publish");
    let wait_publish = async {
        loop {
            if let Some(P5::Publish(p)) = rx.recv().await {
                return p;
            }
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(10), wait_publish)
        .await
        .expect("publish");
    let props = p.properties.expect("properties");
    assert_eq!(props.subscription_identifiers, vec![42]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"c1"[..]));
    assert_eq!(
        props.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    let expiry = props
        .message_expiry_interval
        .expect("remaining expiry forwarded");
    assert!(expiry <= 300 && expiry > 0);
}
