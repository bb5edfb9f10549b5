//! UNSUBSCRIBE (MQTT 3.1.1 section 3.10, MQTT 5.0 section 3.10).

use bytes::{BufMut, BytesMut};

use super::wire::{check_len, prop, put_binary, PropWriter, Reader};
use super::{DecodeError, EncodeError, ProtocolVersion, Unsubscribe};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(r.protocol("packet identifier 0"));
    }
    let mut user_properties = Vec::new();
    if version.is_v5() {
        r.properties(|r, id| {
            if id != prop::USER_PROPERTY {
                return Ok(false);
            }
            user_properties.push(r.user_property()?);
            Ok(true)
        })?;
    }
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(r.protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        pkid,
        user_properties,
        filters,
    })
}

fn props(u: &Unsubscribe) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.users(&u.user_properties);
    w
}

pub fn len(u: &Unsubscribe, version: ProtocolVersion) -> usize {
    let mut n = 2 + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
    if version.is_v5() {
        n += props(u).len();
    }
    n
}

pub fn encode(
    u: &Unsubscribe,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if u.pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    if u.filters.is_empty() {
        return Err(EncodeError::Empty("UNSUBSCRIBE"));
    }
    buf.put_u16(u.pkid);
    if version.is_v5() {
        let w = props(u);
        w.check()?;
        w.write(buf);
    }
    for f in &u.filters {
        check_len(f.len(), "topic filter")?;
        put_binary(buf, f.as_bytes());
    }
    Ok(())
}
