//! UNSUBACK (MQTT 3.1.1 section 3.11, MQTT 5.0 section 3.11). Reason codes
//! exist only in v5; a 3.1.1 UNSUBACK is just the packet id.

use bytes::{BufMut, BytesMut};

use super::wire::{ack_props, read_ack_props, Reader};
use super::{DecodeError, EncodeError, ProtocolVersion, UnsubAck};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let pkid = r.u16()?;
    let mut ack = UnsubAck {
        pkid,
        ..UnsubAck::default()
    };
    if version.is_v5() {
        ack.properties = read_ack_props(r)?;
        while r.remaining() > 0 {
            ack.reason_codes.push(r.u8()?);
        }
    }
    r.finish()?;
    Ok(ack)
}

pub fn len(u: &UnsubAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + ack_props(&u.properties).len() + u.reason_codes.len()
    } else {
        2
    }
}

pub fn encode(
    u: &UnsubAck,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    buf.put_u16(u.pkid);
    if version.is_v5() {
        let w = ack_props(&u.properties);
        w.check()?;
        w.write(buf);
        buf.put_slice(&u.reason_codes);
    }
    Ok(())
}
