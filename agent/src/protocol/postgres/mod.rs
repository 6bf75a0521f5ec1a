//! The PostgreSQL frontend/backend protocol (version 3.0 and 3.2, as in the
//! "Message Formats" chapter of the PostgreSQL 15+ documentation): framing,
//! the untagged startup packets, and every regular message in both
//! directions as a typed value borrowed from its frame, with an encoder for
//! each.
//!
//! - [`frame`]: splitting a byte stream into [`Frame`]s (tag + Int32 length +
//!   body), bounded by a maximum length checked before the body is buffered.
//! - [`startup`]: the client's first packet (StartupMessage, SSLRequest,
//!   GSSENCRequest, CancelRequest).
//! - [`frontend`]: client → server messages ([`FrontendMessage`]).
//! - [`backend`]: server → client messages ([`BackendMessage`]), with an
//!   allocation-free iterator over DataRow values for the masking path.
//!
//! Parsers reject (never panic on) malformed input: lengths below 4,
//! negative or past the maximum, truncated fields, missing NUL terminators,
//! invalid UTF-8 in strings, unknown tags, value lengths below -1, counts
//! that do not match, trailing bytes. Counts that the protocol carries as
//! Int16 are read as unsigned 16-bit numbers, as the PostgreSQL server reads
//! them (a Bind may carry up to 65535 parameters). Allocations are bounded by
//! the bytes actually present, never by a count read from the wire.
//!
//! Strings are `&str`: the codec assumes `client_encoding` UTF8 (the proxy
//! pins it) and rejects anything else as invalid UTF-8.
//!
//! Encoders append one complete message to a `BytesMut`. Those whose content
//! is variable return `Result`: a string with an interior NUL, a count above
//! 65535 or a message longer than `i32::MAX` cannot be encoded, and on error
//! nothing is appended. Fixed-shape messages (Sync, ReadyForQuery, ...) are
//! infallible.

use std::fmt;

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;
mod wire;

pub use backend::{
    Authentication, BackendMessage, CopyFormat, DataRowScanner, DataRowValues, FieldDescription,
    Fields,
};
pub use frame::{DEFAULT_MAX_MESSAGE, Frame, bytes_needed, decode_frame, header};
pub use frontend::{FrontendMessage, Target};
pub use startup::{
    CancelRequest, MAX_STARTUP_PACKET, ProtocolVersion, StartupMessage, StartupPacket,
    decode_startup, encode_ssl_request,
};

/// Which side of the connection sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server.
    Frontend,
    /// Server → client.
    Backend,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Frontend => "frontend",
            Direction::Backend => "backend",
        })
    }
}

/// Names a frame by its tag byte (`None`: an untagged startup packet).
fn what(tag: &Option<u8>) -> String {
    match tag {
        Some(t) => format!("message '{}'", char::from(*t).escape_default()),
        None => "startup packet".to_string(),
    }
}

/// A PostgreSQL protocol message could not be decoded or encoded.
///
/// `msg` names the message (e.g. `"DataRow"`), `field` the part of it that
/// was wrong. No variant carries message content except parameter names of
/// a startup packet, which are not secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The Int32 length field is negative.
    #[error("{}: length {len} is negative", what(.tag))]
    NegativeLength { tag: Option<u8>, len: i32 },
    /// The length field is below the smallest valid length (4 for regular
    /// messages, 8 for startup packets).
    #[error("{}: length {len} is below the minimum {min}", what(.tag))]
    LengthTooShort { tag: Option<u8>, len: u32, min: u32 },
    /// The length field is past the configured maximum.
    #[error("{}: length {len} exceeds the maximum {max}", what(.tag))]
    TooLong {
        tag: Option<u8>,
        len: usize,
        max: usize,
    },
    /// A tag this codec does not know for that direction.
    #[error("unknown {direction} message tag '{}'", char::from(*.tag).escape_default())]
    UnknownTag { direction: Direction, tag: u8 },
    /// A frame with another tag was passed where `expected` was required.
    #[error("expected message '{}', got '{}'", char::from(*.expected).escape_default(), char::from(*.got).escape_default())]
    WrongTag { expected: u8, got: u8 },
    /// The message ends inside a field.
    #[error("{msg}: truncated in {field}")]
    Truncated {
        msg: &'static str,
        field: &'static str,
    },
    /// A string field has no NUL terminator before the end of the message.
    #[error("{msg}: {field} is not NUL-terminated")]
    MissingNul {
        msg: &'static str,
        field: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("{msg}: {field} is not valid UTF-8")]
    InvalidUtf8 {
        msg: &'static str,
        field: &'static str,
    },
    /// Bytes remain after the last field of the message.
    #[error("{msg}: {extra} trailing bytes")]
    TrailingBytes { msg: &'static str, extra: usize },
    /// An Int32 count is negative.
    #[error("{msg}: {field} {count} is negative")]
    NegativeCount {
        msg: &'static str,
        field: &'static str,
        count: i32,
    },
    /// A value length is below -1 (-1 is NULL).
    #[error("{msg}: value length {len} is invalid")]
    InvalidValueLength { msg: &'static str, len: i32 },
    /// A count does not fit the count it must agree with (e.g. Bind's
    /// parameter format codes must number 0, 1 or the parameter count).
    #[error("{msg}: {field} is {count}, expected {expected}")]
    CountMismatch {
        msg: &'static str,
        field: &'static str,
        count: usize,
        expected: usize,
    },
    /// A field holds a value the protocol does not allow (a format code
    /// other than 0/1, a Describe target other than 'S'/'P', ...).
    #[error("{msg}: invalid {field} {value}")]
    InvalidValue {
        msg: &'static str,
        field: &'static str,
        value: i64,
    },
    /// A cancel key outside 4..=256 bytes.
    #[error("{msg}: secret key of {len} bytes (must be 4 to 256)")]
    InvalidKeyLength { msg: &'static str, len: usize },
    /// A startup packet's request code is neither a known request nor a
    /// protocol version.
    #[error("startup packet: unknown request code {code}")]
    UnknownRequestCode { code: u32 },
    /// A StartupMessage asks for a major protocol version other than 3.
    #[error("startup packet: unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// A StartupMessage names the same parameter twice.
    #[error("startup packet: parameter {name:?} given twice")]
    DuplicateParameter { name: String },
    /// A message cannot be encoded (interior NUL, count above 65535, empty
    /// startup parameter name, zero field code, longer than `i32::MAX`).
    #[error("{msg}: cannot encode {field}: {reason}")]
    Unencodable {
        msg: &'static str,
        field: &'static str,
        reason: &'static str,
    },
}
