//! Fuzzes the MQTT decoder: any byte sequence, both protocol versions, a
//! small maximum packet size. Decode must never panic; it returns packets,
//! "need more bytes" or an error.
#![no_main]

use bytes::BytesMut;
use edgemq::protocol::{decode, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = decode(&mut buf, v, 65_536) {}
    }
});
