//! Server → client messages, parsed from a [`Frame`] and borrowing from it,
//! and their encoders. DataRow is the hottest message: [`DataRowValues`]
//! walks its values without allocating, and [`encode_data_row`] writes a
//! row back from any exact-size iterator of values.

use bytes::BytesMut;

use super::frame::Frame;
use super::wire::{self, Reader};
use super::{CodecError, Direction};

/// An 'R' authentication request (or the final AuthenticationOk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// 0: AuthenticationOk.
    Ok,
    /// 2: AuthenticationKerberosV5 (no longer supported by servers).
    KerberosV5,
    /// 3: AuthenticationCleartextPassword.
    CleartextPassword,
    /// 5: AuthenticationMD5Password.
    Md5Password { salt: [u8; 4] },
    /// 7: AuthenticationGSS.
    Gss,
    /// 8: AuthenticationGSSContinue.
    GssContinue(&'a [u8]),
    /// 9: AuthenticationSSPI.
    Sspi,
    /// 10: AuthenticationSASL, the mechanisms in the server's order of
    /// preference.
    Sasl { mechanisms: Vec<&'a str> },
    /// 11: AuthenticationSASLContinue.
    SaslContinue(&'a [u8]),
    /// 12: AuthenticationSASLFinal.
    SaslFinal(&'a [u8]),
    /// Any other code; its body is not kept (forward the frame as is).
    Other(i32),
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    pub name: &'a str,
    /// Table OID, or 0 if the column is not a plain table column.
    pub table_oid: u32,
    /// Attribute number within that table, or 0.
    pub column_attr: i16,
    pub type_oid: u32,
    /// `pg_type.typlen` (negative: variable width).
    pub type_size: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary (0 when not yet known, as in Describe of a
    /// statement).
    pub format: i16,
}

/// The fields of an ErrorResponse or NoticeResponse: (code byte, value) in
/// the order sent (S, V, C, M, D, H, P, W, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields<'a>(pub Vec<(u8, &'a str)>);

impl<'a> Fields<'a> {
    /// The first field with this code (e.g. `b'C'` for the SQLSTATE).
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, v)| *v)
    }
}

/// A CopyInResponse/CopyOutResponse/CopyBothResponse: the overall format
/// (0 text, 1 binary) and one format code per column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub overall: u8,
    pub columns: Vec<i16>,
}

/// One server → client message (every backend message of the protocol's
/// "Message Formats").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// 'R'.
    Authentication(Authentication<'a>),
    /// 'K': 4-byte key in protocol 3.0, 4 to 256 bytes in 3.2.
    BackendKeyData {
        process_id: i32,
        secret_key: &'a [u8],
    },
    /// 'S'.
    ParameterStatus { name: &'a str, value: &'a str },
    /// 'Z': `status` is b'I' (idle), b'T' (in transaction) or b'E' (failed
    /// transaction).
    ReadyForQuery { status: u8 },
    /// 'T'.
    RowDescription { fields: Vec<FieldDescription<'a>> },
    /// 'D' (see [`DataRowValues`] for the allocation-free path).
    DataRow { values: Vec<Option<&'a [u8]>> },
    /// 'C'.
    CommandComplete { tag: &'a str },
    /// 'E'.
    ErrorResponse(Fields<'a>),
    /// 'N'.
    NoticeResponse(Fields<'a>),
    /// 'A'.
    NotificationResponse {
        process_id: i32,
        channel: &'a str,
        payload: &'a str,
    },
    /// 'G'.
    CopyInResponse(CopyFormat),
    /// 'H'.
    CopyOutResponse(CopyFormat),
    /// 'W'.
    CopyBothResponse(CopyFormat),
    /// 'd'.
    CopyData(&'a [u8]),
    /// 'c'.
    CopyDone,
    /// 'I'.
    EmptyQueryResponse,
    /// '1'.
    ParseComplete,
    /// '2'.
    BindComplete,
    /// '3'.
    CloseComplete,
    /// 'n'.
    NoData,
    /// 't'.
    ParameterDescription { types: Vec<u32> },
    /// 's'.
    PortalSuspended,
    /// 'V'.
    FunctionCallResponse { value: Option<&'a [u8]> },
    /// 'v': the newest minor version the server supports for the requested
    /// major, and the `_pq_.` options it did not recognise.
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognised: Vec<&'a str>,
    },
}

/// The documented name of a backend tag, `None` for unknown tags.
pub fn name_of(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'S' => "ParameterStatus",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        b'D' => "DataRow",
        b'C' => "CommandComplete",
        b'E' => "ErrorResponse",
        b'N' => "NoticeResponse",
        b'A' => "NotificationResponse",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'I' => "EmptyQueryResponse",
        b'1' => "ParseComplete",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'n' => "NoData",
        b't' => "ParameterDescription",
        b's' => "PortalSuspended",
        b'V' => "FunctionCallResponse",
        b'v' => "NegotiateProtocolVersion",
        _ => return None,
    })
}

impl<'a> BackendMessage<'a> {
    /// Parses a frame sent by a server. Unknown tags are an error.
    pub fn parse(frame: &'a Frame) -> Result<Self, CodecError> {
        Self::parse_body(frame.tag, frame.body())
    }

    /// Parses a message from its tag and body.
    pub fn parse_body(tag: u8, body: &'a [u8]) -> Result<Self, CodecError> {
        let name = name_of(tag).ok_or(CodecError::UnknownTag {
            direction: Direction::Backend,
            tag,
        })?;
        let mut r = Reader::new(body, name);
        let msg = match tag {
            b'R' => BackendMessage::Authentication(read_authentication(&mut r)?),
            b'K' => {
                let process_id = r.i32("process id")?;
                let secret_key = r.rest();
                if !(4..=256).contains(&secret_key.len()) {
                    return Err(CodecError::InvalidKeyLength {
                        msg: name,
                        len: secret_key.len(),
                    });
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                }
            }
            b'S' => BackendMessage::ParameterStatus {
                name: r.cstr("parameter name")?,
                value: r.cstr("parameter value")?,
            },
            b'Z' => {
                let status = r.u8("transaction status")?;
                if !matches!(status, b'I' | b'T' | b'E') {
                    return Err(r.invalid("transaction status", status.into()));
                }
                BackendMessage::ReadyForQuery { status }
            }
            b'T' => {
                let n = r.count16("field count")?;
                // A field is at least 19 bytes (empty name).
                let mut fields = Vec::with_capacity(r.capacity(n, 19));
                for _ in 0..n {
                    fields.push(FieldDescription {
                        name: r.cstr("field name")?,
                        table_oid: r.u32("table oid")?,
                        column_attr: r.i16("column attribute")?,
                        type_oid: r.u32("type oid")?,
                        type_size: r.i16("type size")?,
                        type_modifier: r.i32("type modifier")?,
                        format: r.format("format code")?,
                    });
                }
                BackendMessage::RowDescription { fields }
            }
            b'D' => {
                let values = DataRowValues::new(r.rest())?;
                BackendMessage::DataRow {
                    values: values.collect(),
                }
            }
            b'C' => BackendMessage::CommandComplete {
                tag: r.cstr("command tag")?,
            },
            b'E' => BackendMessage::ErrorResponse(read_fields(&mut r)?),
            b'N' => BackendMessage::NoticeResponse(read_fields(&mut r)?),
            b'A' => BackendMessage::NotificationResponse {
                process_id: r.i32("process id")?,
                channel: r.cstr("channel")?,
                payload: r.cstr("payload")?,
            },
            b'G' => BackendMessage::CopyInResponse(read_copy_format(&mut r)?),
            b'H' => BackendMessage::CopyOutResponse(read_copy_format(&mut r)?),
            b'W' => BackendMessage::CopyBothResponse(read_copy_format(&mut r)?),
            b'd' => BackendMessage::CopyData(r.rest()),
            b'c' => BackendMessage::CopyDone,
            b'I' => BackendMessage::EmptyQueryResponse,
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b't' => {
                let n = r.count16("parameter count")?;
                let mut types = Vec::with_capacity(r.capacity(n, 4));
                for _ in 0..n {
                    types.push(r.u32("parameter type")?);
                }
                BackendMessage::ParameterDescription { types }
            }
            b's' => BackendMessage::PortalSuspended,
            b'V' => BackendMessage::FunctionCallResponse {
                value: r.value("result value")?,
            },
            b'v' => {
                let newest_minor = r.i32("newest minor version")?;
                let n = r.count32("option count")?;
                let mut unrecognised = Vec::with_capacity(r.capacity(n, 1));
                for _ in 0..n {
                    unrecognised.push(r.cstr("option name")?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognised,
                }
            }
            // name_of() returned Some only for the tags above.
            _ => {
                return Err(CodecError::UnknownTag {
                    direction: Direction::Backend,
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
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ReadyForQuery { .. } => b'Z',
            BackendMessage::RowDescription { .. } => b'T',
            BackendMessage::DataRow { .. } => b'D',
            BackendMessage::CommandComplete { .. } => b'C',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::NoData => b'n',
            BackendMessage::ParameterDescription { .. } => b't',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::FunctionCallResponse { .. } => b'V',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
        }
    }

    /// The message's name in the protocol documentation.
    pub fn name(&self) -> &'static str {
        name_of(self.tag()).unwrap_or("unknown")
    }

    /// Appends the message.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), CodecError> {
        let empty = |out: &mut BytesMut, tag| {
            wire::encode_empty(out, tag);
            Ok(())
        };
        match self {
            BackendMessage::Authentication(a) => authentication(out, a),
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => backend_key_data(out, *process_id, secret_key),
            BackendMessage::ParameterStatus { name, value } => parameter_status(out, name, value),
            BackendMessage::ReadyForQuery { status } => {
                ready_for_query(out, *status);
                Ok(())
            }
            BackendMessage::RowDescription { fields } => row_description(out, fields),
            BackendMessage::DataRow { values } => encode_data_row(out, values.iter().copied()),
            BackendMessage::CommandComplete { tag } => command_complete(out, tag),
            BackendMessage::ErrorResponse(f) => error_fields(out, f),
            BackendMessage::NoticeResponse(f) => notice_fields(out, f),
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => notification_response(out, *process_id, channel, payload),
            BackendMessage::CopyInResponse(c) => copy_response(out, b'G', c),
            BackendMessage::CopyOutResponse(c) => copy_response(out, b'H', c),
            BackendMessage::CopyBothResponse(c) => copy_response(out, b'W', c),
            BackendMessage::CopyData(d) => copy_data(out, d),
            BackendMessage::CopyDone => empty(out, b'c'),
            BackendMessage::EmptyQueryResponse => empty(out, b'I'),
            BackendMessage::ParseComplete => empty(out, b'1'),
            BackendMessage::BindComplete => empty(out, b'2'),
            BackendMessage::CloseComplete => empty(out, b'3'),
            BackendMessage::NoData => empty(out, b'n'),
            BackendMessage::ParameterDescription { types } => parameter_description(out, types),
            BackendMessage::PortalSuspended => empty(out, b's'),
            BackendMessage::FunctionCallResponse { value } => function_call_response(out, *value),
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognised,
            } => negotiate_protocol_version(out, *newest_minor, unrecognised),
        }
    }
}

fn read_authentication<'a>(r: &mut Reader<'a>) -> Result<Authentication<'a>, CodecError> {
    Ok(match r.i32("authentication code")? {
        0 => Authentication::Ok,
        2 => Authentication::KerberosV5,
        3 => Authentication::CleartextPassword,
        5 => Authentication::Md5Password {
            salt: r.array("salt")?,
        },
        7 => Authentication::Gss,
        8 => Authentication::GssContinue(r.rest()),
        9 => Authentication::Sspi,
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr("mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        other => {
            r.rest();
            Authentication::Other(other)
        }
    })
}

fn read_fields<'a>(r: &mut Reader<'a>) -> Result<Fields<'a>, CodecError> {
    let mut fields = Vec::new();
    loop {
        let code = r.u8("field type")?;
        if code == 0 {
            return Ok(Fields(fields));
        }
        fields.push((code, r.cstr("field value")?));
    }
}

fn read_copy_format(r: &mut Reader<'_>) -> Result<CopyFormat, CodecError> {
    let overall = r.u8("overall format")?;
    if overall > 1 {
        return Err(r.invalid("overall format", overall.into()));
    }
    let n = r.count16("column count")?;
    let mut columns = Vec::with_capacity(r.capacity(n, 2));
    for _ in 0..n {
        columns.push(r.format("column format")?);
    }
    Ok(CopyFormat { overall, columns })
}

/// The values of a DataRow, walked without allocating. Construction checks
/// the whole row (count, every length, no trailing bytes), so iteration
/// cannot fail.
#[derive(Debug, Clone)]
pub struct DataRowValues<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> DataRowValues<'a> {
    /// Checks a DataRow body and returns an iterator over its values.
    pub fn new(body: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(body, "DataRow");
        let left = r.count16("column count")?;
        let mut check = r.clone();
        for _ in 0..left {
            check.value("column value")?;
        }
        check.finish()?;
        Ok(Self {
            rest: r.rest(),
            left,
        })
    }

    /// The values of a 'D' frame.
    pub fn from_frame(frame: &'a Frame) -> Result<Self, CodecError> {
        if frame.tag != b'D' {
            return Err(CodecError::WrongTag {
                expected: b'D',
                got: frame.tag,
            });
        }
        Self::new(frame.body())
    }
}

impl<'a> Iterator for DataRowValues<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // new() checked every length; the fallbacks below end the walk
        // instead of panicking should that ever not hold.
        let Some((len, tail)) = self.rest.split_first_chunk::<4>() else {
            self.left = 0;
            return None;
        };
        self.left -= 1;
        let Ok(len) = usize::try_from(i32::from_be_bytes(*len)) else {
            self.rest = tail;
            return Some(None);
        };
        let Some((value, tail)) = tail.split_at_checked(len) else {
            self.left = 0;
            return None;
        };
        self.rest = tail;
        Some(Some(value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for DataRowValues<'_> {}

/// A DataRow body walked as it streams past in pieces, for rows that are
/// passed on without being held whole: checks the row as
/// [`DataRowValues::new`] does and keeps the first `keep` bytes of each
/// value (at most [`DataRowScanner::KEPT_MAX`] bytes in all), for a sample.
/// Memory is bounded by what is kept, never by the row's size.
#[derive(Debug)]
pub struct DataRowScanner {
    /// Body bytes not fed yet.
    left: usize,
    keep: usize,
    /// Bytes that may still be kept, over all values.
    budget: usize,
    /// A fixed-size field being read across pieces (count: 2 bytes, value
    /// length: 4).
    field: [u8; 4],
    have: usize,
    /// Values still to come, once the count is read.
    columns: Option<usize>,
    /// Bytes of the current value still to come.
    value_left: usize,
    values: Vec<Option<Vec<u8>>>,
}

impl DataRowScanner {
    /// Most bytes kept over all values of a row.
    pub const KEPT_MAX: usize = 64 * 1024;

    /// A scanner for a body of `body_len` bytes keeping `keep` bytes of
    /// each value.
    pub fn new(body_len: usize, keep: usize) -> Self {
        Self {
            left: body_len,
            keep,
            budget: Self::KEPT_MAX,
            field: [0; 4],
            have: 0,
            columns: None,
            value_left: 0,
            values: Vec::new(),
        }
    }

    /// The next piece of the body.
    pub fn feed(&mut self, mut b: &[u8]) -> Result<(), CodecError> {
        if b.len() > self.left {
            return Err(CodecError::TrailingBytes {
                msg: "DataRow",
                extra: b.len() - self.left,
            });
        }
        self.left -= b.len();
        while !b.is_empty() {
            if self.value_left > 0 {
                let n = self.value_left.min(b.len());
                if let Some(Some(v)) = self.values.last_mut() {
                    let k = n.min(self.keep.saturating_sub(v.len())).min(self.budget);
                    v.extend_from_slice(&b[..k]);
                    self.budget -= k;
                }
                self.value_left -= n;
                b = &b[n..];
                continue;
            }
            let want = match self.columns {
                None => 2,
                Some(0) => {
                    return Err(CodecError::TrailingBytes {
                        msg: "DataRow",
                        extra: b.len() + self.left,
                    });
                }
                Some(_) => 4,
            };
            let n = (want - self.have).min(b.len());
            self.field[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have < want {
                continue;
            }
            self.have = 0;
            let [a, c, d, e] = self.field;
            match self.columns.as_mut() {
                None => self.columns = Some(usize::from(u16::from_be_bytes([a, c]))),
                Some(cols) => {
                    *cols -= 1;
                    let len = i32::from_be_bytes([a, c, d, e]);
                    if len == -1 {
                        self.values.push(None);
                        continue;
                    }
                    let len = usize::try_from(len).map_err(|_| CodecError::InvalidValueLength {
                        msg: "DataRow",
                        len,
                    })?;
                    if len > b.len() + self.left {
                        return Err(CodecError::Truncated {
                            msg: "DataRow",
                            field: "column value",
                        });
                    }
                    self.values.push(Some(Vec::new()));
                    self.value_left = len;
                }
            }
        }
        Ok(())
    }

    /// The kept beginning of each value (`None`: SQL NULL), once the
    /// whole body was fed; an error if it was cut short.
    pub fn finish(self) -> Result<Vec<Option<Vec<u8>>>, CodecError> {
        let field = match self.columns {
            None => "column count",
            Some(0) if self.value_left == 0 && self.left == 0 => return Ok(self.values),
            Some(_) => "column value",
        };
        Err(CodecError::Truncated {
            msg: "DataRow",
            field,
        })
    }
}

// ---- encoders ----

/// 'R' any authentication message. `Other(code)` is written with an empty
/// body.
pub fn authentication(out: &mut BytesMut, auth: &Authentication<'_>) -> Result<(), CodecError> {
    wire::encode(out, Some(b'R'), "Authentication", |w| {
        match auth {
            Authentication::Ok => w.i32(0),
            Authentication::KerberosV5 => w.i32(2),
            Authentication::CleartextPassword => w.i32(3),
            Authentication::Md5Password { salt } => {
                w.i32(5);
                w.bytes(salt);
            }
            Authentication::Gss => w.i32(7),
            Authentication::GssContinue(d) => {
                w.i32(8);
                w.bytes(d);
            }
            Authentication::Sspi => w.i32(9),
            Authentication::Sasl { mechanisms } => {
                w.i32(10);
                for m in mechanisms {
                    if m.is_empty() {
                        return Err(w.fail("mechanism", "empty name ends the list"));
                    }
                    w.cstr(m, "mechanism")?;
                }
                w.u8(0);
            }
            Authentication::SaslContinue(d) => {
                w.i32(11);
                w.bytes(d);
            }
            Authentication::SaslFinal(d) => {
                w.i32(12);
                w.bytes(d);
            }
            Authentication::Other(code) => w.i32(*code),
        }
        Ok(())
    })
}

/// 'R' AuthenticationOk: `R 00 00 00 08 00 00 00 00`.
pub fn authentication_ok(out: &mut BytesMut) {
    out.extend_from_slice(b"R\0\0\0\x08\0\0\0\0");
}

/// 'K' BackendKeyData with a key of any length (4 bytes for protocol 3.0
/// clients, up to 256 for 3.2).
pub fn backend_key_data(
    out: &mut BytesMut,
    process_id: i32,
    secret_key: &[u8],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'K'), "BackendKeyData", |w| {
        w.i32(process_id);
        w.bytes(secret_key);
        Ok(())
    })
}

/// 'S' ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'S'), "ParameterStatus", |w| {
        w.cstr(name, "parameter name")?;
        w.cstr(value, "parameter value")
    })
}

/// 'Z' ReadyForQuery (`status` b'I', b'T' or b'E').
pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
}

/// 'T' RowDescription.
pub fn row_description(
    out: &mut BytesMut,
    fields: &[FieldDescription<'_>],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'T'), "RowDescription", |w| {
        w.count16(fields.len(), "field count")?;
        for f in fields {
            w.cstr(f.name, "field name")?;
            w.u32(f.table_oid);
            w.i16(f.column_attr);
            w.u32(f.type_oid);
            w.i16(f.type_size);
            w.i32(f.type_modifier);
            w.i16(f.format);
        }
        Ok(())
    })
}

/// 'D' DataRow from any exact-size iterator of values (`None` is NULL),
/// e.g. a [`DataRowValues`] mapped through masking.
pub fn encode_data_row<'v>(
    out: &mut BytesMut,
    values: impl ExactSizeIterator<Item = Option<&'v [u8]>>,
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'D'), "DataRow", |w| {
        let expected = values.len();
        w.count16(expected, "column count")?;
        let mut count = 0usize;
        for v in values {
            w.value(v, "column value")?;
            count += 1;
        }
        if count != expected {
            return Err(w.fail("column count", "iterator length was not exact"));
        }
        Ok(())
    })
}

/// 'C' CommandComplete (e.g. `SELECT 3`, `INSERT 0 1`).
pub fn command_complete(out: &mut BytesMut, tag: &str) -> Result<(), CodecError> {
    wire::encode(out, Some(b'C'), "CommandComplete", |w| {
        w.cstr(tag, "command tag")
    })
}

fn fields_message(
    out: &mut BytesMut,
    tag: u8,
    msg: &'static str,
    fields: &[(u8, &str)],
) -> Result<(), CodecError> {
    wire::encode(out, Some(tag), msg, |w| {
        for &(code, value) in fields {
            if code == 0 {
                return Err(w.fail("field type", "zero ends the list"));
            }
            w.u8(code);
            w.cstr(value, "field value")?;
        }
        w.u8(0);
        Ok(())
    })
}

/// 'E' ErrorResponse with these fields, in this order.
pub fn error_fields(out: &mut BytesMut, fields: &Fields<'_>) -> Result<(), CodecError> {
    fields_message(out, b'E', "ErrorResponse", &fields.0)
}

/// 'N' NoticeResponse with these fields, in this order.
pub fn notice_fields(out: &mut BytesMut, fields: &Fields<'_>) -> Result<(), CodecError> {
    fields_message(out, b'N', "NoticeResponse", &fields.0)
}

fn standard_fields<'s>(
    severity: &'s str,
    sqlstate: &'s str,
    message: &'s str,
    detail: Option<&'s str>,
    hint: Option<&'s str>,
) -> Vec<(u8, &'s str)> {
    let mut f = vec![
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', message),
    ];
    f.extend(detail.map(|d| (b'D', d)));
    f.extend(hint.map(|h| (b'H', h)));
    f
}

/// 'E' ErrorResponse written by the proxy itself: S and V (`severity`,
/// e.g. "ERROR" or "FATAL", not localised), C (`sqlstate`), M, and D / H
/// when given.
pub fn error_response(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Result<(), CodecError> {
    let f = standard_fields(severity, sqlstate, message, detail, hint);
    fields_message(out, b'E', "ErrorResponse", &f)
}

/// 'E' ErrorResponse as the server writes a syntax error: S, V, C
/// (`sqlstate`), M and P (1-based character position in the query text)
/// when known.
pub fn error_response_at(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    position: Option<u32>,
) -> Result<(), CodecError> {
    let position = position.map(|p| p.to_string());
    let mut f = standard_fields(severity, sqlstate, message, None, None);
    f.extend(position.as_deref().map(|p| (b'P', p)));
    fields_message(out, b'E', "ErrorResponse", &f)
}

/// 'N' NoticeResponse written by the proxy itself (severity e.g. "NOTICE",
/// "WARNING"); fields as [`error_response`].
pub fn notice_response(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Result<(), CodecError> {
    let f = standard_fields(severity, sqlstate, message, detail, hint);
    fields_message(out, b'N', "NoticeResponse", &f)
}

/// 'A' NotificationResponse.
pub fn notification_response(
    out: &mut BytesMut,
    process_id: i32,
    channel: &str,
    payload: &str,
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'A'), "NotificationResponse", |w| {
        w.i32(process_id);
        w.cstr(channel, "channel")?;
        w.cstr(payload, "payload")
    })
}

fn copy_response(out: &mut BytesMut, tag: u8, format: &CopyFormat) -> Result<(), CodecError> {
    let msg = name_of(tag).unwrap_or("CopyResponse");
    wire::encode(out, Some(tag), msg, |w| {
        w.u8(format.overall);
        w.count16(format.columns.len(), "column count")?;
        for &c in &format.columns {
            w.i16(c);
        }
        Ok(())
    })
}

/// 'G' CopyInResponse.
pub fn copy_in_response(out: &mut BytesMut, format: &CopyFormat) -> Result<(), CodecError> {
    copy_response(out, b'G', format)
}

/// 'H' CopyOutResponse.
pub fn copy_out_response(out: &mut BytesMut, format: &CopyFormat) -> Result<(), CodecError> {
    copy_response(out, b'H', format)
}

/// 'W' CopyBothResponse.
pub fn copy_both_response(out: &mut BytesMut, format: &CopyFormat) -> Result<(), CodecError> {
    copy_response(out, b'W', format)
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

/// 'I' EmptyQueryResponse.
pub fn empty_query_response(out: &mut BytesMut) {
    wire::encode_empty(out, b'I');
}

/// '1' ParseComplete.
pub fn parse_complete(out: &mut BytesMut) {
    wire::encode_empty(out, b'1');
}

/// '2' BindComplete.
pub fn bind_complete(out: &mut BytesMut) {
    wire::encode_empty(out, b'2');
}

/// '3' CloseComplete.
pub fn close_complete(out: &mut BytesMut) {
    wire::encode_empty(out, b'3');
}

/// 'n' NoData.
pub fn no_data(out: &mut BytesMut) {
    wire::encode_empty(out, b'n');
}

/// 's' PortalSuspended.
pub fn portal_suspended(out: &mut BytesMut) {
    wire::encode_empty(out, b's');
}

/// 't' ParameterDescription.
pub fn parameter_description(out: &mut BytesMut, types: &[u32]) -> Result<(), CodecError> {
    wire::encode(out, Some(b't'), "ParameterDescription", |w| {
        w.count16(types.len(), "parameter count")?;
        for &t in types {
            w.u32(t);
        }
        Ok(())
    })
}

/// 'V' FunctionCallResponse.
pub fn function_call_response(out: &mut BytesMut, value: Option<&[u8]>) -> Result<(), CodecError> {
    wire::encode(out, Some(b'V'), "FunctionCallResponse", |w| {
        w.value(value, "result value")
    })
}

/// 'v' NegotiateProtocolVersion.
pub fn negotiate_protocol_version(
    out: &mut BytesMut,
    newest_minor: i32,
    unrecognised: &[&str],
) -> Result<(), CodecError> {
    wire::encode(out, Some(b'v'), "NegotiateProtocolVersion", |w| {
        w.i32(newest_minor);
        w.count32(unrecognised.len(), "option count")?;
        for o in unrecognised {
            w.cstr(o, "option name")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::frame::{DEFAULT_MAX_MESSAGE, decode_frame};

    fn framed(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        let mut b = BytesMut::from(&v[..]);
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        assert!(b.is_empty());
        f
    }

    fn all_messages() -> Vec<BackendMessage<'static>> {
        use Authentication as A;
        let copy = || CopyFormat {
            overall: 1,
            columns: vec![1, 1, 1],
        };
        vec![
            BackendMessage::Authentication(A::Ok),
            BackendMessage::Authentication(A::KerberosV5),
            BackendMessage::Authentication(A::CleartextPassword),
            BackendMessage::Authentication(A::Md5Password {
                salt: [1, 0, 0xff, 7],
            }),
            BackendMessage::Authentication(A::Gss),
            BackendMessage::Authentication(A::GssContinue(b"tok\0en")),
            BackendMessage::Authentication(A::Sspi),
            BackendMessage::Authentication(A::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
            }),
            BackendMessage::Authentication(A::SaslContinue(b"r=abc,s=salt,i=4096")),
            BackendMessage::Authentication(A::SaslFinal(b"v=sig")),
            BackendMessage::Authentication(A::Other(99)),
            BackendMessage::BackendKeyData {
                process_id: 4242,
                secret_key: b"\xde\xad\xbe\xef",
            },
            BackendMessage::BackendKeyData {
                process_id: -1,
                secret_key: &[0x5a; 32],
            },
            BackendMessage::ParameterStatus {
                name: "client_encoding",
                value: "UTF8",
            },
            BackendMessage::ReadyForQuery { status: b'I' },
            BackendMessage::ReadyForQuery { status: b'E' },
            BackendMessage::RowDescription {
                fields: vec![
                    FieldDescription {
                        name: "id",
                        table_oid: 16384,
                        column_attr: 1,
                        type_oid: 23,
                        type_size: 4,
                        type_modifier: -1,
                        format: 0,
                    },
                    FieldDescription {
                        name: "",
                        table_oid: 0,
                        column_attr: 0,
                        type_oid: 25,
                        type_size: -1,
                        type_modifier: -1,
                        format: 1,
                    },
                ],
            },
            BackendMessage::RowDescription { fields: vec![] },
            BackendMessage::DataRow {
                values: vec![Some(b"42"), None, Some(b""), Some(b"\0\xff")],
            },
            BackendMessage::DataRow { values: vec![] },
            BackendMessage::CommandComplete { tag: "SELECT 4" },
            BackendMessage::ErrorResponse(Fields(vec![
                (b'S', "ERROR"),
                (b'C', "42P01"),
                (b'M', "relation \"t\" does not exist"),
            ])),
            BackendMessage::NoticeResponse(Fields(vec![])),
            BackendMessage::NotificationResponse {
                process_id: 7,
                channel: "jobs",
                payload: "{\"id\": 1}",
            },
            BackendMessage::CopyInResponse(CopyFormat {
                overall: 0,
                columns: vec![0, 0],
            }),
            BackendMessage::CopyOutResponse(copy()),
            BackendMessage::CopyBothResponse(CopyFormat {
                overall: 0,
                columns: vec![],
            }),
            BackendMessage::CopyData(b"1\t2\n"),
            BackendMessage::CopyDone,
            BackendMessage::EmptyQueryResponse,
            BackendMessage::ParseComplete,
            BackendMessage::BindComplete,
            BackendMessage::CloseComplete,
            BackendMessage::NoData,
            BackendMessage::ParameterDescription {
                types: vec![23, 25, 0],
            },
            BackendMessage::PortalSuspended,
            BackendMessage::FunctionCallResponse { value: Some(b"x") },
            BackendMessage::FunctionCallResponse { value: None },
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognised: vec!["_pq_.foo", "_pq_.bar"],
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = all_messages();
        let mut out = BytesMut::new();
        for m in &msgs {
            m.encode(&mut out).unwrap();
        }
        let mut tags = std::collections::HashSet::new();
        for m in &msgs {
            let f = decode_frame(&mut out, DEFAULT_MAX_MESSAGE)
                .unwrap()
                .unwrap();
            assert_eq!(f.tag, m.tag(), "{}", m.name());
            assert_eq!(&BackendMessage::parse(&f).unwrap(), m);
            tags.insert(f.tag);
        }
        assert!(out.is_empty());
        // Every backend tag is covered.
        let all: Vec<u8> = (0..=255u8).filter(|&t| name_of(t).is_some()).collect();
        assert_eq!(tags.len(), all.len());
    }

    #[test]
    fn stream_fed_byte_by_byte() {
        let msgs = all_messages();
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &byte in wire.iter() {
            buf.extend_from_slice(&[byte]);
            while let Some(f) = decode_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap() {
                frames.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), msgs.len());
        for (f, m) in frames.iter().zip(&msgs) {
            assert_eq!(&BackendMessage::parse(f).unwrap(), m);
        }
    }

    #[test]
    fn free_encoders_match_enum_encoding() {
        let mut a = BytesMut::new();
        let mut b = BytesMut::new();
        authentication_ok(&mut a);
        BackendMessage::Authentication(Authentication::Ok)
            .encode(&mut b)
            .unwrap();
        ready_for_query(&mut a, b'T');
        BackendMessage::ReadyForQuery { status: b'T' }
            .encode(&mut b)
            .unwrap();
        for (f, m) in [
            (
                empty_query_response as fn(&mut BytesMut),
                BackendMessage::EmptyQueryResponse,
            ),
            (parse_complete, BackendMessage::ParseComplete),
            (bind_complete, BackendMessage::BindComplete),
            (close_complete, BackendMessage::CloseComplete),
            (no_data, BackendMessage::NoData),
            (portal_suspended, BackendMessage::PortalSuspended),
            (copy_done, BackendMessage::CopyDone),
        ] {
            f(&mut a);
            m.encode(&mut b).unwrap();
        }
        let c = CopyFormat {
            overall: 0,
            columns: vec![0],
        };
        copy_in_response(&mut a, &c).unwrap();
        copy_out_response(&mut a, &c).unwrap();
        copy_both_response(&mut a, &c).unwrap();
        BackendMessage::CopyInResponse(c.clone())
            .encode(&mut b)
            .unwrap();
        BackendMessage::CopyOutResponse(c.clone())
            .encode(&mut b)
            .unwrap();
        BackendMessage::CopyBothResponse(c).encode(&mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn fixture_error_response() {
        // An ErrorResponse as a server sends it for a missing table.
        let wire: &[u8] = b"E\0\0\0\x37SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0\0";
        // Check the hand-written length: tag not counted.
        assert_eq!(wire.len(), 1 + 0x37);
        let mut b = BytesMut::from(wire);
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
        let BackendMessage::ErrorResponse(fields) = BackendMessage::parse(&f).unwrap() else {
            panic!("not an ErrorResponse");
        };
        assert_eq!(fields.get(b'C'), Some("42P01"));
        assert_eq!(fields.get(b'S'), Some("ERROR"));
        assert_eq!(fields.get(b'M'), Some("relation \"t\" does not exist"));
        assert_eq!(fields.get(b'D'), None);
        let mut out = BytesMut::new();
        error_response(
            &mut out,
            "ERROR",
            "42P01",
            "relation \"t\" does not exist",
            None,
            None,
        )
        .unwrap();
        assert_eq!(&out[..], wire);
    }

    #[test]
    fn error_and_notice_response_fields() {
        let mut out = BytesMut::new();
        error_response(&mut out, "FATAL", "28000", "denied", Some("d"), Some("h")).unwrap();
        notice_response(&mut out, "WARNING", "01000", "careful", None, Some("h")).unwrap();
        let f = decode_frame(&mut out, 1000).unwrap().unwrap();
        assert_eq!(
            BackendMessage::parse(&f).unwrap(),
            BackendMessage::ErrorResponse(Fields(vec![
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28000"),
                (b'M', "denied"),
                (b'D', "d"),
                (b'H', "h"),
            ]))
        );
        let f = decode_frame(&mut out, 1000).unwrap().unwrap();
        let BackendMessage::NoticeResponse(n) = BackendMessage::parse(&f).unwrap() else {
            panic!("not a notice");
        };
        assert_eq!(n.get(b'V'), Some("WARNING"));
        assert_eq!(n.get(b'D'), None);
        assert!(matches!(
            error_response(&mut out, "ERROR", "XX000", "a\0b", None, None),
            Err(CodecError::Unencodable { .. })
        ));
        assert!(matches!(
            error_fields(&mut out, &Fields(vec![(0, "x")])),
            Err(CodecError::Unencodable { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn data_row_scanner_walks_a_row_fed_in_any_pieces() {
        // 3 columns: "hello", NULL, "".
        let body: &[u8] = b"\0\x03\0\0\0\x05hello\xff\xff\xff\xff\0\0\0\0";
        for piece in 1..=body.len() {
            let mut s = DataRowScanner::new(body.len(), 3);
            for chunk in body.chunks(piece) {
                s.feed(chunk).unwrap();
            }
            assert_eq!(
                s.finish().unwrap(),
                vec![Some(b"hel".to_vec()), None, Some(Vec::new())],
                "pieces of {piece}"
            );
        }
        // Cut short, too long, a bad length, a value past the end.
        let mut s = DataRowScanner::new(body.len(), 0);
        s.feed(&body[..body.len() - 1]).unwrap();
        assert!(matches!(s.finish(), Err(CodecError::Truncated { .. })));
        let mut s = DataRowScanner::new(body.len() + 1, 0);
        s.feed(body).unwrap();
        assert!(matches!(
            s.feed(b"x"),
            Err(CodecError::TrailingBytes { .. })
        ));
        let mut s = DataRowScanner::new(6, 0);
        assert!(matches!(
            s.feed(b"\0\x01\xff\xff\xff\xfe"),
            Err(CodecError::InvalidValueLength { len: -2, .. })
        ));
        let mut s = DataRowScanner::new(8, 0);
        assert!(matches!(
            s.feed(b"\0\x01\0\0\0\x09ab"),
            Err(CodecError::Truncated { .. })
        ));
        // What is kept is bounded whatever the row holds.
        let big = vec![b'x'; 3 * DataRowScanner::KEPT_MAX];
        let mut row = vec![0, 3];
        for _ in 0..3 {
            row.extend_from_slice(&(big.len() as i32).to_be_bytes());
            row.extend_from_slice(&big);
        }
        let mut s = DataRowScanner::new(row.len(), usize::MAX);
        for chunk in row.chunks(1000) {
            s.feed(chunk).unwrap();
        }
        let kept: usize = s.finish().unwrap().iter().flatten().map(Vec::len).sum();
        assert_eq!(kept, DataRowScanner::KEPT_MAX);
    }

    #[test]
    fn fixture_data_row_and_values_iterator() {
        // 3 columns: "1", NULL, "" .
        let wire: &[u8] = b"D\0\0\0\x13\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0";
        let mut b = BytesMut::from(wire);
        let f = decode_frame(&mut b, 100).unwrap().unwrap();
        let values = DataRowValues::from_frame(&f).unwrap();
        assert_eq!(values.len(), 3);
        let got: Vec<_> = values.clone().collect();
        assert_eq!(got, vec![Some(&b"1"[..]), None, Some(&b""[..])]);
        // Masking path: map values, re-encode.
        let mut out = BytesMut::new();
        encode_data_row(&mut out, values.map(|v| v.map(|_| &b"***"[..]))).unwrap();
        let f2 = decode_frame(&mut out, 100).unwrap().unwrap();
        assert_eq!(
            BackendMessage::parse(&f2).unwrap(),
            BackendMessage::DataRow {
                values: vec![Some(b"***"), None, Some(b"***")]
            }
        );
        // Unchanged values re-encode byte for byte.
        encode_data_row(&mut out, DataRowValues::from_frame(&f).unwrap()).unwrap();
        assert_eq!(&out[..], wire);
        assert_eq!(DataRowValues::from_frame(&f2).map(|v| v.len()), Ok(3),);
        let not_d = framed(b'C', b"SELECT 1\0");
        assert_eq!(
            DataRowValues::from_frame(&not_d).err(),
            Some(CodecError::WrongTag {
                expected: b'D',
                got: b'C'
            })
        );
    }

    /// An iterator whose `len()` lies.
    struct Liar(usize);
    impl Iterator for Liar {
        type Item = Option<&'static [u8]>;
        fn next(&mut self) -> Option<Self::Item> {
            (self.0 > 0).then(|| {
                self.0 -= 1;
                None
            })
        }
    }
    impl ExactSizeIterator for Liar {
        fn len(&self) -> usize {
            self.0 + 1
        }
    }

    #[test]
    fn data_row_encoder_rejects_bad_counts() {
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            encode_data_row(&mut out, Liar(2)),
            Err(CodecError::Unencodable { msg: "DataRow", .. })
        ));
        assert!(matches!(
            encode_data_row(&mut out, std::iter::repeat_n(None, 65_536)),
            Err(CodecError::Unencodable { msg: "DataRow", .. })
        ));
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn malformed() {
        let cases: Vec<(Frame, CodecError)> = vec![
            (
                framed(b'x', b""),
                CodecError::UnknownTag {
                    direction: Direction::Backend,
                    tag: b'x',
                },
            ),
            (
                framed(b'R', b"\0\0"),
                CodecError::Truncated {
                    msg: "Authentication",
                    field: "authentication code",
                },
            ),
            (
                framed(b'R', b"\0\0\0\0\0"),
                CodecError::TrailingBytes {
                    msg: "Authentication",
                    extra: 1,
                },
            ),
            (
                framed(b'R', b"\0\0\0\x05ab"),
                CodecError::Truncated {
                    msg: "Authentication",
                    field: "salt",
                },
            ),
            (
                framed(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0"),
                CodecError::MissingNul {
                    msg: "Authentication",
                    field: "mechanism",
                },
            ),
            (
                framed(b'K', b"\0\0\0\x01abc"),
                CodecError::InvalidKeyLength {
                    msg: "BackendKeyData",
                    len: 3,
                },
            ),
            (
                framed(b'Z', b"Q"),
                CodecError::InvalidValue {
                    msg: "ReadyForQuery",
                    field: "transaction status",
                    value: i64::from(b'Q'),
                },
            ),
            (
                framed(b'Z', b""),
                CodecError::Truncated {
                    msg: "ReadyForQuery",
                    field: "transaction status",
                },
            ),
            // DataRow: value length -2.
            (
                framed(b'D', b"\0\x01\xff\xff\xff\xfe"),
                CodecError::InvalidValueLength {
                    msg: "DataRow",
                    len: -2,
                },
            ),
            // DataRow: value longer than the message.
            (
                framed(b'D', b"\0\x01\0\0\0\x09abc"),
                CodecError::Truncated {
                    msg: "DataRow",
                    field: "column value",
                },
            ),
            // DataRow: 65535 columns claimed, none present.
            (
                framed(b'D', b"\xff\xff"),
                CodecError::Truncated {
                    msg: "DataRow",
                    field: "column value",
                },
            ),
            (
                framed(b'D', b"\0\x01\xff\xff\xff\xffZ"),
                CodecError::TrailingBytes {
                    msg: "DataRow",
                    extra: 1,
                },
            ),
            (
                framed(b'T', b"\0\x01id\0\0\0"),
                CodecError::Truncated {
                    msg: "RowDescription",
                    field: "table oid",
                },
            ),
            (
                framed(b'C', b"SELECT \xff\0"),
                CodecError::InvalidUtf8 {
                    msg: "CommandComplete",
                    field: "command tag",
                },
            ),
            (
                framed(b'E', b"SERROR\0"),
                CodecError::Truncated {
                    msg: "ErrorResponse",
                    field: "field type",
                },
            ),
            (
                framed(b'N', b"SWARN"),
                CodecError::MissingNul {
                    msg: "NoticeResponse",
                    field: "field value",
                },
            ),
            (
                framed(b'G', b"\x02\0\0"),
                CodecError::InvalidValue {
                    msg: "CopyInResponse",
                    field: "overall format",
                    value: 2,
                },
            ),
            (
                framed(b'v', b"\0\0\0\0\xff\xff\xff\xff"),
                CodecError::NegativeCount {
                    msg: "NegotiateProtocolVersion",
                    field: "option count",
                    count: -1,
                },
            ),
            // Huge count, no bytes: error, no huge allocation.
            (
                framed(b'v', b"\0\0\0\0\x7f\xff\xff\xff"),
                CodecError::MissingNul {
                    msg: "NegotiateProtocolVersion",
                    field: "option name",
                },
            ),
            (
                framed(b'V', b"\xff\xff\xff\xf0"),
                CodecError::InvalidValueLength {
                    msg: "FunctionCallResponse",
                    len: -16,
                },
            ),
            (
                framed(b'I', b"\0"),
                CodecError::TrailingBytes {
                    msg: "EmptyQueryResponse",
                    extra: 1,
                },
            ),
        ];
        for (f, want) in cases {
            assert_eq!(BackendMessage::parse(&f), Err(want.clone()));
            if f.tag == b'D' {
                assert_eq!(DataRowValues::from_frame(&f).err(), Some(want));
            }
        }
    }
}
