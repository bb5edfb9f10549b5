//! Golden files pin the store's on-flash format: the encoding of each record
//! variant and of a segment header must never change silently (a stored
//! image must stay readable after an upgrade). If a change is intended, it
//! needs a new format version and a migration, not a new golden file.
//! To create the file for a *new* variant only: EDGEMQ_WRITE_GOLDEN=1.

#![allow(clippy::expect_used)] // a failed expectation is a failed test

use bytes::Bytes;
use edgemq::storage::record::{
    encode_body, encode_frame, frame_body, Record, StoredMessage, StoredSession, StoredSubscription,
};
use edgemq::storage::segment::{encode_v1, Header};

fn records() -> Vec<Record> {
    let message = StoredMessage {
        id: 42,
        topic: "site/line-1/temp".into(),
        qos: 1,
        retain: false,
        received_at_ms: 1_790_000_000_000,
        expires_at_ms: Some(1_790_000_060_000),
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/1".into()),
        correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
        user_properties: vec![("unit".into(), "C".into())],
        payload: Bytes::from_static(br#"{"t":21.5}"#),
        destinations: vec!["session/dev-1".into(), "bridge/cloud/0".into()],
    };
    vec![
        Record::Message(message.clone()),
        Record::Ack {
            id: 42,
            destination: "session/dev-1".into(),
        },
        Record::RetainedSet(StoredMessage {
            destinations: vec![],
            retain: true,
            ..message
        }),
        Record::RetainedClear {
            topic: "site/line-1/temp".into(),
        },
        Record::SessionSave(StoredSession {
            client_id: "dev-1".into(),
            v5: true,
            expiry_interval_secs: 3600,
            disconnected_at_ms: Some(1_790_000_000_500),
            subscriptions: vec![StoredSubscription {
                filter: "cmd/#".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                subscription_identifier: Some(7),
            }],
            inbound_qos2: vec![9],
            owner: None,
        }),
        Record::SessionRemove {
            client_id: "dev-1".into(),
        },
        Record::DestinationClear {
            destination: "session/dev-1".into(),
        },
    ]
}

fn encoded() -> Vec<u8> {
    let mut out = encode_v1(7, 3).to_vec();
    for r in records() {
        out.extend(encode_frame(&r, 4).expect("encodable"));
    }
    out
}

/// Format version 2: 32-byte header with geometry, frame CRCs bound to the
/// segment's seq.
fn encoded_v2() -> Vec<u8> {
    let mut out = Header {
        seq: 7,
        erase_count: 3,
        segment_size: 1 << 20,
        capacity: 64 << 20,
    }
    .encode()
    .to_vec();
    for r in records() {
        out.extend(frame_body(&encode_body(&r).expect("encodable"), 7, 4));
    }
    out
}

#[test]
fn record_format_v2_is_pinned() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/records-v2.bin");
    let now = encoded_v2();
    if std::env::var_os("EDGEMQ_WRITE_GOLDEN").is_some() {
        std::fs::write(path, &now).expect("write golden file");
    }
    let golden = std::fs::read(path).expect("golden file missing: it is part of the repository");
    assert_eq!(
        now, golden,
        "the on-flash format changed: bump segment::FORMAT_VERSION and migrate"
    );
}

#[test]
fn record_format_is_pinned() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/records-v1.bin");
    let now = encoded();
    if std::env::var_os("EDGEMQ_WRITE_GOLDEN").is_some() {
        std::fs::write(path, &now).expect("write golden file");
    }
    let golden = std::fs::read(path).expect("golden file missing: it is part of the repository");
    assert_eq!(
        now, golden,
        "the on-flash format changed: bump segment::FORMAT_VERSION and migrate"
    );
}

#[test]
fn golden_records_decode_back() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/records-v1.bin");
    let golden = std::fs::read(path).expect("golden file");
    let mut off = edgemq::storage::segment::HEADER_LEN_V1;
    for want in records() {
        let len = u32::from_le_bytes(golden[off..off + 4].try_into().expect("4 bytes")) as usize;
        let body = &golden[off + 8..off + 8 + len];
        assert_eq!(edgemq::storage::record::decode_body(body), Some(want));
        off += edgemq::storage::record::frame_len(len, 4);
    }
}

/// A session with an owner (`[auth] client_id_binding`) is saved as the
/// newer `SessionSaveOwned` variant (its encoding pinned here); a session
/// without one keeps the old `SessionSave` encoding, and an old image's
/// `SessionSave` still restores (with no owner).
#[test]
fn owned_sessions_use_a_new_variant_and_old_session_records_still_restore() {
    use edgemq::storage::flash::{RamFlash, BLOCK};
    use edgemq::storage::{Overflow, Store};
    let owned = StoredSession {
        client_id: "plant-2".into(),
        expiry_interval_secs: 600,
        owner: Some("plant".into()),
        ..StoredSession::default()
    };
    let body = encode_body(&Record::session_save(owned.clone())).expect("encodable");
    // Variant 9, the owner, then the session exactly as `SessionSave` has it.
    let mut want = vec![9, 5];
    want.extend_from_slice(b"plant");
    want.extend(
        encode_body(&Record::SessionSave(StoredSession {
            owner: None,
            ..owned.clone()
        }))
        .expect("encodable")
        .into_iter()
        .skip(1),
    );
    assert_eq!(body, want);
    let decoded = edgemq::storage::record::decode_body(&body).expect("decodes");
    assert_eq!(decoded.into_session(), Some(owned.clone()));

    // Through a store and a reopen: the owned one keeps its owner, an
    // ownerless one is still written (and read) as `SessionSave`.
    let (mut store, _) =
        Store::open(RamFlash::new(16 * BLOCK), 2 * BLOCK, Overflow::Reject).expect("opens");
    let plain = StoredSession {
        client_id: "anon-1".into(),
        ..StoredSession::default()
    };
    store.save_session(owned.clone()).expect("saved");
    store.save_session(plain.clone()).expect("saved");
    store.commit().expect("committed");
    let (mut store, _) =
        Store::open(store.into_flash(), 2 * BLOCK, Overflow::Reject).expect("reopens");
    let mut sessions = store.sessions().expect("sessions");
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(sessions, vec![plain, owned]);

    // The v1 golden image's `SessionSave` (written before owners existed).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/records-v1.bin");
    let golden = std::fs::read(path).expect("golden file");
    let mut off = edgemq::storage::segment::HEADER_LEN_V1;
    let mut restored = Vec::new();
    while off + 8 <= golden.len() {
        let len = u32::from_le_bytes(golden[off..off + 4].try_into().expect("4 bytes")) as usize;
        let body = &golden[off + 8..off + 8 + len];
        let record = edgemq::storage::record::decode_body(body).expect("decodes");
        restored.extend(record.into_session());
        off += edgemq::storage::record::frame_len(len, 4);
    }
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].client_id, "dev-1");
    assert_eq!(restored[0].owner, None);
}
