//! MQTT 5.0 reason codes (section 2.4) and their 3.1.1 CONNACK equivalents.
//!
//! The broker always thinks in v5 reason codes; the encoder maps them to the
//! smaller 3.1.1 vocabulary when the connection speaks 3.1.1.
//!
//! [`ReasonCode`] is the one list of codes: the `u8` constants below are
//! derived from it (packets carry the byte, as on the wire, so a peer's
//! unknown code is kept and reported rather than refused), and
//! [`ReasonCode::connack_v311`] is the one v5 to 3.1.1 CONNACK mapping.
//! Invariant: every constant equals its variant's discriminant, and
//! `ReasonCode::from_u8(c as u8) == Some(c)` for every variant.

use std::fmt;

/// An MQTT 5.0 reason code. Codes below 0x80 report success; the codes
/// sharing 0x00 (Success, Normal disconnection, Granted QoS 0) are one
/// variant, [`ReasonCode::Success`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReasonCode {
    Success = 0x00,
    GrantedQos1 = 0x01,
    GrantedQos2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QosNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// The code for a byte read from the wire; `None` for a byte that is
    /// no MQTT 5.0 reason code.
    pub fn from_u8(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match code {
            0x00 => Success,
            0x01 => GrantedQos1,
            0x02 => GrantedQos2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QosNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// True for the failure codes (0x80 and above).
    pub fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// The specification's name of the code, lower case.
    pub fn name(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Success => "success",
            GrantedQos1 => "granted qos 1",
            GrantedQos2 => "granted qos 2",
            DisconnectWithWillMessage => "disconnect with will message",
            NoMatchingSubscribers => "no matching subscribers",
            NoSubscriptionExisted => "no subscription existed",
            ContinueAuthentication => "continue authentication",
            ReAuthenticate => "re authenticate",
            UnspecifiedError => "unspecified error",
            MalformedPacket => "malformed packet",
            ProtocolError => "protocol error",
            ImplementationSpecificError => "implementation specific error",
            UnsupportedProtocolVersion => "unsupported protocol version",
            ClientIdentifierNotValid => "client identifier not valid",
            BadUserNameOrPassword => "bad user name or password",
            NotAuthorized => "not authorized",
            ServerUnavailable => "server unavailable",
            ServerBusy => "server busy",
            Banned => "banned",
            ServerShuttingDown => "server shutting down",
            BadAuthenticationMethod => "bad authentication method",
            KeepAliveTimeout => "keep alive timeout",
            SessionTakenOver => "session taken over",
            TopicFilterInvalid => "topic filter invalid",
            TopicNameInvalid => "topic name invalid",
            PacketIdentifierInUse => "packet identifier in use",
            PacketIdentifierNotFound => "packet identifier not found",
            ReceiveMaximumExceeded => "receive maximum exceeded",
            TopicAliasInvalid => "topic alias invalid",
            PacketTooLarge => "packet too large",
            MessageRateTooHigh => "message rate too high",
            QuotaExceeded => "quota exceeded",
            AdministrativeAction => "administrative action",
            PayloadFormatInvalid => "payload format invalid",
            RetainNotSupported => "retain not supported",
            QosNotSupported => "qos not supported",
            UseAnotherServer => "use another server",
            ServerMoved => "server moved",
            SharedSubscriptionsNotSupported => "shared subscriptions not supported",
            ConnectionRateExceeded => "connection rate exceeded",
            MaximumConnectTime => "maximum connect time",
            SubscriptionIdentifiersNotSupported => "subscription identifiers not supported",
            WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
        }
    }

    /// The closest MQTT 3.1.1 CONNACK return code (section 3.2.2.3).
    pub fn connack_v311(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => v311::ACCEPTED,
            UnsupportedProtocolVersion => v311::UNACCEPTABLE_PROTOCOL_VERSION,
            ClientIdentifierNotValid => v311::IDENTIFIER_REJECTED,
            BadUserNameOrPassword => v311::BAD_USER_NAME_OR_PASSWORD,
            NotAuthorized | Banned | BadAuthenticationMethod => v311::NOT_AUTHORIZED,
            _ => v311::SERVER_UNAVAILABLE,
        }
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> u8 {
        code as u8
    }
}

impl TryFrom<u8> for ReasonCode {
    type Error = u8;

    /// The byte back when it is no reason code.
    fn try_from(code: u8) -> Result<ReasonCode, u8> {
        ReasonCode::from_u8(code).ok_or(code)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x} ({})", *self as u8, self.name())
    }
}

/// A reason code byte for logs: its name when it is a v5 reason code.
pub fn describe(code: u8) -> String {
    match ReasonCode::from_u8(code) {
        Some(c) => c.to_string(),
        None => format!("0x{code:02x}"),
    }
}

pub const SUCCESS: u8 = ReasonCode::Success as u8;
pub const NORMAL_DISCONNECTION: u8 = ReasonCode::Success as u8;
pub const GRANTED_QOS_0: u8 = ReasonCode::Success as u8;
pub const GRANTED_QOS_1: u8 = ReasonCode::GrantedQos1 as u8;
pub const GRANTED_QOS_2: u8 = ReasonCode::GrantedQos2 as u8;
pub const DISCONNECT_WITH_WILL_MESSAGE: u8 = ReasonCode::DisconnectWithWillMessage as u8;
pub const NO_MATCHING_SUBSCRIBERS: u8 = ReasonCode::NoMatchingSubscribers as u8;
pub const NO_SUBSCRIPTION_EXISTED: u8 = ReasonCode::NoSubscriptionExisted as u8;
pub const CONTINUE_AUTHENTICATION: u8 = ReasonCode::ContinueAuthentication as u8;
pub const RE_AUTHENTICATE: u8 = ReasonCode::ReAuthenticate as u8;
pub const UNSPECIFIED_ERROR: u8 = ReasonCode::UnspecifiedError as u8;
pub const MALFORMED_PACKET: u8 = ReasonCode::MalformedPacket as u8;
pub const PROTOCOL_ERROR: u8 = ReasonCode::ProtocolError as u8;
pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = ReasonCode::ImplementationSpecificError as u8;
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = ReasonCode::UnsupportedProtocolVersion as u8;
pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = ReasonCode::ClientIdentifierNotValid as u8;
pub const BAD_USER_NAME_OR_PASSWORD: u8 = ReasonCode::BadUserNameOrPassword as u8;
pub const NOT_AUTHORIZED: u8 = ReasonCode::NotAuthorized as u8;
pub const SERVER_UNAVAILABLE: u8 = ReasonCode::ServerUnavailable as u8;
pub const SERVER_BUSY: u8 = ReasonCode::ServerBusy as u8;
pub const BANNED: u8 = ReasonCode::Banned as u8;
pub const SERVER_SHUTTING_DOWN: u8 = ReasonCode::ServerShuttingDown as u8;
pub const BAD_AUTHENTICATION_METHOD: u8 = ReasonCode::BadAuthenticationMethod as u8;
pub const KEEP_ALIVE_TIMEOUT: u8 = ReasonCode::KeepAliveTimeout as u8;
pub const SESSION_TAKEN_OVER: u8 = ReasonCode::SessionTakenOver as u8;
pub const TOPIC_FILTER_INVALID: u8 = ReasonCode::TopicFilterInvalid as u8;
pub const TOPIC_NAME_INVALID: u8 = ReasonCode::TopicNameInvalid as u8;
pub const PACKET_IDENTIFIER_IN_USE: u8 = ReasonCode::PacketIdentifierInUse as u8;
pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = ReasonCode::PacketIdentifierNotFound as u8;
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = ReasonCode::ReceiveMaximumExceeded as u8;
pub const TOPIC_ALIAS_INVALID: u8 = ReasonCode::TopicAliasInvalid as u8;
pub const PACKET_TOO_LARGE: u8 = ReasonCode::PacketTooLarge as u8;
pub const MESSAGE_RATE_TOO_HIGH: u8 = ReasonCode::MessageRateTooHigh as u8;
pub const QUOTA_EXCEEDED: u8 = ReasonCode::QuotaExceeded as u8;
pub const ADMINISTRATIVE_ACTION: u8 = ReasonCode::AdministrativeAction as u8;
pub const PAYLOAD_FORMAT_INVALID: u8 = ReasonCode::PayloadFormatInvalid as u8;
pub const RETAIN_NOT_SUPPORTED: u8 = ReasonCode::RetainNotSupported as u8;
pub const QOS_NOT_SUPPORTED: u8 = ReasonCode::QosNotSupported as u8;
pub const USE_ANOTHER_SERVER: u8 = ReasonCode::UseAnotherServer as u8;
pub const SERVER_MOVED: u8 = ReasonCode::ServerMoved as u8;
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 =
    ReasonCode::SharedSubscriptionsNotSupported as u8;
pub const CONNECTION_RATE_EXCEEDED: u8 = ReasonCode::ConnectionRateExceeded as u8;
pub const MAXIMUM_CONNECT_TIME: u8 = ReasonCode::MaximumConnectTime as u8;
pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 =
    ReasonCode::SubscriptionIdentifiersNotSupported as u8;
pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 =
    ReasonCode::WildcardSubscriptionsNotSupported as u8;

/// MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
pub mod v311 {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
    /// The SUBACK failure return code.
    pub const SUBACK_FAILURE: u8 = 0x80;
}

/// Maps a v5 CONNACK reason code to the closest 3.1.1 return code (an
/// unknown byte maps to "server unavailable").
pub fn connack_v311(reason_code: u8) -> u8 {
    ReasonCode::from_u8(reason_code).map_or(v311::SERVER_UNAVAILABLE, ReasonCode::connack_v311)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_the_constants_are_its_bytes() {
        let mut seen = 0;
        for byte in 0..=u8::MAX {
            if let Some(code) = ReasonCode::from_u8(byte) {
                assert_eq!(u8::from(code), byte);
                assert_eq!(ReasonCode::try_from(byte), Ok(code));
                assert_eq!(code.is_error(), byte >= 0x80);
                seen += 1;
            } else {
                assert_eq!(ReasonCode::try_from(byte), Err(byte));
            }
        }
        assert_eq!(seen, 43);
        assert_eq!(NORMAL_DISCONNECTION, SUCCESS);
        assert_eq!(QUOTA_EXCEEDED, 0x97);
        assert_eq!(WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED, 0xA2);
        assert_eq!(
            ReasonCode::QuotaExceeded.to_string(),
            "0x97 (quota exceeded)"
        );
        assert_eq!(describe(0x42), "0x42");
    }

    #[test]
    fn the_v311_connack_mapping() {
        assert_eq!(connack_v311(SUCCESS), v311::ACCEPTED);
        assert_eq!(connack_v311(NOT_AUTHORIZED), v311::NOT_AUTHORIZED);
        assert_eq!(connack_v311(BANNED), v311::NOT_AUTHORIZED);
        assert_eq!(
            connack_v311(BAD_USER_NAME_OR_PASSWORD),
            v311::BAD_USER_NAME_OR_PASSWORD
        );
        assert_eq!(
            connack_v311(CLIENT_IDENTIFIER_NOT_VALID),
            v311::IDENTIFIER_REJECTED
        );
        assert_eq!(connack_v311(QUOTA_EXCEEDED), v311::SERVER_UNAVAILABLE);
        assert_eq!(connack_v311(0x42), v311::SERVER_UNAVAILABLE);
    }
}
