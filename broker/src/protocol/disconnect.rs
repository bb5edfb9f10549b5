//! DISCONNECT (MQTT 3.1.1 section 3.14, MQTT 5.0 section 3.14). A 3.1.1
//! DISCONNECT has no body; a v5 one may omit its reason code (0, normal) and
//! properties.

use bytes::{BufMut, BytesMut};

use super::wire::{prop, PropWriter, Reader};
use super::{DecodeError, Disconnect, DisconnectProperties, EncodeError, ProtocolVersion};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if version.is_v5() {
        if r.remaining() > 0 {
            d.reason_code = r.u8()?;
        }
        if r.remaining() > 0 {
            let p = &mut d.properties;
            r.properties(|r, id| {
                match id {
                    prop::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
                    prop::REASON_STRING => p.reason_string = Some(r.string()?),
                    prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
                    prop::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
        }
    }
    r.finish()?;
    Ok(d)
}

fn props(p: &DisconnectProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.u32(prop::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)
        .string(prop::REASON_STRING, &p.reason_string)
        .users(&p.user_properties)
        .string(prop::SERVER_REFERENCE, &p.server_reference);
    w
}

pub fn len(d: &Disconnect, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 0;
    }
    let w = props(&d.properties);
    match (d.reason_code, w.is_empty()) {
        (0, true) => 0,
        (_, true) => 1,
        _ => 1 + w.len(),
    }
}

pub fn encode(
    d: &Disconnect,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !version.is_v5() {
        return Ok(());
    }
    let w = props(&d.properties);
    if w.is_empty() {
        if d.reason_code != 0 {
            buf.put_u8(d.reason_code);
        }
    } else {
        w.check()?;
        buf.put_u8(d.reason_code);
        w.write(buf);
    }
    Ok(())
}
