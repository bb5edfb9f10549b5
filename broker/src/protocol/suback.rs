//! SUBACK (MQTT 3.1.1 section 3.9, MQTT 5.0 section 3.9): one code per filter.
//! In 3.1.1 every failure is 0x80; v5 carries the precise reason.

use bytes::{BufMut, BytesMut};

use super::reason::v311::SUBACK_FAILURE;
use super::wire::{ack_props, read_ack_props, Reader};
use super::{AckProperties, DecodeError, EncodeError, ProtocolVersion, SubAck};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let pkid = r.u16()?;
    let properties = if version.is_v5() {
        read_ack_props(r)?
    } else {
        AckProperties::default()
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8()?;
        if !version.is_v5() && code > 2 && code != SUBACK_FAILURE {
            return Err(r.malformed("invalid SUBACK return code"));
        }
        reason_codes.push(code);
    }
    Ok(SubAck {
        pkid,
        reason_codes,
        properties,
    })
}

pub fn len(s: &SubAck, version: ProtocolVersion) -> usize {
    let mut n = 2 + s.reason_codes.len();
    if version.is_v5() {
        n += ack_props(&s.properties).len();
    }
    n
}

pub fn encode(s: &SubAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    buf.put_u16(s.pkid);
    if version.is_v5() {
        let w = ack_props(&s.properties);
        w.check()?;
        w.write(buf);
        buf.put_slice(&s.reason_codes);
    } else {
        for &code in &s.reason_codes {
            buf.put_u8(if code >= 0x80 { SUBACK_FAILURE } else { code });
        }
    }
    Ok(())
}
