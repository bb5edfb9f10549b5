//! A failing disk (issue 3): when the flash's sync fails, the store enters
//! its sticky failed state, the publisher whose message needed durability
//! gets no PUBACK (v5: DISCONNECT 0x80), and the broker keeps serving
//! everything that does not need the store. In-process, over a RAM flash
//! that fails on purpose.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{connect_packet, Raw};
use edgemq::broker::durable::DurableStore;
use edgemq::broker::Broker;
use edgemq::config::{Config, ListenerConfig};
use edgemq::hooks::ListenerPolicy;
use edgemq::protocol::{Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter};
use edgemq::storage::flash::{RamFlash, BLOCK};
use edgemq::storage::{Overflow, StorageConfig, Store, StoreHandle};

#[test]
fn fsync_failure_withholds_puback_and_the_broker_keeps_serving() {
    let (mut store, _) =
        Store::open(RamFlash::new(64 * BLOCK), 4 * BLOCK, Overflow::Reject).expect("store");
    store.flash_mut().set_fail_sync(true);
    let handle = StoreHandle::spawn(store, &StorageConfig::default());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = Arc::new(Config {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..Config::default()
    });
    let listeners = runtime
        .block_on(edgemq::server::bind(&config.listeners))
        .expect("bind");
    let port = listeners[0].local_addr().expect("addr").port();
    let broker = Broker::new(
        config,
        Arc::new(DurableStore::new(handle.clone())),
        Arc::new(ListenerPolicy),
    );
    runtime.spawn(edgemq::server::Server::run(
        broker,
        listeners,
        std::future::pending(),
    ));

    // A persistent subscriber: its copies need the (failing) store.
    let mut keeper_connect = connect_packet(ProtocolVersion::V311, "keeper");
    keeper_connect.clean_start = false;
    let (mut keeper, _) = Raw::connect(port, keeper_connect);
    keeper.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new("d/#", QoS::AtLeastOnce)],
        ..Subscribe::default()
    }));
    assert!(matches!(keeper.recv(), Some(Packet::SubAck(_))));

    let (mut publisher, _) = Raw::connect(port, connect_packet(ProtocolVersion::V5, "writer"));
    publisher.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "d/x".into(),
        pkid: 3,
        payload: bytes::Bytes::from_static(b"m"),
        ..Publish::default()
    }));
    match publisher.recv() {
        Some(Packet::PubAck(a)) => {
            assert!(a.reason_code >= 0x80, "a success PUBACK without durability")
        }
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, 0x80),
        None => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        handle.failure().is_some(),
        "the failure is sticky and visible"
    );

    // QoS 0 between clean sessions needs no store: still served.
    let (mut a, _) = Raw::connect(port, connect_packet(ProtocolVersion::V5, "a"));
    a.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new("live/#", QoS::AtMostOnce)],
        ..Subscribe::default()
    }));
    assert!(matches!(a.recv(), Some(Packet::SubAck(_))));
    let (mut b, _) = Raw::connect(port, connect_packet(ProtocolVersion::V5, "b"));
    b.send(&Packet::Publish(Publish {
        topic: "live/x".into(),
        payload: bytes::Bytes::from_static(b"ok"),
        ..Publish::default()
    }));
    match a.recv() {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"ok"),
        other => panic!("broker stopped serving: {other:?}"),
    }
}
