//! MySQL payloads after the handshake: commands from the client, the
//! server's OK / ERR / EOF packets, result-set headers and text rows, and
//! the length-encoded integers and strings they are made of.

use bytes::{BufMut, BytesMut};

/// Why a payload is not what its place in the conversation requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("empty packet")]
    Empty,
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("{what}: column type {code:#04x} has no binary value form")]
    UnsupportedType { what: &'static str, code: u8 },
}

/// `CLIENT_*` capability bits Warden relies on by number.
pub mod caps {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    pub const QUERY_ATTRIBUTES: u32 = 1 << 27;

    /// What Warden lets a session negotiate: everything else (compression,
    /// TLS, local files, query attributes, session tracking, IGNORE_SPACE
    /// which changes how names are read) is never offered, so neither side
    /// can turn it on. Multi-statements are offered: every statement of a
    /// text is decided, and the text refused whole when one is.
    pub const SUPPORTED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | PROTOCOL_41
        | INTERACTIVE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | PLUGIN_AUTH_LENENC_DATA
        | DEPRECATE_EOF;
}

/// `SERVER_MORE_RESULTS_EXISTS` in OK/EOF status flags.
pub const MORE_RESULTS: u16 = 0x0008;

/// Command bytes (`COM_*`).
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Error codes Warden speaks.
pub mod code {
    /// `ER_DBACCESS_DENIED_ERROR`.
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// `ER_UNKNOWN_COM_ERROR`.
    pub const UNKNOWN_COM: u16 = 1047;
    /// `ER_NET_PACKETS_OUT_OF_ORDER`.
    pub const PACKETS_OUT_OF_ORDER: u16 = 1156;
    /// `ER_NET_PACKET_TOO_LARGE`.
    pub const PACKET_TOO_LARGE: u16 = 1153;
    /// `ER_TABLEACCESS_DENIED_ERROR`: Warden's policy refusals.
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    /// `ER_HANDSHAKE_ERROR`.
    pub const HANDSHAKE: u16 = 1043;
    /// `ER_ACCESS_DENIED_ERROR`.
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_KILL_DENIED_ERROR`.
    pub const KILL_DENIED: u16 = 1095;
    /// `ER_UNKNOWN_STMT_HANDLER`.
    pub const UNKNOWN_STMT_HANDLER: u16 = 1243;
}

/// An ERR packet payload.
pub fn err_packet(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + message.len());
    v.push(0xff);
    v.extend_from_slice(&code.to_le_bytes());
    v.push(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in state.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    v.extend_from_slice(&state);
    v.extend_from_slice(message.as_bytes());
    v
}

/// An OK packet payload (`header` 0x00, or 0xfe when it ends a result set
/// under `CLIENT_DEPRECATE_EOF`).
pub fn ok_packet(header: u8, affected: u64, status: u16) -> Vec<u8> {
    let mut v = BytesMut::with_capacity(16);
    v.put_u8(header);
    put_lenenc_int(&mut v, affected);
    put_lenenc_int(&mut v, 0);
    v.put_u16_le(status);
    v.put_u16_le(0);
    v.to_vec()
}

/// What a server's first packet after a command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok(OkInfo),
    Err(ErrInfo),
    /// `LOAD DATA LOCAL INFILE`: the server asks for a file of the client.
    LocalInfile,
    /// A result set of this many columns follows.
    ResultSet(u64),
}

/// The parts of an OK (or EOF) packet Warden reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkInfo {
    pub affected: u64,
    pub status: u16,
}

/// An ERR packet's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
}

/// Classifies the first packet of a command's response.
pub fn response(p: &[u8]) -> Result<Response, MessageError> {
    match p.first() {
        None => Err(MessageError::Empty),
        Some(0x00) => Ok(Response::Ok(parse_ok(p)?)),
        Some(0xff) => Ok(Response::Err(parse_err(p)?)),
        Some(0xfb) => Ok(Response::LocalInfile),
        Some(_) => {
            let mut r = p;
            let n = lenenc_int(&mut r).ok_or(MessageError::Truncated {
                what: "column count",
            })?;
            Ok(Response::ResultSet(n))
        }
    }
}

/// Reads an OK packet (header 0x00 or 0xfe).
pub fn parse_ok(p: &[u8]) -> Result<OkInfo, MessageError> {
    let t = MessageError::Truncated { what: "OK packet" };
    let mut r = p.get(1..).ok_or(t.clone())?;
    let affected = lenenc_int(&mut r).ok_or(t.clone())?;
    let _last_id = lenenc_int(&mut r).ok_or(t.clone())?;
    let status = r.get(..2).ok_or(t)?;
    Ok(OkInfo {
        affected,
        status: u16::from_le_bytes([status[0], status[1]]),
    })
}

/// Reads an ERR packet (protocol 4.1: `#` and a SQLSTATE).
pub fn parse_err(p: &[u8]) -> Result<ErrInfo, MessageError> {
    let t = MessageError::Truncated { what: "ERR packet" };
    let c = p.get(1..3).ok_or(t)?;
    let code = u16::from_le_bytes([c[0], c[1]]);
    let rest = &p[3..];
    let (sqlstate, message) = match rest.split_first() {
        Some((b'#', r)) if r.len() >= 5 => (String::from_utf8_lossy(&r[..5]).into_owned(), &r[5..]),
        _ => ("HY000".to_owned(), rest),
    };
    Ok(ErrInfo {
        code,
        sqlstate,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

/// True for the packet that ends column definitions or rows: an EOF
/// packet, or an OK packet with header 0xfe under `CLIENT_DEPRECATE_EOF`
/// (a row can start with 0xfe only as an 8-byte length, so it is longer).
pub fn is_eof(p: &[u8], deprecate_eof: bool) -> bool {
    p.first() == Some(&0xfe)
        && if deprecate_eof {
            p.len() < MAX_EOF_OK
        } else {
            p.len() < 9
        }
}

/// An OK packet ending a result set is shorter than this.
const MAX_EOF_OK: usize = 0xFF_FFFF;

/// Status flags of an EOF packet or of an OK packet that ends rows.
pub fn eof_status(p: &[u8], deprecate_eof: bool) -> u16 {
    if deprecate_eof {
        parse_ok(p).map(|o| o.status).unwrap_or(0)
    } else {
        p.get(3..5)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .unwrap_or(0)
    }
}

/// A length-encoded integer off the front of `r`.
pub fn lenenc_int(r: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = r.split_first()?;
    let (n, used) = match first {
        0..=0xfa => (u64::from(first), 0),
        0xfc => (
            u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        0xfd => {
            let b = rest.get(..3)?;
            (
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                3,
            )
        }
        0xfe => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 8),
        // 0xfb is NULL in rows; 0xff is not an integer.
        _ => return None,
    };
    *r = &rest[used..];
    Some(n)
}

pub fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    match n {
        0..=0xfa => out.put_u8(n as u8),
        0xfb..=0xffff => {
            out.put_u8(0xfc);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xff_ffff => {
            out.put_u8(0xfd);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xfe);
            out.put_u64_le(n);
        }
    }
}

/// The values of one text-protocol row (`None` = SQL NULL), exactly
/// `columns` of them, nothing left over.
pub fn text_row(p: &[u8], columns: usize) -> Result<Vec<Option<&[u8]>>, MessageError> {
    let t = MessageError::Truncated { what: "text row" };
    let mut r = p;
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        if r.first() == Some(&0xfb) {
            r = &r[1..];
            out.push(None);
            continue;
        }
        let n = usize::try_from(lenenc_int(&mut r).ok_or(t.clone())?).map_err(|_| t.clone())?;
        let v = r.get(..n).ok_or(t.clone())?;
        r = &r[n..];
        out.push(Some(v));
    }
    if !r.is_empty() {
        return Err(t);
    }
    Ok(out)
}

/// A text-protocol row from its values.
pub fn encode_text_row<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for v in values {
        match v {
            None => out.put_u8(0xfb),
            Some(v) => {
                put_lenenc_int(&mut out, v.len() as u64);
                out.put_slice(v);
            }
        }
    }
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packets_round_trip() {
        let p = err_packet(1142, "42000", "refused by rule no-secrets");
        let e = parse_err(&p).unwrap();
        assert_eq!(e.code, 1142);
        assert_eq!(e.sqlstate, "42000");
        assert_eq!(e.message, "refused by rule no-secrets");
        assert_eq!(response(&p).unwrap(), Response::Err(e));
        assert!(parse_err(&[0xff, 1]).is_err());
    }

    #[test]
    fn ok_packets_and_column_counts_are_told_apart() {
        assert_eq!(
            response(&ok_packet(0, 300, 2)).unwrap(),
            Response::Ok(OkInfo {
                affected: 300,
                status: 2
            })
        );
        assert_eq!(response(&[3]).unwrap(), Response::ResultSet(3));
        assert_eq!(response(&[0xfb]).unwrap(), Response::LocalInfile);
        assert_eq!(response(&[]), Err(MessageError::Empty));
        assert!(response(&[0xfc, 1]).is_err());
        assert!(parse_ok(&[0]).is_err());
    }

    #[test]
    fn lenenc_integers_of_every_width_round_trip() {
        for n in [
            0u64,
            250,
            251,
            65535,
            65536,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc_int(&mut b, n);
            let mut r = &b[..];
            assert_eq!(lenenc_int(&mut r), Some(n));
            assert!(r.is_empty());
        }
        assert_eq!(lenenc_int(&mut &[0xfe, 1, 2][..]), None);
        assert_eq!(lenenc_int(&mut &[0xff][..]), None);
    }

    #[test]
    fn text_rows_round_trip_and_malformed_rows_are_errors() {
        let row = encode_text_row([Some(&b"alice"[..]), None, Some(&b""[..])]);
        let v = text_row(&row, 3).unwrap();
        assert_eq!(v, vec![Some(&b"alice"[..]), None, Some(&b""[..])]);
        assert!(text_row(&row, 2).is_err(), "bytes left over");
        assert!(text_row(&row, 4).is_err(), "a column missing");
        assert!(text_row(&[5, b'a'], 1).is_err(), "value past the end");
        // A length in a longer form than needed (fuzz/regressions/
        // mysql_packet): read, and written back in the shortest form.
        let long = [0xfd, 1, 0, 0, b'x'];
        let v = text_row(&long, 1).unwrap();
        assert_eq!(v, vec![Some(&b"x"[..])]);
        assert_eq!(encode_text_row(v), vec![1, b'x']);
    }

    #[test]
    fn eof_is_recognised_with_and_without_deprecate_eof() {
        let eof = [0xfe, 0, 0, 0x08, 0];
        assert!(is_eof(&eof, false));
        assert_eq!(eof_status(&eof, false), MORE_RESULTS);
        let ok = ok_packet(0xfe, 0, 2);
        assert!(is_eof(&ok, true));
        assert_eq!(eof_status(&ok, true), 2);
        // A row whose first value is 2^24 bytes long starts with 0xfe.
        let mut row = vec![0xfe];
        row.extend_from_slice(&(1u64 << 24).to_le_bytes());
        assert!(!is_eof(&row, false));
    }
}
