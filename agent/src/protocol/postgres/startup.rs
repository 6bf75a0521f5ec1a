//! The client's untagged first packet: Int32 length (counting itself),
//! Int32 request code, and a code-specific body. The code is either a
//! protocol version (major << 16 | minor: a StartupMessage) or one of the
//! special request codes (SSLRequest, GSSENCRequest, CancelRequest), whose
//! major part is 1234.

use std::collections::HashSet;

use bytes::{BufMut, BytesMut};

use super::CodecError;
use super::wire::{self, Reader};

/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`);
/// a sensible `max_len` for [`decode_startup`].
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Request code of an SSLRequest (1234 << 16 | 5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest (1234 << 16 | 5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Request code of a CancelRequest (1234 << 16 | 5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Shortest and longest cancel key the protocol allows (3.2; 3.0 keys are
/// exactly 4 bytes).
pub const MIN_CANCEL_KEY: usize = 4;
pub const MAX_CANCEL_KEY: usize = 256;

/// Smallest valid startup packet: length + code.
const MIN_STARTUP_LEN: u32 = 8;

/// A protocol version as sent in a StartupMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0 (PostgreSQL 7.4 and later).
    pub const V3_0: Self = Self { major: 3, minor: 0 };
    /// Protocol 3.2 (PostgreSQL 18: variable-length cancel keys).
    pub const V3_2: Self = Self { major: 3, minor: 2 };

    /// The Int32 code on the wire.
    pub fn code(self) -> u32 {
        u32::from(self.major) << 16 | u32::from(self.minor)
    }
}

/// The client's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Asks for TLS; the server answers with one byte, 'S' or 'N'.
    SslRequest,
    /// Asks for GSSAPI encryption; answered with 'G' or 'N'.
    GssEncRequest,
    /// Cancels a running query of another connection.
    Cancel(CancelRequest),
    /// Starts a session.
    Startup(StartupMessage),
}

impl StartupPacket {
    /// Appends the packet.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            StartupPacket::SslRequest => encode_ssl_request(out),
            StartupPacket::GssEncRequest => encode_gssenc_request(out),
            StartupPacket::Cancel(c) => return c.encode(out),
            StartupPacket::Startup(s) => return s.encode(out),
        }
        Ok(())
    }
}

/// A StartupMessage: protocol version and the session parameters in the
/// order sent (`user` is required by the server; `database`, `options`,
/// `application_name`, `replication`, `_pq_.*` protocol options, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub version: ProtocolVersion,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of parameter `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the packet. Names must be non-empty; names and values must
    /// not contain NUL.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        wire::encode(out, None, "StartupMessage", |w| {
            w.u32(self.version.code());
            for (name, value) in &self.params {
                if name.is_empty() {
                    return Err(w.fail("parameter name", "empty name ends the list"));
                }
                w.cstr(name, "parameter name")?;
                w.cstr(value, "parameter value")?;
            }
            w.u8(0);
            Ok(())
        })
    }
}

/// A CancelRequest: the target backend's process id and secret key (4 bytes
/// in protocol 3.0, 4 to 256 bytes in 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub process_id: i32,
    pub secret_key: Vec<u8>,
}

impl CancelRequest {
    /// Appends the packet (any key length, so a proxy can pass on keys as
    /// it received them).
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        wire::encode(out, None, "CancelRequest", |w| {
            w.u32(CANCEL_REQUEST_CODE);
            w.i32(self.process_id);
            w.bytes(&self.secret_key);
            Ok(())
        })
    }
}

/// Appends an SSLRequest: `00 00 00 08 04 d2 16 2f`.
pub fn encode_ssl_request(out: &mut BytesMut) {
    out.put_u32(8);
    out.put_u32(SSL_REQUEST_CODE);
}

/// Appends a GSSENCRequest: `00 00 00 08 04 d2 16 30`.
pub fn encode_gssenc_request(out: &mut BytesMut) {
    out.put_u32(8);
    out.put_u32(GSSENC_REQUEST_CODE);
}

/// Splits the startup packet off the front of `buf` and decodes it;
/// `Ok(None)` if more bytes are needed (`buf` untouched). The length is
/// checked against `max_len` (see [`MAX_STARTUP_PACKET`]) as soon as its 4
/// bytes are there.
///
/// Errors: length negative, below 8 or above `max_len`; an unknown request
/// code; a major version other than 3; parameters that are not NUL-terminated
/// UTF-8 pairs ending with an empty name; a parameter named twice; trailing
/// bytes; a cancel key outside 4..=256 bytes.
pub fn decode_startup(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<StartupPacket>, CodecError> {
    let Some((len_bytes, _)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*len_bytes);
    let Ok(ulen) = u32::try_from(len) else {
        return Err(CodecError::NegativeLength { tag: None, len });
    };
    if ulen < MIN_STARTUP_LEN {
        return Err(CodecError::LengthTooShort {
            tag: None,
            len: ulen,
            min: MIN_STARTUP_LEN,
        });
    }
    // u32 always fits usize on the 32/64-bit targets Warden builds for.
    let ulen = ulen as usize;
    if ulen > max_len {
        return Err(CodecError::TooLong {
            tag: None,
            len: ulen,
            max: max_len,
        });
    }
    if buf.len() < ulen {
        return Ok(None);
    }
    let packet = buf.split_to(ulen);
    parse_packet(&packet[4..]).map(Some)
}

/// Decodes code + body of a complete startup packet.
fn parse_packet(body: &[u8]) -> Result<StartupPacket, CodecError> {
    let mut r = Reader::new(body, "startup packet");
    let code = r.u32("request code")?;
    match code {
        SSL_REQUEST_CODE => {
            Reader::new(r.rest(), "SSLRequest").finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            Reader::new(r.rest(), "GSSENCRequest").finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let mut r = Reader::new(r.rest(), "CancelRequest");
            let process_id = r.i32("process id")?;
            let key = r.rest();
            if !(MIN_CANCEL_KEY..=MAX_CANCEL_KEY).contains(&key.len()) {
                return Err(CodecError::InvalidKeyLength {
                    msg: "CancelRequest",
                    len: key.len(),
                });
            }
            Ok(StartupPacket::Cancel(CancelRequest {
                process_id,
                secret_key: key.to_vec(),
            }))
        }
        _ => {
            let version = ProtocolVersion {
                major: (code >> 16) as u16,
                minor: (code & 0xffff) as u16,
            };
            if version.major == 1234 {
                return Err(CodecError::UnknownRequestCode { code });
            }
            if version.major != 3 {
                return Err(CodecError::UnsupportedVersion {
                    major: version.major,
                    minor: version.minor,
                });
            }
            let params = parse_params(Reader::new(r.rest(), "StartupMessage"))?;
            Ok(StartupPacket::Startup(StartupMessage { version, params }))
        }
    }
}

fn parse_params(mut r: Reader<'_>) -> Result<Vec<(String, String)>, CodecError> {
    let mut params = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let name = r.cstr("parameter name")?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr("parameter value")?;
        if !seen.insert(name) {
            return Err(CodecError::DuplicateParameter {
                name: name.to_string(),
            });
        }
        params.push((name.to_string(), value.to_string()));
    }
    r.finish()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<StartupPacket>, CodecError> {
        decode_startup(&mut BytesMut::from(bytes), MAX_STARTUP_PACKET)
    }

    /// A StartupMessage for user "alice", database "app", protocol 3.0,
    /// written out from the spec.
    const ALICE: &[u8] = b"\x00\x00\x00\x21\x00\x03\x00\x00user\0alice\0database\0app\0\0";

    #[test]
    fn fixture_startup_message() {
        assert_eq!(ALICE.len(), 0x21);
        let Some(StartupPacket::Startup(m)) = decode(ALICE).unwrap() else {
            panic!("not a StartupMessage");
        };
        assert_eq!(m.version, ProtocolVersion::V3_0);
        assert_eq!(m.get("user"), Some("alice"));
        assert_eq!(m.get("database"), Some("app"));
        assert_eq!(m.get("options"), None);
        let mut out = BytesMut::new();
        m.encode(&mut out).unwrap();
        assert_eq!(&out[..], ALICE);
    }

    #[test]
    fn fixture_ssl_and_gssenc_request() {
        let ssl = [0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(decode(&ssl).unwrap(), Some(StartupPacket::SslRequest));
        let mut out = BytesMut::new();
        encode_ssl_request(&mut out);
        assert_eq!(&out[..], &ssl);
        let gss = [0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(decode(&gss).unwrap(), Some(StartupPacket::GssEncRequest));
    }

    #[test]
    fn fixture_cancel_request() {
        // pid 4242 (0x1092), 3.0 key 0xdeadbeef.
        let wire = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x10\x92\xde\xad\xbe\xef";
        let want = CancelRequest {
            process_id: 4242,
            secret_key: vec![0xde, 0xad, 0xbe, 0xef],
        };
        assert_eq!(
            decode(wire).unwrap(),
            Some(StartupPacket::Cancel(want.clone()))
        );
        let mut out = BytesMut::new();
        want.encode(&mut out).unwrap();
        assert_eq!(&out[..], wire);
    }

    #[test]
    fn round_trips() {
        let packets = [
            StartupPacket::SslRequest,
            StartupPacket::GssEncRequest,
            StartupPacket::Cancel(CancelRequest {
                process_id: -7,
                secret_key: (0..=255).collect(),
            }),
            StartupPacket::Startup(StartupMessage {
                version: ProtocolVersion::V3_2,
                params: vec![
                    ("user".into(), "bob".into()),
                    ("application_name".into(), "".into()),
                    ("_pq_.x".into(), "ü".into()),
                ],
            }),
            StartupPacket::Startup(StartupMessage {
                version: ProtocolVersion { major: 3, minor: 9 },
                params: vec![],
            }),
        ];
        let mut out = BytesMut::new();
        for p in &packets {
            p.encode(&mut out).unwrap();
        }
        for p in &packets {
            assert_eq!(
                decode_startup(&mut out, MAX_STARTUP_PACKET)
                    .unwrap()
                    .as_ref(),
                Some(p)
            );
        }
        assert!(out.is_empty());
    }

    #[test]
    fn partial_input_byte_by_byte() {
        let mut b = BytesMut::new();
        for (i, &byte) in ALICE.iter().enumerate() {
            assert_eq!(
                decode_startup(&mut b, MAX_STARTUP_PACKET).unwrap(),
                None,
                "at {i}"
            );
            b.extend_from_slice(&[byte]);
        }
        assert!(
            decode_startup(&mut b, MAX_STARTUP_PACKET)
                .unwrap()
                .is_some()
        );
        assert!(b.is_empty());
    }

    #[test]
    fn bad_lengths() {
        assert_eq!(
            decode(b"\xff\xff\xff\xff"),
            Err(CodecError::NegativeLength { tag: None, len: -1 })
        );
        assert_eq!(
            decode(b"\0\0\0\0"),
            Err(CodecError::LengthTooShort {
                tag: None,
                len: 0,
                min: 8
            })
        );
        assert_eq!(
            decode(b"\0\0\0\x07"),
            Err(CodecError::LengthTooShort {
                tag: None,
                len: 7,
                min: 8
            })
        );
        // Past the maximum: refused with only the 4 length bytes present.
        assert_eq!(
            decode(b"\0\0\x27\x11"),
            Err(CodecError::TooLong {
                tag: None,
                len: 10_001,
                max: MAX_STARTUP_PACKET
            })
        );
    }

    #[test]
    fn bad_codes() {
        assert_eq!(
            decode(b"\0\0\0\x08\x04\xd2\x16\x31"),
            Err(CodecError::UnknownRequestCode { code: 80_877_105 })
        );
        assert_eq!(
            decode(b"\0\0\0\x09\0\x02\0\0\0"),
            Err(CodecError::UnsupportedVersion { major: 2, minor: 0 })
        );
        assert_eq!(
            decode(b"\0\0\0\x09\0\x04\0\0\0"),
            Err(CodecError::UnsupportedVersion { major: 4, minor: 0 })
        );
        assert_eq!(
            decode(b"\0\0\0\x0c\x04\xd2\x16\x2fabcd"),
            Err(CodecError::TrailingBytes {
                msg: "SSLRequest",
                extra: 4
            })
        );
    }

    #[test]
    fn bad_cancel_keys() {
        let short = b"\0\0\0\x0f\x04\xd2\x16\x2e\0\0\0\x01abc";
        assert_eq!(
            decode(short),
            Err(CodecError::InvalidKeyLength {
                msg: "CancelRequest",
                len: 3
            })
        );
        let mut long = BytesMut::new();
        CancelRequest {
            process_id: 1,
            secret_key: vec![1; 257],
        }
        .encode(&mut long)
        .unwrap();
        assert_eq!(
            decode(&long),
            Err(CodecError::InvalidKeyLength {
                msg: "CancelRequest",
                len: 257
            })
        );
        assert_eq!(
            decode(b"\0\0\0\x0a\x04\xd2\x16\x2e\0\0"),
            Err(CodecError::Truncated {
                msg: "CancelRequest",
                field: "process id"
            })
        );
    }

    #[test]
    fn bad_params() {
        let v3 = |body: &[u8]| {
            let mut p = ((8 + body.len()) as u32).to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 3, 0, 0]);
            p.extend_from_slice(body);
            decode(&p)
        };
        // No terminating empty name.
        assert_eq!(
            v3(b"user\0bob\0"),
            Err(CodecError::MissingNul {
                msg: "StartupMessage",
                field: "parameter name"
            })
        );
        // Value without NUL.
        assert_eq!(
            v3(b"user\0bob"),
            Err(CodecError::MissingNul {
                msg: "StartupMessage",
                field: "parameter value"
            })
        );
        // Nothing at all after the version.
        assert_eq!(
            v3(b""),
            Err(CodecError::MissingNul {
                msg: "StartupMessage",
                field: "parameter name"
            })
        );
        assert_eq!(
            v3(b"user\0\xff\0\0"),
            Err(CodecError::InvalidUtf8 {
                msg: "StartupMessage",
                field: "parameter value"
            })
        );
        assert_eq!(
            v3(b"user\0a\0user\0b\0\0"),
            Err(CodecError::DuplicateParameter {
                name: "user".into()
            })
        );
        assert_eq!(
            v3(b"user\0a\0\0junk"),
            Err(CodecError::TrailingBytes {
                msg: "StartupMessage",
                extra: 4
            })
        );
    }

    #[test]
    fn unencodable_params_leave_output_untouched() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let m = StartupMessage {
            version: ProtocolVersion::V3_0,
            params: vec![("user".into(), "a\0b".into())],
        };
        assert!(matches!(
            m.encode(&mut out),
            Err(CodecError::Unencodable { .. })
        ));
        let m = StartupMessage {
            version: ProtocolVersion::V3_0,
            params: vec![("".into(), "x".into())],
        };
        assert!(matches!(
            m.encode(&mut out),
            Err(CodecError::Unencodable { .. })
        ));
        assert_eq!(&out[..], b"keep");
    }
}
