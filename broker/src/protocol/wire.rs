//! Wire primitives shared by every packet module: integers, variable byte
//! integers, length-prefixed strings and binary data, and the v5 property
//! block.
//!
//! Readers work on a `Bytes` that holds exactly one packet's body, so reading
//! past its end is a malformed packet, never a panic. Binary fields and
//! payloads are copied into exact-size buffers, unless they are large and
//! make up at least half of the read buffer they arrived in (see
//! [`ZERO_COPY_MIN`]): a slice would keep that whole buffer alive, so a
//! small message queued for a slow subscriber must not be one. Writers
//! append to a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, EncodeError, PacketType, UserProperty};

/// Largest value a variable byte integer can carry (4 bytes).
pub const MAX_VARINT: u32 = 268_435_455;

/// Smallest binary field or payload that stays a zero-copy slice of the
/// read buffer (and only if it is at least half of that buffer): a slice
/// then holds at most twice its own size. Smaller ones are copied (one
/// exact-size allocation), so what a queued or retained message keeps
/// alive is what it accounts for.
pub const ZERO_COPY_MIN: usize = 32 * 1024;

/// Reads one packet body; every read is bounds-checked.
pub struct Reader {
    buf: Bytes,
    packet: PacketType,
    /// Size of the allocation `buf` is a slice of (at least): what a
    /// zero-copy field would keep alive.
    backing: usize,
}

impl Reader {
    /// A reader over a body that owns its memory (nothing larger behind it).
    pub fn new(buf: Bytes, packet: PacketType) -> Self {
        let backing = buf.len();
        Reader::in_buffer(buf, packet, backing)
    }

    /// A reader over a body sliced from a read buffer of `backing` bytes.
    pub fn in_buffer(buf: Bytes, packet: PacketType, backing: usize) -> Self {
        Reader {
            buf,
            packet,
            backing,
        }
    }

    pub fn packet(&self) -> PacketType {
        self.packet
    }

    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    pub fn malformed(&self, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            reason,
        }
    }

    pub fn protocol(&self, reason: &'static str) -> DecodeError {
        DecodeError::Protocol {
            packet: self.packet,
            reason,
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(self.malformed("packet ends early"))
        } else {
            Ok(())
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("variable byte integer longer than 4 bytes"))
    }

    /// Binary data: a two-byte length and that many bytes (see [`Self::take`]).
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        Ok(self.take(len))
    }

    /// The next `n` bytes (`n <= remaining`): a zero-copy slice when it is
    /// at least [`ZERO_COPY_MIN`] and half of the backing buffer, else a
    /// copy in an allocation of its own.
    fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.buf.len());
        if n >= ZERO_COPY_MIN && n.saturating_mul(2) >= self.backing {
            return self.buf.split_to(n);
        }
        let owned = Bytes::copy_from_slice(&self.buf.chunk()[..n]);
        self.buf.advance(n);
        owned
    }

    /// A UTF-8 encoded string (MQTT 5.0 section 1.5.4): valid UTF-8, no U+0000.
    /// Validated in place and copied once: slicing a `Bytes` off first
    /// would cost two reference-count updates per string for nothing.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        let raw = &self.buf.chunk()[..len];
        let text =
            std::str::from_utf8(raw).map_err(|_| self.malformed("string is not valid UTF-8"))?;
        if raw.contains(&0) {
            return Err(self.malformed("string contains U+0000"));
        }
        let owned = text.to_owned();
        self.buf.advance(len);
        Ok(owned)
    }

    /// Everything left (payloads; see [`Self::take`]).
    pub fn rest(&mut self) -> Bytes {
        let n = self.buf.remaining();
        self.take(n)
    }

    /// Fails when bytes remain that the packet layout does not account for.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.has_remaining() {
            Err(self.malformed("unexpected bytes at the end of the packet"))
        } else {
            Ok(())
        }
    }

    /// Reads a v5 property block and hands each property to `each`.
    /// `each` returns false for a property this packet may not carry.
    pub fn properties(
        &mut self,
        mut each: impl FnMut(&mut Reader, u8) -> Result<bool, DecodeError>,
    ) -> Result<(), DecodeError> {
        let len = self.varint()? as usize;
        self.need(len)?;
        let block = self.buf.split_to(len);
        let mut props = Reader::in_buffer(block, self.packet, self.backing);
        let mut seen: u64 = 0;
        while props.remaining() > 0 {
            let id = props.varint()?;
            let id =
                u8::try_from(id).map_err(|_| props.malformed("unknown property identifier"))?;
            if !repeatable(id) {
                let bit = 1u64 << (id & 63);
                if seen & bit != 0 {
                    return Err(props.protocol("property appears more than once"));
                }
                seen |= bit;
            }
            if !each(&mut props, id)? {
                return Err(props.malformed("property not allowed in this packet"));
            }
        }
        Ok(())
    }

    /// Reads one user property (after its identifier).
    pub fn user_property(&mut self) -> Result<UserProperty, DecodeError> {
        Ok((self.string()?, self.string()?))
    }

    /// Reads a one-byte property that must be 0 or 1.
    pub fn flag_byte(&mut self) -> Result<u8, DecodeError> {
        let v = self.u8()?;
        if v > 1 {
            return Err(self.protocol("property value must be 0 or 1"));
        }
        Ok(v)
    }
}

/// Properties that may appear more than once (user property, subscription identifier).
fn repeatable(id: u8) -> bool {
    id == prop::USER_PROPERTY || id == prop::SUBSCRIPTION_IDENTIFIER
}

/// v5 property identifiers (MQTT 5.0 section 2.2.2.2).
pub mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Number of bytes a variable byte integer takes.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Checks a length-prefixed field fits in 65,535 bytes.
pub fn check_len(len: usize, field: &'static str) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong { field, len })
    } else {
        Ok(())
    }
}

pub fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    // Lengths were checked by `PropWriter`/the packet encoders before writing.
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Builds a v5 property block; computes its size first so the length prefix
/// can be written without a temporary buffer.
#[derive(Default)]
pub struct PropWriter<'a> {
    items: Vec<Prop<'a>>,
}

enum Prop<'a> {
    Byte(u8, u8),
    U16(u8, u16),
    U32(u8, u32),
    Varint(u8, u32),
    Bin(u8, &'a [u8]),
    Pair(&'a str, &'a str),
}

impl<'a> PropWriter<'a> {
    pub fn byte(&mut self, id: u8, v: Option<u8>) -> &mut Self {
        if let Some(v) = v {
            self.items.push(Prop::Byte(id, v));
        }
        self
    }
    pub fn u16(&mut self, id: u8, v: Option<u16>) -> &mut Self {
        if let Some(v) = v {
            self.items.push(Prop::U16(id, v));
        }
        self
    }
    pub fn u32(&mut self, id: u8, v: Option<u32>) -> &mut Self {
        if let Some(v) = v {
            self.items.push(Prop::U32(id, v));
        }
        self
    }
    pub fn varint(&mut self, id: u8, v: u32) -> &mut Self {
        self.items.push(Prop::Varint(id, v));
        self
    }
    pub fn string(&mut self, id: u8, v: &'a Option<String>) -> &mut Self {
        if let Some(v) = v {
            self.items.push(Prop::Bin(id, v.as_bytes()));
        }
        self
    }
    pub fn binary(&mut self, id: u8, v: &'a Option<Bytes>) -> &mut Self {
        if let Some(v) = v {
            self.items.push(Prop::Bin(id, v));
        }
        self
    }
    pub fn users(&mut self, v: &'a [UserProperty]) -> &mut Self {
        for (k, val) in v {
            self.items.push(Prop::Pair(k, val));
        }
        self
    }

    /// Size of the properties themselves (without the length prefix).
    pub fn body_len(&self) -> usize {
        self.items
            .iter()
            .map(|p| match p {
                Prop::Byte(..) => 2,
                Prop::U16(..) => 3,
                Prop::U32(..) => 5,
                Prop::Varint(_, v) => 1 + varint_len(*v as usize),
                Prop::Bin(_, b) => 3 + b.len(),
                Prop::Pair(k, v) => 5 + k.len() + v.len(),
            })
            .sum()
    }

    /// Size including the length prefix.
    pub fn len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn check(&self) -> Result<(), EncodeError> {
        for p in &self.items {
            match p {
                Prop::Bin(_, b) => check_len(b.len(), "property")?,
                Prop::Pair(k, v) => {
                    check_len(k.len(), "user property name")?;
                    check_len(v.len(), "user property value")?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.body_len());
        for p in &self.items {
            match *p {
                Prop::Byte(id, v) => {
                    buf.put_u8(id);
                    buf.put_u8(v);
                }
                Prop::U16(id, v) => {
                    buf.put_u8(id);
                    buf.put_u16(v);
                }
                Prop::U32(id, v) => {
                    buf.put_u8(id);
                    buf.put_u32(v);
                }
                Prop::Varint(id, v) => {
                    buf.put_u8(id);
                    put_varint(buf, v as usize);
                }
                Prop::Bin(id, b) => {
                    buf.put_u8(id);
                    put_binary(buf, b);
                }
                Prop::Pair(k, v) => {
                    buf.put_u8(prop::USER_PROPERTY);
                    put_binary(buf, k.as_bytes());
                    put_binary(buf, v.as_bytes());
                }
            }
        }
    }
}

/// Properties made of only a reason string and user properties.
pub fn ack_props(p: &super::AckProperties) -> PropWriter<'_> {
    let mut w = PropWriter::default();
    w.string(prop::REASON_STRING, &p.reason_string)
        .users(&p.user_properties);
    w
}

/// Reads reason-string/user-property-only blocks.
pub fn read_ack_props(r: &mut Reader) -> Result<super::AckProperties, DecodeError> {
    let mut p = super::AckProperties::default();
    r.properties(|r, id| {
        match id {
            prop::REASON_STRING => p.reason_string = Some(r.string()?),
            prop::USER_PROPERTY => p.user_properties.push(r.user_property()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(p)
}
