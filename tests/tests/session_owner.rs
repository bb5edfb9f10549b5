//! A persistent session belongs to the user who opened it, across restarts
//! (`[auth] client_id_binding`, issue 17): the owner is stored with the
//! session, so a session restored from the store and never reconnected
//! still refuses another user, against the real broker binary with raw
//! MQTT clients over 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_support;

use std::time::Duration;

use edgemq::protocol::{Packet, QoS};
use edgemq_tests::Broker;
use security_support::*;

/// `plant` may use `plant-2` (its prefix), and so may the user `plant-2`
/// (its own name): the name rule alone cannot tell whose session it is.
const ACL: &str = "user plant\ntopic readwrite #\nuser plant-2\ntopic readwrite #\n";

fn persistent(client_id: &str, user: &str) -> edgemq::protocol::Connect {
    let mut c = login(V5, client_id, user);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    c
}

#[test]
fn a_restored_session_refuses_another_user_with_the_owners_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = auth_files(dir.path(), &["plant", "plant-2"], ACL);
    let config = format!("{config}client_id_binding = \"username-prefix\"\n");
    let mut broker = Broker::start_with(Some(&config));
    let port = broker.port;
    let mut owner = Raw::accepted(port, persistent("plant-2", "plant"));
    assert_eq!(owner.subscribe(&["cmd/#"], QoS::AtLeastOnce), [1]);
    drop(owner);
    // While the broker runs, the parked session is the owner's already.
    let (_other, code, _) = Raw::connect(port, persistent("plant-2", "plant-2"));
    assert_eq!(code, 0x85, "another user took a parked session over");

    // A message queued for the parked session, then a clean stop and a
    // start from the store: the session is restored, nobody reconnected.
    let mut publisher = Raw::accepted(port, login(V5, "plant-pub", "plant"));
    publisher.publish("cmd/x", b"for-plant", QoS::AtLeastOnce, false);
    drop(publisher);
    assert_eq!(broker.terminate(), Some(0), "log:\n{}", broker.log());
    broker.restart();

    let (_other, code, present) = Raw::connect(port, persistent("plant-2", "plant-2"));
    assert_eq!(
        (code, present),
        (0x85, false),
        "after a restart another user took the session over; log:\n{}",
        broker.log()
    );
    // The owner gets its session and its queued message.
    let (mut owner, code, present) = Raw::connect(port, persistent("plant-2", "plant"));
    assert_eq!((code, present), (0, true));
    match owner.next(Duration::from_secs(10)) {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"for-plant"),
        other => panic!("expected the queued message, got {other:?}"),
    }
}
