//! Envelope: many MQTT messages packed into one cloud PUBLISH.
//!
//! The bridge's `envelope` mode (docs/ARCHITECTURE.md) sends a batch of local
//! messages as a single PUBLISH to save bytes and round trips on metered
//! uplinks; cloud consumers unpack it with `edgemq-client` or `edgemq-sub
//! --unbatch`. Encoder and decoder live here, in one place, so the bridge and
//! the client cannot drift apart, and so the broker does not depend on the
//! client's MQTT library.
//!
//! # Wire format (version 1)
//!
//! A batch is `encode(encoding)` then `compress(compression)`. The pair is
//! named by the v5 Content Type of the PUBLISH, see [`Format::content_type`]:
//! `application/vnd.edgemq.batch+postcard; compression=lz4`. A missing
//! `compression` parameter means `none`.
//!
//! **Compression.** `none`: the encoded bytes as is. `lz4`: one standard LZ4
//! *frame* (magic `04 22 4D 18`; readable by the `lz4` command line tool,
//! Python's `lz4.frame`, Go's `pierrec/lz4`). `gzip`: one RFC 1952 gzip member.
//!
//! **Postcard encoding.** The first byte is the format version (`1`), then the
//! postcard serialisation of the message list: a varint count, then per
//! message: `topic` (varint length + UTF-8), `timestamp_ms` (varint u64, Unix
//! epoch milliseconds when the gateway received it), `qos` (u8), `retain`
//! (u8 0/1), `payload` (varint length + bytes), `user_properties` (varint
//! count, then key and value strings).
//!
//! **JSON encoding.** One UTF-8 JSON object:
//! ```json
//! {"v":1,"messages":[
//!   {"topic":"gw-0001/sensors/t1","timestamp_ms":1700000000000,"qos":1,"retain":false,
//!    "payload":"21.5","user_properties":[["unit","C"]]},
//!   {"topic":"gw-0001/sensors/raw","timestamp_ms":1700000000001,"qos":0,"retain":false,
//!    "payload_b64":"AAEC/w=="}
//! ]}
//! ```
//! Each message carries exactly one of `payload` (the payload, when it is
//! valid UTF-8) or `payload_b64` (standard base64 with padding, otherwise).
//! `retain` defaults to `false` and `user_properties` (an array of `[key,
//! value]` pairs, keys may repeat as in MQTT v5) to empty when absent.
//! Readers must ignore unknown fields.
//!
//! # Invariants
//! - `decode(encode(batch, f), f) == batch` for every encoding and compression.
//! - Decoding never allocates more than the caller's limit for decompressed
//!   data ([`DEFAULT_MAX_DECODED_BYTES`] by default): a small hostile envelope
//!   cannot exhaust a gateway's memory.
//! - Decoding untrusted bytes returns an error, never panics.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version written in every envelope and the only one this decoder reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Content type prefix; `+postcard` or `+json` follows.
pub const CONTENT_TYPE_PREFIX: &str = "application/vnd.edgemq.batch";

/// Default cap on the decompressed size of one envelope (64 MiB).
pub const DEFAULT_MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// One MQTT message inside an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Topic as published (the bridge applies its remote prefix first).
    pub topic: String,
    /// When the gateway received the message, Unix epoch milliseconds.
    pub timestamp_ms: u64,
    /// QoS the message was published with (0, 1 or 2).
    pub qos: u8,
    /// Retain flag of the original PUBLISH.
    pub retain: bool,
    /// Application payload.
    pub payload: Bytes,
    /// MQTT v5 user properties, in order; keys may repeat.
    pub user_properties: Vec<(String, String)>,
}

impl Message {
    /// What this message adds to an uncompressed envelope in `encoding`: an
    /// upper bound for postcard, and for JSON whenever topic, payload and
    /// properties need no escaping (the usual telemetry case). Lets the
    /// bridge cut batches at `max_bytes` without encoding twice.
    pub fn size_hint(&self, encoding: Encoding) -> usize {
        let props: usize = self
            .user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let n_props = self.user_properties.len();
        match encoding {
            // Varints: at most 10 bytes each for lengths, counts and the timestamp.
            Encoding::Postcard => {
                10 + self.topic.len() + 10 + 2 + 10 + self.payload.len() + 10 + props + 20 * n_props
            }
            Encoding::Json => {
                let payload = if std::str::from_utf8(&self.payload).is_ok() {
                    self.payload.len()
                } else {
                    self.payload.len().div_ceil(3) * 4
                };
                // Field names, quotes, punctuation and a 20-digit timestamp.
                120 + self.topic.len() + payload + props + 8 * n_props
            }
        }
    }
}

/// Serialisation of the message list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Compact binary (postcard), the default.
    Postcard,
    /// Self-describing JSON, see the module documentation.
    Json,
}

/// Compression applied to the encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as encoded.
    None,
    /// One LZ4 frame.
    Lz4,
    /// One gzip member.
    Gzip,
}

/// Encoding and compression of one envelope; names its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// How the message list is serialised.
    pub encoding: Encoding,
    /// How the serialised bytes are compressed.
    pub compression: Compression,
}

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The content type is not an edgemq batch.
    #[error("not an edgemq envelope content type: {0:?}")]
    UnknownContentType(String),
    /// An encoding or compression name is not known.
    #[error("unknown envelope {kind} {name:?}")]
    UnknownName {
        /// "encoding" or "compression".
        kind: &'static str,
        /// The name that was given.
        name: String,
    },
    /// The envelope was written by a newer (or corrupt) encoder.
    #[error("unsupported envelope version {0} (this decoder reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u8),
    /// The envelope holds no bytes at all.
    #[error("empty envelope")]
    Empty,
    /// Decompressed data would exceed the caller's limit.
    #[error("envelope decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Compressed data is corrupt.
    #[error("{compression} decompression failed: {source}")]
    Decompress {
        /// The compression in use.
        compression: Compression,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Compressing failed (only on an out-of-memory style IO error).
    #[error("{compression} compression failed: {source}")]
    Compress {
        /// The compression in use.
        compression: Compression,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Postcard bytes are malformed.
    #[error("malformed postcard envelope: {0}")]
    Postcard(#[from] postcard::Error),
    /// JSON text is malformed or does not match the documented form.
    #[error("malformed JSON envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// A JSON message has both or neither of `payload` and `payload_b64`.
    #[error("message {index}: exactly one of \"payload\" and \"payload_b64\" is required")]
    PayloadField {
        /// Position of the message in the batch.
        index: usize,
    },
    /// `payload_b64` is not valid base64.
    #[error("message {index}: payload_b64 is not valid base64: {source}")]
    Base64 {
        /// Position of the message in the batch.
        index: usize,
        /// The underlying error.
        source: base64::DecodeError,
    },
}

impl Encoding {
    fn as_str(self) -> &'static str {
        match self {
            Encoding::Postcard => "postcard",
            Encoding::Json => "json",
        }
    }
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postcard" => Ok(Encoding::Postcard),
            "json" => Ok(Encoding::Json),
            _ => Err(EnvelopeError::UnknownName {
                kind: "encoding",
                name: s.to_string(),
            }),
        }
    }
}

impl FromStr for Compression {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "gzip" => Ok(Compression::Gzip),
            _ => Err(EnvelopeError::UnknownName {
                kind: "compression",
                name: s.to_string(),
            }),
        }
    }
}

impl Format {
    /// The v5 Content Type naming this format, e.g.
    /// `application/vnd.edgemq.batch+postcard; compression=lz4`.
    pub fn content_type(&self) -> String {
        format!(
            "{CONTENT_TYPE_PREFIX}+{}; compression={}",
            self.encoding, self.compression
        )
    }

    /// Parses a content type written by [`Format::content_type`]. Parameters
    /// other than `compression` are ignored; a missing one means `none`.
    pub fn from_content_type(content_type: &str) -> Result<Self, EnvelopeError> {
        let unknown = || EnvelopeError::UnknownContentType(content_type.to_string());
        let mut parts = content_type.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let encoding = media
            .strip_prefix(CONTENT_TYPE_PREFIX)
            .and_then(|rest| rest.strip_prefix('+'))
            .ok_or_else(unknown)?
            .parse()?;
        let mut compression = Compression::None;
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("compression") {
                    compression = value.trim().trim_matches('"').parse()?;
                }
            }
        }
        Ok(Format {
            encoding,
            compression,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.content_type())
    }
}

/// Encodes `messages` as one envelope in `format`.
pub fn encode(messages: &[Message], format: Format) -> Result<Vec<u8>, EnvelopeError> {
    let encoded = match format.encoding {
        Encoding::Postcard => encode_postcard(messages)?,
        Encoding::Json => encode_json(messages)?,
    };
    compress(encoded, format.compression)
}

/// Decodes an envelope in `format`, with [`DEFAULT_MAX_DECODED_BYTES`].
pub fn decode(bytes: &[u8], format: Format) -> Result<Vec<Message>, EnvelopeError> {
    decode_with_limit(bytes, format, DEFAULT_MAX_DECODED_BYTES)
}

/// Decodes an envelope whose format is named by a v5 content type.
pub fn decode_content_type(
    content_type: &str,
    bytes: &[u8],
) -> Result<Vec<Message>, EnvelopeError> {
    decode(bytes, Format::from_content_type(content_type)?)
}

/// Decodes an envelope, refusing to decompress more than `max_decoded` bytes.
pub fn decode_with_limit(
    bytes: &[u8],
    format: Format,
    max_decoded: usize,
) -> Result<Vec<Message>, EnvelopeError> {
    let plain = decompress(bytes, format.compression, max_decoded)?;
    match format.encoding {
        Encoding::Postcard => decode_postcard(&plain),
        Encoding::Json => decode_json(&plain),
    }
}

fn compress(encoded: Vec<u8>, compression: Compression) -> Result<Vec<u8>, EnvelopeError> {
    let io_err = |source| EnvelopeError::Compress {
        compression,
        source,
    };
    match compression {
        Compression::None => Ok(encoded),
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(&encoded).map_err(io_err)?;
            encoder
                .finish()
                .map_err(|e| io_err(std::io::Error::other(e)))
        }
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&encoded).map_err(io_err)?;
            encoder.finish().map_err(io_err)
        }
    }
}

fn decompress(
    bytes: &[u8],
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    match compression {
        Compression::None if bytes.len() > limit => Err(EnvelopeError::TooLarge { limit }),
        Compression::None => Ok(bytes.to_vec()),
        Compression::Lz4 => read_limited(
            lz4_flex::frame::FrameDecoder::new(bytes),
            compression,
            limit,
        ),
        Compression::Gzip => read_limited(flate2::read::GzDecoder::new(bytes), compression, limit),
    }
}

/// Reads a decompressor to its end, at most `limit` bytes.
fn read_limited(
    reader: impl Read,
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|source| EnvelopeError::Decompress {
            compression,
            source,
        })?;
    if out.len() > limit {
        return Err(EnvelopeError::TooLarge { limit });
    }
    Ok(out)
}

fn encode_postcard(messages: &[Message]) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = vec![ENVELOPE_VERSION];
    out = postcard::to_extend(messages, out)?;
    Ok(out)
}

fn decode_postcard(plain: &[u8]) -> Result<Vec<Message>, EnvelopeError> {
    let (&version, body) = plain.split_first().ok_or(EnvelopeError::Empty)?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    Ok(postcard::from_bytes(body)?)
}

/// JSON document form, see the module documentation.
#[derive(Serialize, Deserialize)]
struct JsonBatch {
    v: u8,
    messages: Vec<JsonMessage>,
}

/// Only the version, read first so a newer layout gives a clear error.
#[derive(Deserialize)]
struct JsonVersion {
    v: u8,
}

#[derive(Serialize, Deserialize)]
struct JsonMessage {
    topic: String,
    timestamp_ms: u64,
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
}

fn encode_json(messages: &[Message]) -> Result<Vec<u8>, EnvelopeError> {
    let batch = JsonBatch {
        v: ENVELOPE_VERSION,
        messages: messages.iter().map(to_json_message).collect(),
    };
    Ok(serde_json::to_vec(&batch)?)
}

fn to_json_message(m: &Message) -> JsonMessage {
    let (payload, payload_b64) = match std::str::from_utf8(&m.payload) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&m.payload)),
        ),
    };
    JsonMessage {
        topic: m.topic.clone(),
        timestamp_ms: m.timestamp_ms,
        qos: m.qos,
        retain: m.retain,
        payload,
        payload_b64,
        user_properties: m.user_properties.clone(),
    }
}

fn decode_json(plain: &[u8]) -> Result<Vec<Message>, EnvelopeError> {
    let JsonVersion { v } = serde_json::from_slice(plain)?;
    if v != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(v));
    }
    let batch: JsonBatch = serde_json::from_slice(plain)?;
    batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, m)| from_json_message(index, m))
        .collect()
}

fn from_json_message(index: usize, m: JsonMessage) -> Result<Message, EnvelopeError> {
    let payload = match (m.payload, m.payload_b64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map(Bytes::from)
            .map_err(|source| EnvelopeError::Base64 { index, source })?,
        _ => return Err(EnvelopeError::PayloadField { index }),
    };
    Ok(Message {
        topic: m.topic,
        timestamp_ms: m.timestamp_ms,
        qos: m.qos,
        retain: m.retain,
        payload,
        user_properties: m.user_properties,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
