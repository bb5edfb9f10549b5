//! CONNECT (MQTT 3.1.1 section 3.1, MQTT 5.0 section 3.1).
//!
//! CONNECT is the only packet that tells us the protocol version, so it is
//! decoded without knowing it: the protocol name and level decide how the
//! rest (properties, will properties) is read.

use bytes::{BufMut, BytesMut};

use super::wire::{check_len, prop, put_binary, PropWriter, Reader};
use super::{
    Connect, ConnectProperties, DecodeError, EncodeError, LastWill, ProtocolVersion, QoS,
    WillProperties,
};

pub fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", _) | (b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocol { level }),
        _ => return Err(DecodeError::UnsupportedProtocol { level }),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(r.malformed("CONNECT reserved flag is set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(r.malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or_else(|| r.malformed("will QoS 3"))?;
    if !protocol.is_v5() && password_flag && !username_flag {
        return Err(r.malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        read_connect_props(r)?
    } else {
        ConnectProperties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if protocol.is_v5() {
            read_will_props(r)?
        } else {
            WillProperties::default()
        };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn read_connect_props(r: &mut Reader) -> Result<ConnectProperties, DecodeError> {
    let mut p = ConnectProperties::default();
    r.properties(|r, id| {
        match id {
            prop::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            prop::RECEIVE_MAXIMUM => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(r.protocol("receive maximum 0"));
                }
                p.receive_maximum = Some(v)
            }
            prop::MAXIMUM_PACKET_SIZE => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(r.protocol("maximum packet size 0"));
                }
                p.maximum_packet_size = Some(v)
            }
            prop::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            prop::REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(r.flag_byte()?)
            }
            prop::REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(r.flag_byte()?)
            }
            prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
            prop::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            prop::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(r.protocol("authentication data without a method"));
    }
    Ok(p)
}

fn read_will_props(r: &mut Reader) -> Result<WillProperties, DecodeError> {
    let mut p = WillProperties::default();
    r.properties(|r, id| {
        match id {
            prop::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            prop::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(r.flag_byte()?),
            prop::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            prop::CONTENT_TYPE => p.content_type = Some(r.string()?),
            prop::RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            prop::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
            prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}

fn connect_props(p: &ConnectProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.u32(prop::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)
        .u16(prop::RECEIVE_MAXIMUM, p.receive_maximum)
        .u32(prop::MAXIMUM_PACKET_SIZE, p.maximum_packet_size)
        .u16(prop::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum)
        .byte(
            prop::REQUEST_RESPONSE_INFORMATION,
            p.request_response_information,
        )
        .byte(
            prop::REQUEST_PROBLEM_INFORMATION,
            p.request_problem_information,
        )
        .users(&p.user_properties)
        .string(prop::AUTHENTICATION_METHOD, &p.authentication_method)
        .binary(prop::AUTHENTICATION_DATA, &p.authentication_data);
    w
}

fn will_props(p: &WillProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.u32(prop::WILL_DELAY_INTERVAL, p.will_delay_interval)
        .byte(prop::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator)
        .u32(prop::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval)
        .string(prop::CONTENT_TYPE, &p.content_type)
        .string(prop::RESPONSE_TOPIC, &p.response_topic)
        .binary(prop::CORRELATION_DATA, &p.correlation_data)
        .users(&p.user_properties);
    w
}

fn protocol_name(v: ProtocolVersion) -> (&'static [u8], u8) {
    match v {
        ProtocolVersion::V31 => (b"MQIsdp", 3),
        ProtocolVersion::V311 => (b"MQTT", 4),
        ProtocolVersion::V5 => (b"MQTT", 5),
    }
}

/// Remaining length of the encoded CONNECT.
pub fn len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let (name, _) = protocol_name(c.protocol);
    let mut n = 2 + name.len() + 1 + 1 + 2;
    if v5 {
        n += connect_props(&c.properties).len();
    }
    n += 2 + c.client_id.len();
    if let Some(w) = &c.will {
        if v5 {
            n += will_props(&w.properties).len();
        }
        n += 2 + w.topic.len() + 2 + w.payload.len();
    }
    n += c.username.as_ref().map_or(0, |u| 2 + u.len());
    n += c.password.as_ref().map_or(0, |p| 2 + p.len());
    n
}

pub fn encode(c: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    check_len(c.client_id.len(), "client identifier")?;
    if let Some(u) = &c.username {
        check_len(u.len(), "user name")?;
    }
    if let Some(p) = &c.password {
        check_len(p.len(), "password")?;
    }
    if let Some(w) = &c.will {
        check_len(w.topic.len(), "will topic")?;
        check_len(w.payload.len(), "will payload")?;
    }
    let (name, level) = protocol_name(c.protocol);
    put_binary(buf, name);
    buf.put_u8(level);
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        let w = connect_props(&c.properties);
        w.check()?;
        w.write(buf);
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            let p = will_props(&w.properties);
            p.check()?;
            p.write(buf);
        }
        put_binary(buf, w.topic.as_bytes());
        put_binary(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(buf, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(buf, p);
    }
    Ok(())
}
