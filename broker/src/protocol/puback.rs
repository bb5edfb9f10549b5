//! PUBACK, PUBREC, PUBREL and PUBCOMP: the four QoS 1/2 acknowledgements share
//! one layout (packet id, then in v5 an optional reason code and properties).

use bytes::{BufMut, BytesMut};

use super::wire::{ack_props, read_ack_props, Reader};
use super::{AckProperties, DecodeError, EncodeError, ProtocolVersion, PubAck};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<PubAck, DecodeError> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(r.protocol("packet identifier 0"));
    }
    let mut ack = PubAck {
        pkid,
        reason_code: 0,
        properties: AckProperties::default(),
    };
    if version.is_v5() {
        if r.remaining() > 0 {
            ack.reason_code = r.u8()?;
        }
        if r.remaining() > 0 {
            ack.properties = read_ack_props(r)?;
        }
    }
    r.finish()?;
    Ok(ack)
}

pub fn len(a: &PubAck, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 2;
    }
    let w = ack_props(&a.properties);
    if w.is_empty() {
        if a.reason_code == 0 {
            2
        } else {
            3
        }
    } else {
        3 + w.len()
    }
}

pub fn encode(a: &PubAck, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if a.pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    buf.put_u16(a.pkid);
    if !version.is_v5() {
        return Ok(());
    }
    let w = ack_props(&a.properties);
    if w.is_empty() {
        if a.reason_code != 0 {
            buf.put_u8(a.reason_code);
        }
    } else {
        w.check()?;
        buf.put_u8(a.reason_code);
        w.write(buf);
    }
    Ok(())
}
