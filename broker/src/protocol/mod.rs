//! MQTT 3.1.1 and 5.0 codec: IO-free, bytes in, packets out.
//!
//! The connection task owns a `BytesMut` read buffer and calls [`decode`]
//! until it returns `Ok(None)` ("need more bytes"). The fixed header and the
//! maximum packet size are checked before a packet is buffered in full, so a
//! hostile remaining length cannot make us allocate. Every malformed input is
//! an error carrying the v5 reason code to send back, never a panic.
//!
//! Layout: one module per packet (as in rumqtt's mqttbytes), shared
//! primitives in `wire`, the data model in `packet`, reason codes in
//! `reason`, topic name/filter rules in `topic`.

pub mod packet;
pub mod reason;

pub use packet::*;
