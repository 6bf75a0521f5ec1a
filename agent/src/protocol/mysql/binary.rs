//! The prepared-statement (binary) protocol: `COM_STMT_*` command fields,
//! the `COM_STMT_PREPARE` OK packet, and binary result rows (a 0x00 header,
//! a NULL bitmap with an offset of 2, then each non-NULL value in its
//! column type's binary form). Values are read with `mysql_common`'s
//! binary value decoder; a row is rebuilt from the values' raw bytes so
//! what Warden does not change goes out byte for byte.

use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use mysql_common::proto::MySerialize;
use mysql_common::value::{BinValue, Value, ValueDeserializer};

use super::message::{MessageError, put_lenenc_int};

/// `SERVER_STATUS_CURSOR_EXISTS`: an execution opened a cursor, its rows
/// come with `COM_STMT_FETCH`.
pub const CURSOR_EXISTS: u16 = 0x0040;

/// The statement id `COM_STMT_*` commands carry after the command byte.
pub fn statement_id(p: &[u8]) -> Result<u32, MessageError> {
    p.get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(MessageError::Truncated {
            what: "statement id",
        })
}

/// The fields of a `COM_STMT_PREPARE` OK packet Warden reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

/// Reads a `COM_STMT_PREPARE` OK packet (12 bytes, header 0x00).
pub fn parse_prepare_ok(p: &[u8]) -> Result<PrepareOk, MessageError> {
    let b = p
        .get(..12)
        .filter(|b| b[0] == 0)
        .ok_or(MessageError::Truncated {
            what: "prepare OK packet",
        })?;
    Ok(PrepareOk {
        statement_id: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
        columns: u16::from_le_bytes([b[5], b[6]]),
        params: u16::from_le_bytes([b[7], b[8]]),
    })
}

/// True for column types whose binary value is a length-encoded string
/// (masked in place); the others are fixed-width numbers and temporals.
pub fn is_string_type(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_STRING
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_SET
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_BIT
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_JSON
    )
}

/// One value in its column type's binary form. The types are those
/// `mysql_common`'s binary decoder reads; any other type code a peer
/// names (`MYSQL_TYPE_TIMESTAMP2`, `DATETIME2`, `TIME2` are server-internal
/// and never on the wire; others are unassigned) is refused here, since
/// the decoder panics on it.
fn bin_value(
    buf: &mut ParseBuf<'_>,
    ty: ColumnType,
    flags: ColumnFlags,
    what: &'static str,
) -> Result<Value, MessageError> {
    use ColumnType::*;
    let decodable = matches!(
        ty,
        MYSQL_TYPE_STRING
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_SET
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_BIT
            | MYSQL_TYPE_GEOMETRY
            | MYSQL_TYPE_VECTOR
            | MYSQL_TYPE_JSON
            | MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_YEAR
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_DATE
            | MYSQL_TYPE_NEWDATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_NULL
    );
    if !decodable {
        return Err(MessageError::UnsupportedType {
            what,
            code: ty as u8,
        });
    }
    let v: ValueDeserializer<BinValue> = buf
        .parse((ty, flags))
        .map_err(|_| MessageError::Truncated { what })?;
    Ok(v.0)
}

/// One value of a binary row: its bytes as sent and what they decode to
/// (`None` for SQL NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell<'a> {
    pub raw: &'a [u8],
    pub value: Option<Value>,
}

/// The values of one binary row, exactly one per column, nothing left
/// over. `columns`: each column's type and flags.
pub fn binary_row<'a>(
    p: &'a [u8],
    columns: &[(ColumnType, ColumnFlags)],
) -> Result<Vec<Cell<'a>>, MessageError> {
    let t = MessageError::Truncated { what: "binary row" };
    let bitmap_len = (columns.len() + 7 + 2) / 8;
    if p.first() != Some(&0) {
        return Err(t);
    }
    let bitmap = p.get(1..1 + bitmap_len).ok_or(t.clone())?;
    let mut rest = &p[1 + bitmap_len..];
    let mut out = Vec::with_capacity(columns.len());
    for (i, &(ty, flags)) in columns.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(Cell {
                raw: &[],
                value: None,
            });
            continue;
        }
        let mut buf = ParseBuf(rest);
        let v = bin_value(&mut buf, ty, flags, "binary row")?;
        let used = rest.len() - buf.0.len();
        out.push(Cell {
            raw: &rest[..used],
            value: Some(v),
        });
        rest = buf.0;
    }
    if !rest.is_empty() {
        return Err(t);
    }
    Ok(out)
}

/// One parameter of a `COM_STMT_EXECUTE`.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    /// Sent before with `COM_STMT_SEND_LONG_DATA` (not in the packet).
    LongData,
    /// The value in its text form ([`text_of`]).
    Value(Vec<u8>),
}

/// The parameters of a `COM_STMT_EXECUTE` of a statement with `n`
/// parameters: after the id, flags and iteration count, a NULL bitmap, the
/// new-types flag, the types (two bytes each: type, 0x80 for unsigned)
/// when set, else `known` (the types of the statement's previous
/// execution), then each value that is neither NULL nor in `long_data`.
/// Also returns the types used. Nothing may be left over.
#[allow(clippy::type_complexity)]
pub fn execute_params(
    p: &[u8],
    n: usize,
    known: &[(ColumnType, ColumnFlags)],
    long_data: &[bool],
) -> Result<(Vec<Param>, Vec<(ColumnType, ColumnFlags)>), MessageError> {
    let t = MessageError::Truncated {
        what: "COM_STMT_EXECUTE parameters",
    };
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let bitmap = p.get(10..10 + n.div_ceil(8)).ok_or(t.clone())?;
    let mut at = 10 + n.div_ceil(8);
    let bound = *p.get(at).ok_or(t.clone())?;
    at += 1;
    let types: Vec<(ColumnType, ColumnFlags)> = if bound == 1 {
        let raw = p.get(at..at + 2 * n).ok_or(t.clone())?;
        at += 2 * n;
        raw.chunks_exact(2)
            .map(|c| {
                let ty = ColumnType::try_from(c[0]).map_err(|_| t.clone())?;
                let flags = if c[1] & 0x80 != 0 {
                    ColumnFlags::UNSIGNED_FLAG
                } else {
                    ColumnFlags::empty()
                };
                Ok((ty, flags))
            })
            .collect::<Result<_, MessageError>>()?
    } else if known.len() == n {
        known.to_vec()
    } else {
        return Err(t);
    };
    let mut rest = p.get(at..).ok_or(t.clone())?;
    let mut out = Vec::with_capacity(n);
    for (i, &(ty, flags)) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push(Param::Null);
            continue;
        }
        if long_data.get(i).copied().unwrap_or(false) {
            out.push(Param::LongData);
            continue;
        }
        let mut buf = ParseBuf(rest);
        let v = bin_value(&mut buf, ty, flags, "COM_STMT_EXECUTE parameters")?;
        rest = buf.0;
        out.push(Param::Value(text_of(&v)));
    }
    if !rest.is_empty() {
        return Err(t);
    }
    Ok((out, types))
}

/// A binary row from each value's bytes as they go on the wire (`None` =
/// SQL NULL).
pub fn encode_binary_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let bitmap_len = (values.len() + 7 + 2) / 8;
    let mut out = Vec::with_capacity(
        1 + bitmap_len + values.iter().flatten().map(|v| v.len()).sum::<usize>(),
    );
    out.push(0);
    let at = out.len();
    out.resize(at + bitmap_len, 0);
    for (i, v) in values.iter().enumerate() {
        match v {
            None => {
                let bit = i + 2;
                out[at + bit / 8] |= 1 << (bit % 8);
            }
            Some(b) => out.extend_from_slice(b),
        }
    }
    out
}

/// A string value in its binary form (length-encoded).
pub fn lenenc_bytes(v: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::with_capacity(v.len() + 9);
    put_lenenc_int(&mut out, v.len() as u64);
    out.extend_from_slice(v);
    out.to_vec()
}

/// The definition of `col` as a string column (utf8mb4, no numeric
/// flags): what a masked number or date is shown as in binary rows.
pub fn as_string_column(col: &Column) -> Vec<u8> {
    let flags = col.flags()
        - (ColumnFlags::UNSIGNED_FLAG
            | ColumnFlags::ZEROFILL_FLAG
            | ColumnFlags::BINARY_FLAG
            | ColumnFlags::NUM_FLAG
            | ColumnFlags::TIMESTAMP_FLAG);
    let c = Column::new(ColumnType::MYSQL_TYPE_VAR_STRING)
        .with_schema(col.schema_ref())
        .with_table(col.table_ref())
        .with_org_table(col.org_table_ref())
        .with_name(col.name_ref())
        .with_org_name(col.org_name_ref())
        .with_flags(flags)
        .with_column_length(1024)
        // utf8mb4_general_ci
        .with_character_set(45)
        .with_decimals(0);
    let mut out = Vec::new();
    c.serialize(&mut out);
    out
}

/// A value as the text protocol would show it (what the masking detectors
/// read, and what a masked non-string column carries).
pub fn text_of(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.clone(),
        Value::NULL => Vec::new(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::UInt(u) => u.to_string().into_bytes(),
        Value::Float(f) => f.to_string().into_bytes(),
        Value::Double(d) => d.to_string().into_bytes(),
        Value::Date(y, m, d, 0, 0, 0, 0) => format!("{y:04}-{m:02}-{d:02}").into_bytes(),
        Value::Date(y, m, d, h, i, sec, 0) => {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{sec:02}").into_bytes()
        }
        Value::Date(y, m, d, h, i, sec, us) => {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{sec:02}.{us:06}").into_bytes()
        }
        // Hours in u64: a server may send any day count (mysql_common's
        // `as_sql` multiplies in u32 and overflows; found by fuzzing).
        Value::Time(neg, days, h, i, sec, us) => {
            let sign = if *neg { "-" } else { "" };
            let hours = u64::from(*days) * 24 + u64::from(*h);
            if *us == 0 {
                format!("{sign}{hours:03}:{i:02}:{sec:02}").into_bytes()
            } else {
                format!("{sign}{hours:03}:{i:02}:{sec:02}.{us:06}").into_bytes()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fuzz find (fuzz/regressions/mysql_packet/timestamp2-param): a
    /// COM_STMT_EXECUTE naming a type code the binary decoder does not
    /// read (`MYSQL_TYPE_TIMESTAMP2`, server-internal) made it panic; such
    /// a value is refused, in parameters and in rows alike.
    #[test]
    fn type_codes_without_a_binary_form_are_refused_not_decoded() {
        // id, flags, iteration count, NULL bitmap, new-types, one type.
        let mut p = vec![0u8; 10];
        p.push(0); // bitmap: not NULL
        p.push(1); // types follow
        p.extend([ColumnType::MYSQL_TYPE_TIMESTAMP2 as u8, 0]);
        p.extend([4, 0xe8, 0x07, 12, 7]);
        assert_eq!(
            execute_params(&p, 1, &[], &[false]),
            Err(MessageError::UnsupportedType {
                what: "COM_STMT_EXECUTE parameters",
                code: 0x11
            })
        );
        let row = encode_binary_row(&[Some(&[4u8, 0xe8, 0x07, 12, 7][..])]);
        for ty in [
            ColumnType::MYSQL_TYPE_TIMESTAMP2,
            ColumnType::MYSQL_TYPE_DATETIME2,
            ColumnType::MYSQL_TYPE_TIME2,
            ColumnType::MYSQL_TYPE_TYPED_ARRAY,
        ] {
            assert!(
                matches!(
                    binary_row(&row, &[(ty, ColumnFlags::empty())]),
                    Err(MessageError::UnsupportedType { .. })
                ),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn binary_rows_round_trip_with_nulls_numbers_and_strings() {
        let cols = [
            (ColumnType::MYSQL_TYPE_LONG, ColumnFlags::empty()),
            (ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::empty()),
            (ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::UNSIGNED_FLAG),
            (ColumnType::MYSQL_TYPE_DATE, ColumnFlags::empty()),
        ];
        let one = 7i32.to_le_bytes();
        let name = lenenc_bytes(b"alice@example.com");
        let date = [4u8, 0xe8, 0x07, 12, 7];
        let row = encode_binary_row(&[Some(&one[..]), Some(&name), None, Some(&date[..])]);
        let cells = binary_row(&row, &cols).unwrap();
        assert_eq!(cells[0].value, Some(Value::Int(7)));
        assert_eq!(
            cells[1].value,
            Some(Value::Bytes(b"alice@example.com".to_vec()))
        );
        assert_eq!(cells[2].value, None);
        assert_eq!(text_of(cells[3].value.as_ref().unwrap()), b"2024-12-07");
        let back: Vec<Option<&[u8]>> = cells
            .iter()
            .map(|c| c.value.as_ref().map(|_| c.raw))
            .collect();
        assert_eq!(encode_binary_row(&back), row);
        assert!(binary_row(&row[..row.len() - 1], &cols).is_err());
        assert!(binary_row(&row, &cols[..3]).is_err(), "bytes left over");
        assert!(binary_row(&[1, 0], &cols[..1]).is_err(), "wrong header");
    }

    #[test]
    fn garbage_binary_rows_are_errors_not_panics() {
        use ColumnType::*;
        let layouts: &[&[(ColumnType, ColumnFlags)]] = &[
            &[(MYSQL_TYPE_VAR_STRING, ColumnFlags::empty())],
            &[
                (MYSQL_TYPE_DATETIME, ColumnFlags::empty()),
                (MYSQL_TYPE_TIME, ColumnFlags::empty()),
                (MYSQL_TYPE_DOUBLE, ColumnFlags::empty()),
                (MYSQL_TYPE_TINY, ColumnFlags::UNSIGNED_FLAG),
                (MYSQL_TYPE_NEWDECIMAL, ColumnFlags::empty()),
                (MYSQL_TYPE_LONGLONG, ColumnFlags::empty()),
                (MYSQL_TYPE_DATE, ColumnFlags::empty()),
                (MYSQL_TYPE_FLOAT, ColumnFlags::empty()),
                (MYSQL_TYPE_YEAR, ColumnFlags::empty()),
            ],
        ];
        let mut x: u32 = 0x2545_f491;
        for len in 0..400usize {
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(first) = junk.first_mut() {
                *first = 0;
            }
            for layout in layouts {
                if let Ok(cells) = binary_row(&junk, layout) {
                    for v in cells.iter().filter_map(|c| c.value.as_ref()) {
                        let _ = text_of(v);
                    }
                }
            }
        }
    }

    #[test]
    fn times_of_any_day_count_are_rendered_without_overflow() {
        // fuzz/regressions/mysql_packet/time-day-overflow
        assert_eq!(
            text_of(&Value::Time(true, u32::MAX, 23, 59, 58, 7)),
            b"-103079215103:59:58.000007"
        );
        assert_eq!(text_of(&Value::Time(false, 1, 2, 3, 4, 0)), b"026:03:04");
        assert_eq!(
            text_of(&Value::Date(2024, 12, 7, 21, 30, 5, 0)),
            b"2024-12-07 21:30:05"
        );
    }

    #[test]
    fn prepare_ok_and_statement_ids_are_read_and_truncation_is_an_error() {
        let ok = [0, 5, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            parse_prepare_ok(&ok).unwrap(),
            PrepareOk {
                statement_id: 5,
                columns: 2,
                params: 1
            }
        );
        assert!(parse_prepare_ok(&ok[..11]).is_err());
        assert_eq!(statement_id(&[0x17, 9, 0, 0, 0, 1]).unwrap(), 9);
        assert!(statement_id(&[0x17, 9]).is_err());
    }

    #[test]
    fn execute_parameters_are_read_with_their_types_nulls_and_long_data() {
        // id 7, no cursor, 1 iteration; 3 parameters: a string, NULL, an
        // unsigned long long; types bound.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        p.push(0b010);
        p.push(1);
        p.extend_from_slice(&[0xfd, 0, 0x08, 0, 0x08, 0x80]);
        p.extend_from_slice(&[3, b'a', b'\'', b'b']);
        p.extend_from_slice(&42u64.to_le_bytes());
        let (params, types) = execute_params(&p, 3, &[], &[]).unwrap();
        assert_eq!(
            params,
            vec![
                Param::Value(b"a'b".to_vec()),
                Param::Null,
                Param::Value(b"42".to_vec())
            ]
        );
        // Types not sent again: the previous ones; a long-data parameter is
        // not in the packet.
        let mut q = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b010, 0];
        q.extend_from_slice(&5u64.to_le_bytes());
        let (params, _) = execute_params(&q, 3, &types, &[true, false, false]).unwrap();
        assert_eq!(params[0], Param::LongData);
        assert_eq!(params[2], Param::Value(b"5".to_vec()));
        // Truncated, left over, or no types known: an error.
        assert!(execute_params(&p[..p.len() - 1], 3, &[], &[]).is_err());
        let mut long = p.clone();
        long.push(0);
        assert!(execute_params(&long, 3, &[], &[]).is_err());
        assert!(execute_params(&q, 3, &[], &[]).is_err());
    }
}
