//! The records of the log and their framing on flash.
//!
//! Frame: `[len: u32 LE][crc32: u32 LE][postcard(Record)]`, padded with 0xFF
//! to the flash word. `len` counts the postcard bytes. In format version 2
//! the CRC covers the segment's sequence number (u64 LE), `len` and the
//! postcard bytes, so a torn length is caught and a stale frame left by a
//! torn erase never verifies under the segment's new seq (D6); version 1
//! frames (read only) leave the seq out. A length word of 0xFFFF_FFFF is
//! erased flash: the end of a segment's data.
//!
//! Format rules (pinned by golden files in `broker/tests/golden/`): `Record`
//! is append-only: never reorder or remove variants, never change a field's
//! type; add new variants at the end. No `usize` on flash. Payloads and
//! binary fields go through `Bytes` (serde_bytes-style), which decodes far
//! faster than a `Vec<u8>` of individually encoded bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Bytes of the frame header (length and CRC).
pub const FRAME_HEADER: usize = 8;
/// Erased-flash length word: no record here.
pub const ERASED_LEN: u32 = u32::MAX;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A message owed to the listed destinations (sessions, bridge lanes).
    /// A later record with the same id replaces the destination set (this is
    /// how compaction copies a message forward).
    Message(StoredMessage),
    /// The message `id` was delivered to `destination`.
    Ack { id: u64, destination: String },
    /// The retained message of a topic (replaces any earlier one).
    RetainedSet(StoredMessage),
    /// The retained message of `topic` was cleared.
    RetainedClear { topic: String },
    /// A persistent session's state (replaces any earlier one).
    SessionSave(StoredSession),
    /// A session ended; forget its state.
    SessionRemove { client_id: String },
    /// `destination` needs none of its queued messages any more (a session
    /// ended): one record instead of an ack per message.
    DestinationClear { destination: String },
    /// A persistent session's incoming QoS 2 packet id awaits PUBREL
    /// (`pending`) or was released, so a resent PUBLISH is not delivered twice
    /// after a restart.
    Qos2Incoming {
        client_id: String,
        pkid: u16,
        pending: bool,
    },
    /// Message `id` was sent to `destination` with packet id `pkid` and is
    /// at `stage` (1: PUBLISH sent, awaiting PUBACK; 2: awaiting PUBREC;
    /// 3: PUBREL sent, awaiting PUBCOMP). Live while the message is owed to
    /// the destination: after a restart it is resent with DUP and this
    /// packet id, or its PUBREL is (MQTT-4.4.0-1).
    Inflight {
        destination: String,
        id: u64,
        pkid: u16,
        stage: u8,
    },
    /// A persistent session's state with the user who owns it (replaces any
    /// earlier `SessionSave`/`SessionSaveOwned`). Written instead of
    /// `SessionSave` when the session has an owner, so images without
    /// owners stay byte-identical to older versions' (which read only
    /// `SessionSave`).
    SessionSaveOwned {
        owner: String,
        session: StoredSession,
    },
}

impl Record {
    /// The record that saves `session`: `SessionSaveOwned` when it has an
    /// owner, else the older `SessionSave`.
    pub fn session_save(mut session: StoredSession) -> Record {
        match session.owner.take() {
            Some(owner) => Record::SessionSaveOwned { owner, session },
            None => Record::SessionSave(session),
        }
    }

    /// The session a `SessionSave`/`SessionSaveOwned` record saves, with its
    /// owner; `None` for any other record.
    pub fn into_session(self) -> Option<StoredSession> {
        match self {
            Record::SessionSave(session) => Some(session),
            Record::SessionSaveOwned { owner, mut session } => {
                session.owner = Some(owner);
                Some(session)
            }
            _ => None,
        }
    }
}

/// A message as stored: what is needed to deliver it again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredMessage {
    pub id: u64,
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    /// Milliseconds since the Unix epoch when the broker received it.
    pub received_at_ms: u64,
    /// Absolute expiry (ms since the epoch) from the v5 Message Expiry Interval.
    pub expires_at_ms: Option<u64>,
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
    pub payload: Bytes,
    /// Destinations still owed this message (empty for retained records).
    pub destinations: Vec<String>,
}

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredSession {
    pub client_id: String,
    /// True for MQTT 5 sessions.
    pub v5: bool,
    /// Session Expiry Interval in seconds (u32::MAX: never).
    pub expiry_interval_secs: u32,
    /// When the client disconnected (ms since the epoch), if it is offline.
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
    /// Incoming QoS 2 packet ids received but not yet released (PUBREL).
    pub inbound_qos2: Vec<u16>,
    /// The user who owns the session (`[auth] client_id_binding`). Not part
    /// of this struct's encoding (older images have no such field): it is
    /// stored by `Record::SessionSaveOwned` beside the struct.
    #[serde(skip)]
    pub owner: Option<String>,
}

/// One subscription of a stored session, with its v5 options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_identifier: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record cannot be encoded: {0}")]
    Encode(#[from] postcard::Error),
    #[error("record of {0} bytes does not fit in a segment")]
    TooLarge(usize),
}

/// The postcard body of a record (framed later, once its segment is known).
pub fn encode_body(record: &Record) -> Result<Vec<u8>, RecordError> {
    Ok(postcard::to_stdvec(record)?)
}

/// Frames `body` for the segment with sequence number `seq` (format 2).
pub fn frame_body(body: &[u8], seq: u64, word: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(frame_len(body.len(), word));
    let len = body.len() as u32;
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&frame_crc_seq(seq, len, body).to_le_bytes());
    frame.extend_from_slice(body);
    frame.resize(frame_len(body.len(), word), 0xFF);
    frame
}

/// The CRC of a format 2 frame: over the segment's seq, the length and the body.
pub fn frame_crc_seq(seq: u64, len: u32, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Encodes `record` as a padded format 1 frame (read-only format: tests
/// and golden files build old images with it).
pub fn encode_frame(record: &Record, word: usize) -> Result<Vec<u8>, RecordError> {
    let mut frame = postcard::to_extend(record, vec![0u8; FRAME_HEADER])?;
    let len = (frame.len() - FRAME_HEADER) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    let crc = frame_crc(len, &frame[FRAME_HEADER..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    frame.resize(frame_len(len as usize, word), 0xFF);
    Ok(frame)
}

/// The CRC of a format 1 frame: over the length word and the body.
pub fn frame_crc(len: u32, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Size of a frame with `body_len` postcard bytes, padded to the word.
pub fn frame_len(body_len: usize, word: usize) -> usize {
    (FRAME_HEADER + body_len).div_ceil(word) * word
}

/// Decodes a record body; `None` if it is not a valid record.
pub fn decode_body(body: &[u8]) -> Option<Record> {
    postcard::from_bytes(body).ok()
}
