//! One sensor reading and its wire formats (postcard or JSON).
//!
//! Shared by the device (which encodes) and the verifier (which decodes), so
//! neither imports the other. Invariant: `decode(encode(r, f, n)) == Some(r)`
//! for both formats and any padding `n`; `decode` never panics on any input.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::scenario::PayloadFormat;
use crate::sensors::Value;

/// One reading as the firmware keeps it in RAM (fixed size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Device number, unique in the fleet.
    pub device: u32,
    /// Boot counter (survives power cuts).
    pub boot: u16,
    /// Sequence number within the boot.
    pub seq: u32,
    /// When the sensor was read, Unix epoch ms.
    pub ts_ms: u64,
    /// The measurement.
    pub value: Value,
}

/// A reading on the wire, padded to the scenario's payload size. Fields are
/// spelled out (no `flatten`, no skipped fields) because postcard is not
/// self-describing.
#[derive(Debug, Serialize, Deserialize)]
struct WireReading {
    device: u32,
    boot: u16,
    seq: u32,
    ts_ms: u64,
    value: Value,
    pad: String,
}

/// Encodes a reading, padded to at least `size` bytes.
pub fn encode(r: Reading, format: PayloadFormat, size: usize) -> Bytes {
    let to_bytes = |w: &WireReading| -> Vec<u8> {
        match format {
            PayloadFormat::Postcard => postcard::to_allocvec(w).unwrap_or_default(),
            PayloadFormat::Json => serde_json::to_vec(w).unwrap_or_default(),
        }
    };
    let mut wire = WireReading {
        device: r.device,
        boot: r.boot,
        seq: r.seq,
        ts_ms: r.ts_ms,
        value: r.value,
        pad: String::new(),
    };
    let len = to_bytes(&wire).len();
    if len < size {
        wire.pad = "x".repeat(size - len);
    }
    Bytes::from(to_bytes(&wire))
}

/// Decodes a reading written by [`encode`] in either format.
pub fn decode(payload: &[u8]) -> Option<Reading> {
    if payload.first() == Some(&b'{') {
        if let Ok(w) = serde_json::from_slice::<WireReading>(payload) {
            return Some(w.into());
        }
    }
    postcard::from_bytes::<WireReading>(payload)
        .ok()
        .map(Reading::from)
}

impl From<WireReading> for Reading {
    fn from(w: WireReading) -> Reading {
        Reading {
            device: w.device,
            boot: w.boot,
            seq: w.seq,
            ts_ms: w.ts_ms,
            value: w.value,
        }
    }
}
