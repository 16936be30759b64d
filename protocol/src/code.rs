//! Numeric error and close codes.
//!
//! The same number is used in an [`crate::ErrorMsg`], as a WebSocket close code
//! and as a WebTransport application close code, so a client needs one table.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $closes:literal, $text:literal; )*) => {
        /// Every error a Lockstep server reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name = $num, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The wire number.
            pub const fn as_u16(self) -> u16 {
                self as u16
            }

            /// The code for a wire number, if it is one of ours.
            pub fn from_u16(n: u16) -> Option<Self> {
                match n {
                    $( $num => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// Whether the server closes the connection after reporting it.
            pub const fn closes(self) -> bool {
                match self { $( ErrorCode::$name => $closes, )* }
            }

            /// A short stable description (also the metrics label).
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$name => $text, )* }
            }
        }
    };
}

codes! {
    /// A frame or datagram that does not decode.
    Malformed = 4000, false, "malformed";
    /// A message tag this side does not know.
    UnknownMessage = 4001, false, "unknown_message";
    /// A frame over the size limit.
    FrameTooLarge = 4002, true, "frame_too_large";
    /// A text frame that is not valid JSON.
    InvalidJson = 4003, false, "invalid_json";
    /// A well-formed message that does not belong here (wrong type, wrong frame kind).
    UnexpectedMessage = 4004, false, "unexpected_message";
    /// A command, report or other member message before `Hello` (a `Ping` is answered).
    NotJoined = 4005, false, "not_joined";
    /// `Hello` carried another protocol version.
    VersionMismatch = 4006, true, "version_mismatch";
    /// Too many messages; sustained floods are closed.
    RateLimited = 4007, false, "rate_limited";
    /// The member's role does not allow this command.
    Forbidden = 4008, false, "forbidden";
    /// A command argument out of range (position, rate) or an invalid id.
    InvalidArgument = 4009, false, "invalid_argument";
    /// The connection could not keep up with reliable messages.
    SlowConsumer = 4010, true, "slow_consumer";
    /// A second `Hello` on one connection.
    AlreadyJoined = 4011, false, "already_joined";
    /// Missing or invalid access token.
    Unauthorized = 4012, true, "unauthorized";
    /// The access token has expired.
    TokenExpired = 4013, true, "token_expired";
    /// The server is shutting down.
    ShuttingDown = 4014, true, "shutting_down";
    /// The server or room has no room for another connection.
    ServerFull = 4015, true, "server_full";
    /// The device was removed from the account.
    DeviceRevoked = 4016, true, "device_revoked";
    /// `Hello` named another event than the connection's URL.
    EventMismatch = 4017, true, "event_mismatch";
    /// No `Hello` arrived in time.
    HelloTimeout = 4018, true, "hello_timeout";
    /// A server fault; the client may reconnect.
    Internal = 4019, true, "internal";
    /// Nothing arrived from the client for too long.
    IdleTimeout = 4020, true, "idle_timeout";
    /// A flood that went on after `RateLimited` warnings.
    Flood = 4021, true, "flood";
    /// Too many bad frames on one connection.
    TooManyErrors = 4022, true, "too_many_errors";
    /// The account is at its device limit with other devices.
    DeviceLimit = 4023, true, "device_limit";
    /// A watch party's room, and no invitation was accepted for it.
    NotInvited = 4024, true, "not_invited";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_u16()), "duplicate {c}");
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(c));
            assert!((4000..5000).contains(&c.as_u16()), "{c} outside the app close range");
        }
        assert_eq!(ErrorCode::from_u16(3999), None);
    }
}
