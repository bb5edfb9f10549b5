//! The persistence and authentication hooks, exercised in-process: a PUBACK
//! must wait for the durability of the copies its message needed, and the
//! authenticator decides on CONNECT.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{connect_packet, Raw};
use edgemq::broker::Broker;
use edgemq::config::{Config, ListenerConfig};
use edgemq::hooks::{
    AuthDecision, AuthRequest, Authenticator, BoxFuture, ClientIdentity, Durability,
    ListenerPolicy, MemoryOnly, Persistence,
};
use edgemq::protocol::{reason, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter};
use edgemq::router::{Delivery, Message};
use edgemq::session::{Session, SessionRecord};
use tokio::sync::oneshot;

/// A store whose enqueue completes only when the test says so.
#[derive(Default)]
struct GatedStore {
    gates: Mutex<Vec<oneshot::Sender<()>>>,
    enqueued: Mutex<Vec<(String, Vec<String>)>>,
}

impl Persistence for GatedStore {
    fn enqueue(&self, message: &Arc<Message>, client_ids: &[Arc<str>]) -> Durability {
        let (tx, rx) = oneshot::channel();
        self.gates.lock().expect("lock").push(tx);
        let ids = client_ids.iter().map(|c| c.to_string()).collect();
        self.enqueued
            .lock()
            .expect("lock")
            .push((message.topic.clone(), ids));
        Durability::Pending(Box::pin(async move {
            rx.await
                .map_err(|_| edgemq::hooks::PersistError::Failed("gate dropped".into()))
        }))
    }
    fn ack(&self, _: &str, _: u64) {}
    fn retain(&self, _: &str, _: Option<&Arc<Message>>) -> Durability {
        Durability::Done
    }
    fn save_session(&self, _: &SessionRecord) {}
    fn remove_session(&self, _: &str) {}
    fn incoming_qos2(&self, _: &str, _: u16, _: bool) -> Durability {
        Durability::Done
    }
}

/// Starts an in-process broker on a free port, on its own runtime.
fn start(
    persistence: Arc<dyn Persistence>,
    auth: Arc<dyn Authenticator>,
) -> (tokio::runtime::Runtime, SocketAddr) {
    start_with(persistence, auth, Config::default())
}

fn start_with(
    persistence: Arc<dyn Persistence>,
    auth: Arc<dyn Authenticator>,
    config: Config,
) -> (tokio::runtime::Runtime, SocketAddr) {
    start_prepared(persistence, auth, config, |_| {})
}

/// Like `start_with`, running `prepare` (e.g. restoring state) before the
/// listeners accept.
fn start_prepared(
    persistence: Arc<dyn Persistence>,
    auth: Arc<dyn Authenticator>,
    config: Config,
    prepare: impl FnOnce(&Arc<Broker>),
) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = Arc::new(Config {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..config
    });
    let listeners = runtime
        .block_on(edgemq::server::bind(&config.listeners))
        .expect("bind");
    let addr = listeners[0].local_addr().expect("addr");
    let broker = Broker::new(config, persistence, auth);
    {
        let _entered = runtime.enter();
        prepare(&broker);
    }
    runtime.spawn(edgemq::server::Server::run(
        broker,
        listeners,
        std::future::pending(),
    ));
    (runtime, addr)
}

#[test]
fn puback_waits_for_durability_of_persistent_copies() {
    let store = Arc::new(GatedStore::default());
    let (_rt, addr) = start(store.clone(), Arc::new(ListenerPolicy));
    let mut sub_connect = connect_packet(ProtocolVersion::V311, "keeper");
    sub_connect.clean_start = false;
    let (mut sub, _) = Raw::connect(addr.port(), sub_connect);
    sub.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new("durable/#", QoS::AtLeastOnce)],
        ..Subscribe::default()
    }));
    assert!(matches!(sub.recv(), Some(Packet::SubAck(_))));

    let (mut publ, _) = Raw::connect(addr.port(), connect_packet(ProtocolVersion::V5, "producer"));
    publ.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "durable/x".into(),
        pkid: 7,
        payload: bytes::Bytes::from_static(b"m"),
        ..Publish::default()
    }));
    publ.send(&Packet::PingReq);
    // The PINGRESP overtakes the PUBACK: the message is not durable yet.
    assert!(matches!(publ.recv(), Some(Packet::PingResp)));
    assert_eq!(
        *store.enqueued.lock().expect("lock"),
        vec![("durable/x".to_string(), vec!["keeper".to_string()])]
    );
    let gate = store.gates.lock().expect("lock").pop().expect("one gate");
    gate.send(()).expect("release");
    match publ.recv() {
        Some(Packet::PubAck(a)) => assert_eq!((a.pkid, a.reason_code), (7, 0)),
        other => panic!("expected PUBACK after durability, got {other:?}"),
    }
}

/// Accepts only user "ok"; nobody may publish to "locked/#".
struct OnlyOk;

impl Authenticator for OnlyOk {
    fn authenticate<'a>(&'a self, request: AuthRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        let decision = match request.username {
            Some("ok") => AuthDecision::Allow {
                username: Some("ok".into()),
            },
            _ => AuthDecision::Deny(reason::BAD_USER_NAME_OR_PASSWORD),
        };
        Box::pin(std::future::ready(decision))
    }
    fn authorize_publish(&self, _: &ClientIdentity, topic: &str) -> bool {
        !topic.starts_with("locked/")
    }
    fn authorize_subscribe(&self, client: &ClientIdentity, _: &str) -> bool {
        client.username.as_deref() == Some("ok")
    }
}

#[test]
fn authenticator_decides_connect_and_publish() {
    let (_rt, addr) = start(Arc::new(MemoryOnly), Arc::new(OnlyOk));
    let mut c = Raw::open(addr.port(), ProtocolVersion::V311);
    c.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V311,
        "anon",
    ))));
    match c.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, 4, "3.1.1 bad user name or password"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let mut ok = connect_packet(ProtocolVersion::V5, "named");
    ok.username = Some("ok".into());
    let (mut c, ack) = Raw::connect(addr.port(), ok);
    assert_eq!(ack.reason_code, 0);
    c.send(&Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: "locked/door".into(),
        pkid: 2,
        payload: bytes::Bytes::from_static(b"open"),
        ..Publish::default()
    }));
    match c.recv() {
        Some(Packet::PubRec(a)) => assert_eq!(a.reason_code, reason::NOT_AUTHORIZED),
        other => panic!("expected PUBREC 0x87, got {other:?}"),
    }
}

impl GatedStore {
    /// Releases the next write once it has been submitted (polls with a deadline).
    fn release_next(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let gate = {
                let mut gates = self.gates.lock().expect("lock");
                (!gates.is_empty()).then(|| gates.remove(0))
            };
            if let Some(gate) = gate {
                gate.send(()).expect("release");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no write submitted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[test]
fn v311_publisher_is_held_back_while_acknowledgements_wait() {
    let store = Arc::new(GatedStore::default());
    let mut config = Config::default();
    config.limits.max_inflight = 1;
    let (_rt, addr) = start_with(store.clone(), Arc::new(ListenerPolicy), config);
    let mut sub_connect = connect_packet(ProtocolVersion::V311, "keeper");
    sub_connect.clean_start = false;
    let (mut sub, _) = Raw::connect(addr.port(), sub_connect);
    sub.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter::new("bp", QoS::AtLeastOnce)],
        ..Subscribe::default()
    }));
    assert!(matches!(sub.recv(), Some(Packet::SubAck(_))));
    let (mut publ, _) = Raw::connect(addr.port(), connect_packet(ProtocolVersion::V311, "fast"));
    for pkid in 1..=2 {
        publ.send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "bp".into(),
            pkid,
            payload: bytes::Bytes::from_static(b"m"),
            ..Publish::default()
        }));
    }
    publ.send(&Packet::PingReq);
    store.release_next();
    assert!(matches!(publ.recv(), Some(Packet::PubAck(a)) if a.pkid == 1));
    store.release_next();
    // Had the broker kept reading, the PINGRESP would overtake this PUBACK.
    assert!(matches!(publ.recv(), Some(Packet::PubAck(a)) if a.pkid == 2));
    assert!(matches!(publ.recv(), Some(Packet::PingResp)));
}

#[test]
fn restored_sessions_and_retained_messages_are_served() {
    use edgemq::router::SubscriptionOptions;
    let (_rt, addr) = start_prepared(
        Arc::new(MemoryOnly),
        Arc::new(ListenerPolicy),
        Config::default(),
        |broker| {
            let mut options = SubscriptionOptions::qos(QoS::AtLeastOnce);
            options.id = Some(5);
            let mut session = Session::new(Arc::from("sleeper"), 3600, broker.mailbox_limits());
            broker
                .router
                .subscribe(&session.mailbox, "r/#", options.clone());
            session.subscriptions.insert("r/#".into(), options);
            let queued = Arc::new(Message::new(
                "r/1".into(),
                bytes::Bytes::from_static(b"kept"),
                QoS::AtLeastOnce,
                false,
                Default::default(),
                None,
            ));
            session.mailbox.requeue_front(vec![Delivery {
                message: queued,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![5],
                shared: None,
            }]);
            broker.restore_session(session);
            broker.restore_retained(Arc::new(Message::new(
                "ret/x".into(),
                bytes::Bytes::from_static(b"r"),
                QoS::AtMostOnce,
                true,
                Default::default(),
                None,
            )));
        },
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "sleeper");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let (mut c, ack) = Raw::connect(addr.port(), connect);
    assert!(ack.session_present);
    match c.recv() {
        Some(Packet::Publish(p)) => {
            assert_eq!((p.topic.as_str(), &p.payload[..]), ("r/1", &b"kept"[..]));
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert_eq!(p.properties.subscription_identifiers, vec![5]);
        }
        other => panic!("expected the restored message, got {other:?}"),
    }
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 2,
        filters: vec![SubscribeFilter::new("ret/#", QoS::AtMostOnce)],
        ..Subscribe::default()
    }));
    assert!(matches!(c.recv(), Some(Packet::SubAck(_))));
    assert!(matches!(c.recv(), Some(Packet::Publish(p)) if p.topic == "ret/x" && p.retain));
}

/// Records the incoming QoS 2 state changes it is told about.
#[derive(Default)]
struct Qos2Recorder {
    calls: Mutex<Vec<(String, u16, bool)>>,
}

impl Persistence for Qos2Recorder {
    fn enqueue(&self, _: &Arc<Message>, _: &[Arc<str>]) -> Durability {
        Durability::Done
    }
    fn ack(&self, _: &str, _: u64) {}
    fn retain(&self, _: &str, _: Option<&Arc<Message>>) -> Durability {
        Durability::Done
    }
    fn save_session(&self, _: &SessionRecord) {}
    fn remove_session(&self, _: &str) {}
    fn incoming_qos2(&self, client_id: &str, pkid: u16, pending: bool) -> Durability {
        self.calls
            .lock()
            .expect("lock")
            .push((client_id.to_string(), pkid, pending));
        Durability::Done
    }
}

/// M6: only persistent sessions store their pending QoS 2 ids (a clean
/// session's would never be restored, and would leak in the store).
#[test]
fn only_persistent_sessions_record_incoming_qos2_state() {
    let store = Arc::new(Qos2Recorder::default());
    let (_rt, addr) = start(store.clone(), Arc::new(ListenerPolicy));
    for (id, clean, pkid) in [("clean", true, 3u16), ("keeper", false, 4)] {
        let mut connect = connect_packet(ProtocolVersion::V311, id);
        connect.clean_start = clean;
        let (mut c, _) = Raw::connect(addr.port(), connect);
        c.send(&Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: "q2/x".into(),
            pkid,
            payload: bytes::Bytes::from_static(b"m"),
            ..Publish::default()
        }));
        assert!(matches!(c.recv(), Some(Packet::PubRec(r)) if r.pkid == pkid));
        let rel = edgemq::protocol::PubAck {
            pkid,
            ..Default::default()
        };
        c.send(&Packet::PubRel(rel));
        assert!(matches!(c.recv(), Some(Packet::PubComp(r)) if r.pkid == pkid));
    }
    assert_eq!(
        *store.calls.lock().expect("lock"),
        [
            ("keeper".to_string(), 4, true),
            ("keeper".to_string(), 4, false)
        ]
    );
}
