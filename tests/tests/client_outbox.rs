//! The client's outbox keeps every QoS 1 message until a broker acknowledged
//! it: across a broker crash and restart without persistence (the broker
//! reports no session, rumqttc drops its queue, the outbox re-publishes) and
//! across a cut link with a resumed session (rumqttc retransmits, the outbox
//! must not lose or confuse packet ids).
//!
//! Real parts: Mosquitto, killed with SIGKILL; a TCP proxy that holds the
//! publisher's bytes so messages are provably unacknowledged when the broker dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use client_support::{wait_until, Proxy, TestBroker};
use edgemq_client::{Client, ConnectOptions, Event, Events, OutMessage, Protocol};

const TOPIC: &str = "outbox/test";

fn options(port: u16, protocol: Protocol, id: &str, clean: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.protocol = protocol;
    o.client_id = id.into();
    o.clean_session = clean;
    o.outbox_capacity = 500;
    o.inflight = 20;
    o.reconnect_min = std::time::Duration::from_millis(20);
    o.reconnect_max = std::time::Duration::from_millis(200);
    o
}

/// A subscriber collecting message numbers; counts successful SUBACKs.
struct Sink {
    received: Arc<Mutex<Vec<u32>>>,
    subscribed: Arc<Mutex<usize>>,
    _client: Client,
}

impl Sink {
    fn start(port: u16, protocol: Protocol) -> Sink {
        let (client, events) = Client::connect(options(port, protocol, "sink", true)).unwrap();
        client.subscribe(TOPIC, 1).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(0));
        tokio::spawn(collect(events, received.clone(), subscribed.clone()));
        Sink {
            received,
            subscribed,
            _client: client,
        }
    }

    fn distinct(&self) -> BTreeSet<u32> {
        self.received.lock().unwrap().iter().copied().collect()
    }

    fn subacks(&self) -> usize {
        *self.subscribed.lock().unwrap()
    }
}

async fn collect(
    mut events: Events,
    received: Arc<Mutex<Vec<u32>>>,
    subscribed: Arc<Mutex<usize>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(m) => {
                let n = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                received.lock().unwrap().push(n);
            }
            Event::Subscribed { failures: 0 } => *subscribed.lock().unwrap() += 1,
            _ => {}
        }
    }
}

async fn publish_range(client: &Client, range: std::ops::Range<u32>) {
    for i in range {
        client
            .publish(OutMessage::new(TOPIC, 1, i.to_string()))
            .await
            .unwrap();
    }
}

async fn broker_restart_without_session(broker: TestBroker, protocol: Protocol) {
    let port = broker.port();
    let sink = Sink::start(port, protocol);
    wait_until(10, "sink subscribed", || sink.subacks() == 1).await;

    let proxy = Proxy::start(port).await;
    let (publisher, _events) = Client::connect(options(proxy.port, protocol, "pub", true)).unwrap();

    // Phase 1: delivered normally.
    publish_range(&publisher, 0..300).await;
    publisher.flush().await.unwrap();
    wait_until(10, "phase 1 delivered", || sink.distinct().len() == 300).await;

    // Phase 2: the broker never sees these bytes, then dies.
    proxy.hold();
    publish_range(&publisher, 300..700).await;
    assert_eq!(
        publisher.outbox_len(),
        400,
        "nothing can be acknowledged while held"
    );
    proxy.cut();

    // A fresh broker without the old sessions; the sink re-subscribes first,
    // the publisher is let through only then.
    let _broker = broker.crash_and_restart_empty();
    wait_until(10, "sink re-subscribed", || sink.subacks() == 2).await;
    proxy.resume();
    publish_range(&publisher, 700..800).await;
    tokio::time::timeout(std::time::Duration::from_secs(20), publisher.flush())
        .await
        .expect("outbox drained")
        .unwrap();
    wait_until(20, "every message delivered", || {
        sink.distinct().len() == 800
    })
    .await;
    assert_eq!(sink.distinct(), (0..800).collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v311_nothing_lost_when_broker_restarts_without_session() {
    broker_restart_without_session(TestBroker::mosquitto(), Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v5_nothing_lost_when_broker_restarts_without_session() {
    broker_restart_without_session(TestBroker::mosquitto(), Protocol::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgemq_v311_nothing_lost_when_broker_restarts_without_data() {
    broker_restart_without_session(TestBroker::edgemq(), Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edgemq_v5_nothing_lost_when_broker_restarts_without_data() {
    broker_restart_without_session(TestBroker::edgemq(), Protocol::V5).await;
}

/// Link cut with a persistent session kept by the broker: rumqttc
/// retransmits what was in flight, the outbox hands over the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_when_link_drops_and_session_resumes() {
    for broker in [TestBroker::mosquitto(), TestBroker::edgemq()] {
        link_drop_with_session(broker).await;
    }
}

async fn link_drop_with_session(broker: TestBroker) {
    let port = broker.port();
    let sink = Sink::start(port, Protocol::V311);
    wait_until(10, "sink subscribed", || sink.subacks() == 1).await;
    let proxy = Proxy::start(port).await;
    let (publisher, mut events) =
        Client::connect(options(proxy.port, Protocol::V311, "pub-persistent", false)).unwrap();
    publish_range(&publisher, 0..100).await;
    publisher.flush().await.unwrap();

    proxy.hold();
    publish_range(&publisher, 100..400).await;
    proxy.cut();
    publish_range(&publisher, 400..450).await;
    proxy.resume();

    let resumed = async {
        while let Some(event) = events.recv().await {
            if let Event::Connected {
                session_present: true,
            } = event
            {
                return;
            }
        }
        panic!("client closed before resuming its session");
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), resumed)
        .await
        .expect("session resumed");
    tokio::time::timeout(std::time::Duration::from_secs(20), publisher.flush())
        .await
        .expect("outbox drained")
        .unwrap();
    wait_until(20, "every message delivered", || {
        sink.distinct().len() == 450
    })
    .await;
    assert_eq!(sink.distinct(), (0..450).collect::<BTreeSet<_>>());
}

/// `try_publish` reports a full outbox instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_publish_reports_a_full_outbox() {
    let broker = TestBroker::edgemq();
    let port = broker.port();
    let proxy = Proxy::start(port).await;
    let mut o = options(proxy.port, Protocol::V5, "full", true);
    o.outbox_capacity = 5;
    let (publisher, _events) = Client::connect(o).unwrap();
    publisher
        .publish(OutMessage::new(TOPIC, 1, "warmup"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    proxy.hold();
    for i in 0..5 {
        publisher
            .try_publish(OutMessage::new(TOPIC, 1, format!("{i}")))
            .unwrap();
    }
    let err = publisher
        .try_publish(OutMessage::new(TOPIC, 1, "6"))
        .unwrap_err();
    assert!(
        matches!(err, edgemq_client::ClientError::OutboxFull { capacity: 5 }),
        "{err}"
    );
    proxy.resume();
    publisher.flush().await.unwrap();
    publisher
        .try_publish(OutMessage::new(TOPIC, 1, "after"))
        .unwrap();
}
