//! SUBSCRIBE (MQTT 3.1.1 section 3.8, MQTT 5.0 section 3.8).
//!
//! The codec checks the encoding of each filter and its options; whether a
//! filter is acceptable (syntax, policy) is the broker's decision, answered
//! per filter in SUBACK rather than by dropping the connection.

use bytes::{BufMut, BytesMut};

use super::wire::{check_len, prop, put_binary, PropWriter, Reader};
use super::{
    DecodeError, EncodeError, ProtocolVersion, QoS, RetainHandling, Subscribe, SubscribeFilter,
    SubscribeProperties,
};

pub fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(r.protocol("packet identifier 0"));
    }
    let mut properties = SubscribeProperties::default();
    if version.is_v5() {
        r.properties(|r, id| {
            match id {
                prop::SUBSCRIPTION_IDENTIFIER => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(r.protocol("subscription identifier 0"));
                    }
                    properties.subscription_identifier = Some(v)
                }
                prop::USER_PROPERTY => properties.user_properties.push(r.user_property()?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
    }
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        let options = r.u8()?;
        filters.push(decode_options(r, filter, options, version)?);
    }
    if filters.is_empty() {
        return Err(r.protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        pkid,
        properties,
        filters,
    })
}

fn decode_options(
    r: &Reader,
    filter: String,
    options: u8,
    version: ProtocolVersion,
) -> Result<SubscribeFilter, DecodeError> {
    let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
    if options & reserved != 0 {
        return Err(r.malformed("subscription options reserved bits set"));
    }
    let qos = QoS::from_u8(options & 0x03).ok_or_else(|| r.malformed("subscription QoS 3"))?;
    let retain_handling = match (options >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(r.malformed("retain handling 3")),
    };
    Ok(SubscribeFilter {
        filter,
        qos,
        no_local: options & 0x04 != 0,
        retain_as_published: options & 0x08 != 0,
        retain_handling,
    })
}

fn props(p: &SubscribeProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    if let Some(id) = p.subscription_identifier {
        w.varint(prop::SUBSCRIPTION_IDENTIFIER, id);
    }
    w.users(&p.user_properties);
    w
}

pub fn len(s: &Subscribe, version: ProtocolVersion) -> usize {
    let mut n = 2 + s.filters.iter().map(|f| 3 + f.filter.len()).sum::<usize>();
    if version.is_v5() {
        n += props(&s.properties).len();
    }
    n
}

pub fn encode(
    s: &Subscribe,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if s.pkid == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    if s.filters.is_empty() {
        return Err(EncodeError::Empty("SUBSCRIBE"));
    }
    buf.put_u16(s.pkid);
    if version.is_v5() {
        let w = props(&s.properties);
        w.check()?;
        w.write(buf);
    }
    for f in &s.filters {
        check_len(f.filter.len(), "topic filter")?;
        put_binary(buf, f.filter.as_bytes());
        let mut options = f.qos as u8;
        if version.is_v5() {
            options |= u8::from(f.no_local) << 2
                | u8::from(f.retain_as_published) << 3
                | (f.retain_handling as u8) << 4;
        }
        buf.put_u8(options);
    }
    Ok(())
}
