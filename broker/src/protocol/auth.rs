//! AUTH (MQTT 5.0 section 3.15): extended authentication exchanges. Packet
//! type 15 is reserved in 3.1.1, so the codec refuses it there both ways.

use bytes::{BufMut, BytesMut};

use super::wire::{prop, PropWriter, Reader};
use super::{Auth, AuthProperties, DecodeError, EncodeError};

pub fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if r.remaining() > 0 {
        a.reason_code = r.u8()?;
        let p = &mut a.properties;
        r.properties(|r, id| {
            match id {
                prop::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
                prop::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
                prop::REASON_STRING => p.reason_string = Some(r.string()?),
                prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
    }
    r.finish()?;
    Ok(a)
}

fn props(p: &AuthProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.string(prop::AUTHENTICATION_METHOD, &p.authentication_method)
        .binary(prop::AUTHENTICATION_DATA, &p.authentication_data)
        .string(prop::REASON_STRING, &p.reason_string)
        .users(&p.user_properties);
    w
}

pub fn len(a: &Auth) -> usize {
    let w = props(&a.properties);
    if a.reason_code == 0 && w.is_empty() {
        0
    } else {
        1 + w.len()
    }
}

pub fn encode(a: &Auth, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let w = props(&a.properties);
    if a.reason_code == 0 && w.is_empty() {
        return Ok(());
    }
    w.check()?;
    buf.put_u8(a.reason_code);
    w.write(buf);
    Ok(())
}
