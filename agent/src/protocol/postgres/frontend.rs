//! Client → server messages after the startup packet, parsed from a
//! [`Frame`] and borrowing from it, and their encoders.
//!
//! The 'p' tag is shared by PasswordMessage, SASLInitialResponse,
//! SASLResponse and GSSResponse; which one it is depends on the
//! authentication exchange, so [`FrontendMessage::Password`] keeps the body
//! and [`parse_password_message`] / [`parse_sasl_initial_response`] read it
//! once the caller knows.

use bytes::BytesMut;

use super::frame::Frame;
use super::wire::{self, Reader};
use super::{CodecError, Direction};

/// What a Describe or Close refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A prepared statement ('S').
    Statement,
    /// A portal ('P').
    Portal,
}

impl Target {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("target")? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            other => Err(r.invalid("target", other.into())),
        }
    }
}

/// One client → server message (every message of the protocol's "Message
/// Formats" sent by the frontend after startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// 'Q' simple query.
    Query { sql: &'a str },
    /// 'P' Parse.
    Parse {
        name: &'a str,
        query: &'a str,
        param_types: Vec<u32>,
    },
    /// 'B' Bind. `param_formats` has 0, 1 or `params.len()` entries.
    Bind {
        portal: &'a str,
        statement: &'a str,
        param_formats: Vec<i16>,
        params: Vec<Option<&'a [u8]>>,
        result_formats: Vec<i16>,
    },
    /// 'D' Describe.
    Describe { kind: Target, name: &'a str },
    /// 'E' Execute (`max_rows` 0: no limit).
    Execute { portal: &'a str, max_rows: i32 },
    /// 'C' Close.
    Close { kind: Target, name: &'a str },
    /// 'S' Sync.
    Sync,
    /// 'H' Flush.
    Flush,
    /// 'd' CopyData.
    CopyData(&'a [u8]),
    /// 'c' CopyDone.
    CopyDone,
    /// 'f' CopyFail.
    CopyFail { message: &'a str },
    /// 'F' FunctionCall. `arg_formats` has 0, 1 or `args.len()` entries.
    FunctionCall {
        oid: u32,
        arg_formats: Vec<i16>,
        args: Vec<Option<&'a [u8]>>,
        result_format: i16,
    },
    /// 'X' Terminate.
    Terminate,
    /// 'p': PasswordMessage, SASLInitialResponse, SASLResponse or
    /// GSSResponse; the body, unparsed (see the module doc).
    Password(&'a [u8]),
}

impl<'a> FrontendMessage<'a> {
    /// Parses a frame sent by a client. Unknown tags are an error.
    pub fn parse(frame: &'a Frame) -> Result<Self, CodecError> {
        Self::parse_body(frame.tag, frame.body())
    }

    /// Parses a message from its tag and body.
    pub fn parse_body(tag: u8, body: &'a [u8]) -> Result<Self, CodecError> {
        let name = name_of(tag).ok_or(CodecError::UnknownTag {
            direction: Direction::Frontend,
            tag,
        })?;
        let mut r = Reader::new(body, name);
        let msg = match tag {
            b'Q' => FrontendMessage::Query {
                sql: r.cstr("query")?,
            },
            b'P' => {
                let name = r.cstr("statement name")?;
                let query = r.cstr("query")?;
                let n = r.count16("parameter type count")?;
                let mut param_types = Vec::with_capacity(r.capacity(n, 4));
                for _ in 0..n {
                    param_types.push(r.u32("parameter type")?);
                }
                FrontendMessage::Parse {
                    name,
                    query,
                    param_types,
                }
            }
            b'B' => {
                let portal = r.cstr("portal name")?;
                let statement = r.cstr("statement name")?;
                let param_formats = read_formats(&mut r, "parameter format")?;
                let params = read_values(&mut r, "parameter value")?;
                check_formats(&r, "parameter format count", &param_formats, params.len())?;
                let result_formats = read_formats(&mut r, "result format")?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                }
            }
            b'D' => FrontendMessage::Describe {
                kind: Target::read(&mut r)?,
                name: r.cstr("name")?,
            },
            b'E' => FrontendMessage::Execute {
                portal: r.cstr("portal name")?,
                max_rows: r.i32("max rows")?,
            },
            b'C' => FrontendMessage::Close {
                kind: Target::read(&mut r)?,
                name: r.cstr("name")?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'd' => FrontendMessage::CopyData(r.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail {
                message: r.cstr("error message")?,
            },
            b'F' => {
                let oid = r.u32("function oid")?;
                let arg_formats = read_formats(&mut r, "argument format")?;
                let args = read_values(&mut r, "argument value")?;
                check_formats(&r, "argument format count", &arg_formats, args.len())?;
                let result_format = r.format("result format")?;
                FrontendMessage::FunctionCall {
                    oid,
                    arg_formats,
                    args,
                    result_format,
                }
            }
            b'X' => FrontendMessage::Terminate,
            b'p' => FrontendMessage::Password(r.rest()),
            // name_of() returned Some only for the tags above.
            _ => {
                return Err(CodecError::UnknownTag {
                    direction: Direction::Frontend,
                    tag,
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }

    /// The tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            FrontendMessage::Query { .. } => b'Q',
            FrontendMessage::Parse { .. } => b'P',
            FrontendMessage::Bind { .. } => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail { .. } => b'f',
            FrontendMessage::FunctionCall { .. } => b'F',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::Password(_) => b'p',
        }
    }

    /// The message's name in the protocol documentation.
    pub fn name(&self) -> &'static str {
        name_of(self.tag()).unwrap_or("unknown")
    }

    /// Appends the message.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            FrontendMessage::Query { sql } => query(out, sql),
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => parse(out, name, query, param_types),
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => bind(
                out,
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            ),
            FrontendMessage::Describe { kind, name } => describe(out, *kind, name),
            FrontendMessage::Execute { portal, max_rows } => execute(out, portal, *max_rows),
            FrontendMessage::Close { kind, name } => close(out, *kind, name),
            FrontendMessage::Sync => {
                sync(out);
                Ok(())
            }
            FrontendMessage::Flush => {
                flush(out);
                Ok(())
            }
            FrontendMessage::CopyData(data) => copy_data(out, data),
            FrontendMessage::CopyDone => {
                copy_done(out);
                Ok(())
            }
            FrontendMessage::CopyFail { message } => copy_fail(out, message),
            FrontendMessage::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            } => function_call(out, *oid, arg_formats, args, *result_format),
            FrontendMessage::Terminate => {
                terminate(out);
                Ok(())
            }
            FrontendMessage::Password(body) => raw_password(out, body),
        }
    }
}

/// The documented name of a frontend tag, `None` for unknown tags.
pub fn name_of(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'F' => "FunctionCall",
        b'X' => "Terminate",
        b'p' => "PasswordMessage",
        _ => return None,
    })
}

fn read_formats(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<i16>, CodecError> {
    let n = r.count16(field)?;
    let mut v = Vec::with_capacity(r.capacity(n, 2));
    for _ in 0..n {
        v.push(r.format(field)?);
    }
    Ok(v)
}

fn read_values<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
) -> Result<Vec<Option<&'a [u8]>>, CodecError> {
    let n = r.count16(field)?;
    let mut v = Vec::with_capacity(r.capacity(n, 4));
    for _ in 0..n {
        v.push(r.value(field)?);
    }
    Ok(v)
}

/// Format codes apply to all values (1 code), to none (0: all text), or one
/// each.
fn check_formats(
    r: &Reader<'_>,
    field: &'static str,
    formats: &[i16],
    values: usize,
) -> Result<(), CodecError> {
    if formats.len() <= 1 || formats.len() == values {
        Ok(())
    } else {
        Err(CodecError::CountMismatch {
            msg: r.msg(),
            field,
            count: formats.len(),
            expected: values,
        })
    }
}

/// The password of a PasswordMessage body (cleartext, or `md5` + 32 hex
/// digits).
pub fn parse_password_message(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let password = r.cstr("password")?;
    r.finish()?;
    Ok(password)
}

/// A SASLInitialResponse body: the mechanism chosen and the initial client
/// response (`None` if the client sent length -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    pub data: Option<&'a [u8]>,
}

/// Reads a 'p' body as a SASLInitialResponse. (A SASLResponse or
/// GSSResponse body is just the data: [`FrontendMessage::Password`]'s bytes.)
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<SaslInitialResponse<'_>, CodecError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr("mechanism")?;
    let data = r.value("initial response")?;
    r.finish()?;
    Ok(SaslInitialResponse { mechanism, data })
}

// ---- encoders ----

/// 'Q' Query.
pub fn query(out: &mut BytesMut, sql: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'Q'), "Query", |w| w.cstr(sql, "query"))
}

/// 'P' Parse.
pub fn parse(
    out: &mut BytesMut,
    name: &str,
    query: &str,
    param_types: &[u32],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'P'), "Parse", |w| {
        w.cstr(name, "statement name")?;
        w.cstr(query, "query")?;
        w.count16(param_types.len(), "parameter type count")?;
        for &t in param_types {
            w.u32(t);
        }
        Ok(())
    })
}

/// 'B' Bind.
pub fn bind(
    out: &mut BytesMut,
    portal: &str,
    statement: &str,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'B'), "Bind", |w| {
        w.cstr(portal, "portal name")?;
        w.cstr(statement, "statement name")?;
        w.count16(param_formats.len(), "parameter format count")?;
        for &f in param_formats {
            w.i16(f);
        }
        w.count16(params.len(), "parameter count")?;
        for &p in params {
            w.value(p, "parameter value")?;
        }
        w.count16(result_formats.len(), "result format count")?;
        for &f in result_formats {
            w.i16(f);
        }
        Ok(())
    })
}

/// 'D' Describe.
pub fn describe(out: &mut BytesMut, kind: Target, name: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'D'), "Describe", |w| {
        w.u8(kind.byte());
        w.cstr(name, "name")
    })
}

/// 'E' Execute.
pub fn execute(out: &mut BytesMut, portal: &str, max_rows: i32) -> Result<(), CodecError> {
    wire::encode(out, Some(b'E'), "Execute", |w| {
        w.cstr(portal, "portal name")?;
        w.i32(max_rows);
        Ok(())
    })
}

/// 'C' Close.
pub fn close(out: &mut BytesMut, kind: Target, name: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'C'), "Close", |w| {
        w.u8(kind.byte());
        w.cstr(name, "name")
    })
}

/// 'S' Sync.
pub fn sync(out: &mut BytesMut) {
    wire::encode_empty(out, b'S');
}

/// 'H' Flush.
pub fn flush(out: &mut BytesMut) {
    wire::encode_empty(out, b'H');
}

/// 'X' Terminate.
pub fn terminate(out: &mut BytesMut) {
    wire::encode_empty(out, b'X');
}

/// 'd' CopyData.
pub fn copy_data(out: &mut BytesMut, data: &[u8]) -> Result<(), CodecError> {
    wire::encode(out, Some(b'd'), "CopyData", |w| {
        w.bytes(data);
        Ok(())
    })
}

/// 'c' CopyDone.
pub fn copy_done(out: &mut BytesMut) {
    wire::encode_empty(out, b'c');
}

/// 'f' CopyFail.
pub fn copy_fail(out: &mut BytesMut, message: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'f'), "CopyFail", |w| {
        w.cstr(message, "error message")
    })
}

/// 'F' FunctionCall.
pub fn function_call(
    out: &mut BytesMut,
    oid: u32,
    arg_formats: &[i16],
    args: &[Option<&[u8]>],
    result_format: i16,
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'F'), "FunctionCall", |w| {
        w.u32(oid);
        w.count16(arg_formats.len(), "argument format count")?;
        for &f in arg_formats {
            w.i16(f);
        }
        w.count16(args.len(), "argument count")?;
        for &a in args {
            w.value(a, "argument value")?;
        }
        w.i16(result_format);
        Ok(())
    })
}

/// 'p' PasswordMessage: `password` is the cleartext password or the
/// `md5…` string, without the terminating NUL (added here).
pub fn password_message(out: &mut BytesMut, password: &[u8]) -> Result<(), CodecError> {
    wire::encode(out, Some(b'p'), "PasswordMessage", |w| {
        w.cstr_bytes(password, "password")
    })
}

/// 'p' SASLInitialResponse: the chosen mechanism and the client-first
/// message.
pub fn sasl_initial_response(
    out: &mut BytesMut,
    mechanism: &str,
    data: &[u8],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'p'), "SASLInitialResponse", |w| {
        w.cstr(mechanism, "mechanism")?;
        w.value(Some(data), "initial response")
    })
}

/// 'p' SASLResponse.
pub fn sasl_response(out: &mut BytesMut, data: &[u8]) -> Result<(), CodecError> {
    raw_password(out, data)
}

/// 'p' GSSResponse.
pub fn gss_response(out: &mut BytesMut, data: &[u8]) -> Result<(), CodecError> {
    raw_password(out, data)
}

/// A 'p' message with the given body, as is.
fn raw_password(out: &mut BytesMut, body: &[u8]) -> Result<(), CodecError> {
    wire::encode(out, Some(b'p'), "PasswordMessage", |w| {
        w.bytes(body);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::frame::{DEFAULT_MAX_MESSAGE, decode_frame};

    fn frame_of(bytes: &[u8]) -> Frame {
        let mut b = BytesMut::from(bytes);
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        assert!(b.is_empty(), "one frame expected");
        f
    }

    /// A message with `tag` and `body`, framed.
    fn framed(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        frame_of(&v)
    }

    fn all_messages() -> Vec<FrontendMessage<'static>> {
        vec![
            FrontendMessage::Query {
                sql: "SELECT 1; SELECT 'ü'",
            },
            FrontendMessage::Query { sql: "" },
            FrontendMessage::Parse {
                name: "s1",
                query: "SELECT $1::int, $2",
                param_types: vec![23, 0, u32::MAX],
            },
            FrontendMessage::Bind {
                portal: "",
                statement: "s1",
                param_formats: vec![1],
                params: vec![Some(b"\0\0\0\x07"), None, Some(b"")],
                result_formats: vec![0, 1],
            },
            FrontendMessage::Bind {
                portal: "p",
                statement: "",
                param_formats: vec![0, 1],
                params: vec![Some(b"x"), None],
                result_formats: vec![],
            },
            FrontendMessage::Describe {
                kind: Target::Statement,
                name: "s1",
            },
            FrontendMessage::Describe {
                kind: Target::Portal,
                name: "",
            },
            FrontendMessage::Execute {
                portal: "",
                max_rows: 0,
            },
            FrontendMessage::Close {
                kind: Target::Portal,
                name: "p",
            },
            FrontendMessage::Sync,
            FrontendMessage::Flush,
            FrontendMessage::CopyData(b"1\t2\n\0\xff"),
            FrontendMessage::CopyDone,
            FrontendMessage::CopyFail { message: "aborted" },
            FrontendMessage::FunctionCall {
                oid: 1598,
                arg_formats: vec![],
                args: vec![Some(b"abc"), None],
                result_format: 1,
            },
            FrontendMessage::Terminate,
            FrontendMessage::Password(b"secret\0"),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = all_messages();
        let mut out = BytesMut::new();
        for m in &msgs {
            m.encode(&mut out).unwrap();
        }
        for m in &msgs {
            let f = decode_frame(&mut out, DEFAULT_MAX_MESSAGE)
                .unwrap()
                .unwrap();
            assert_eq!(f.tag, m.tag());
            assert_eq!(&FrontendMessage::parse(&f).unwrap(), m);
            // Re-encoding gives the same bytes.
            let mut again = BytesMut::new();
            m.encode(&mut again).unwrap();
            assert_eq!(&again[..], &f.raw[..], "{}", m.name());
        }
        assert!(out.is_empty());
    }

    #[test]
    fn fixture_query() {
        let f = frame_of(b"Q\0\0\0\x0dSELECT 1\0");
        assert_eq!(
            FrontendMessage::parse(&f).unwrap(),
            FrontendMessage::Query { sql: "SELECT 1" }
        );
        let mut out = BytesMut::new();
        sync(&mut out);
        assert_eq!(&out[..], b"S\0\0\0\x04");
    }

    #[test]
    fn auth_messages() {
        let mut out = BytesMut::new();
        password_message(&mut out, b"md5abc").unwrap();
        let f = decode_frame(&mut out, 100).unwrap().unwrap();
        assert_eq!(&f.raw[..], b"p\0\0\0\x0bmd5abc\0");
        let FrontendMessage::Password(body) = FrontendMessage::parse(&f).unwrap() else {
            panic!("not 'p'");
        };
        assert_eq!(parse_password_message(body).unwrap(), "md5abc");
        assert!(matches!(
            password_message(&mut out, b"a\0b"),
            Err(CodecError::Unencodable { .. })
        ));
        assert!(out.is_empty());

        sasl_initial_response(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        let f = decode_frame(&mut out, 100).unwrap().unwrap();
        let FrontendMessage::Password(body) = FrontendMessage::parse(&f).unwrap() else {
            panic!("not 'p'");
        };
        assert_eq!(
            parse_sasl_initial_response(body).unwrap(),
            SaslInitialResponse {
                mechanism: "SCRAM-SHA-256",
                data: Some(b"n,,n=,r=abc")
            }
        );
        assert_eq!(
            parse_sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff")
                .unwrap()
                .data,
            None
        );
        assert_eq!(
            parse_sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x05abc"),
            Err(CodecError::Truncated {
                msg: "SASLInitialResponse",
                field: "initial response"
            })
        );
        assert_eq!(
            parse_password_message(b"pw\0x"),
            Err(CodecError::TrailingBytes {
                msg: "PasswordMessage",
                extra: 1
            })
        );

        sasl_response(&mut out, b"c=biws,r=abc,p=xyz").unwrap();
        let f = decode_frame(&mut out, 100).unwrap().unwrap();
        assert_eq!(
            FrontendMessage::parse(&f).unwrap(),
            FrontendMessage::Password(b"c=biws,r=abc,p=xyz")
        );
    }

    #[test]
    fn malformed() {
        let cases: Vec<(Frame, CodecError)> = vec![
            (
                framed(b'Z', b""),
                CodecError::UnknownTag {
                    direction: Direction::Frontend,
                    tag: b'Z',
                },
            ),
            (
                framed(b'Q', b"SELECT 1"),
                CodecError::MissingNul {
                    msg: "Query",
                    field: "query",
                },
            ),
            (
                framed(b'Q', b"SELECT \xc3\0"),
                CodecError::InvalidUtf8 {
                    msg: "Query",
                    field: "query",
                },
            ),
            (
                framed(b'Q', b"SELECT 1\0x"),
                CodecError::TrailingBytes {
                    msg: "Query",
                    extra: 1,
                },
            ),
            (
                framed(b'S', b"\0"),
                CodecError::TrailingBytes {
                    msg: "Sync",
                    extra: 1,
                },
            ),
            (
                framed(b'P', b"s\0q\0\0\x02\0\0\0\x17"),
                CodecError::Truncated {
                    msg: "Parse",
                    field: "parameter type",
                },
            ),
            // Bind with a value length of -2.
            (
                framed(b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
                CodecError::InvalidValueLength {
                    msg: "Bind",
                    len: -2,
                },
            ),
            // Bind claiming 65535 parameters with none present.
            (
                framed(b'B', b"\0\0\0\0\xff\xff"),
                CodecError::Truncated {
                    msg: "Bind",
                    field: "parameter value",
                },
            ),
            // Two format codes for three parameters.
            (
                framed(
                    b'B',
                    b"\0\0\0\x02\0\0\0\x01\0\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0\0",
                ),
                CodecError::CountMismatch {
                    msg: "Bind",
                    field: "parameter format count",
                    count: 2,
                    expected: 3,
                },
            ),
            (
                framed(b'B', b"\0\0\0\x01\0\x02\0\0\0\0"),
                CodecError::InvalidValue {
                    msg: "Bind",
                    field: "parameter format",
                    value: 2,
                },
            ),
            (
                framed(b'D', b"X\0"),
                CodecError::InvalidValue {
                    msg: "Describe",
                    field: "target",
                    value: i64::from(b'X'),
                },
            ),
            (
                framed(b'E', b"\0\0\0"),
                CodecError::Truncated {
                    msg: "Execute",
                    field: "max rows",
                },
            ),
            (
                framed(b'F', b"\0\0\x06\x3e\0\0\0\x01\0\0\0\x01a\0\x07"),
                CodecError::InvalidValue {
                    msg: "FunctionCall",
                    field: "result format",
                    value: 7,
                },
            ),
        ];
        for (f, want) in cases {
            assert_eq!(FrontendMessage::parse(&f), Err(want));
        }
    }

    #[test]
    fn unencodable() {
        let mut out = BytesMut::new();
        assert!(matches!(
            query(&mut out, "a\0b"),
            Err(CodecError::Unencodable { msg: "Query", .. })
        ));
        let types = vec![0u32; 65_536];
        assert!(matches!(
            parse(&mut out, "", "", &types),
            Err(CodecError::Unencodable { msg: "Parse", .. })
        ));
        assert!(out.is_empty());
        // 65535 parameters is fine (the server reads the count unsigned).
        let params = vec![None; 65_535];
        bind(&mut out, "", "", &[], &params, &[]).unwrap();
        let f = decode_frame(&mut out, DEFAULT_MAX_MESSAGE)
            .unwrap()
            .unwrap();
        let FrontendMessage::Bind { params: got, .. } = FrontendMessage::parse(&f).unwrap() else {
            panic!("not Bind");
        };
        assert_eq!(got.len(), 65_535);
    }
}
