//! Fuzzes the MySQL packet decoder and what the proxy reads from packets:
//! any byte stream is split into packets with `packet::decode` (a small
//! maximum, so the length checks are reached); each payload is read as a
//! command response, OK, ERR, text row, binary row (under a few column
//! layouts chosen by the first input byte), COM_STMT_EXECUTE parameters,
//! prepare OK, column definition and statement id. Nothing may panic; a decoded packet re-encodes to the
//! bytes it came from; rows that parse rebuild to the same values.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use warden::protocol::mysql::{binary, message, packet};

const LAYOUTS: &[&[(ColumnType, ColumnFlags)]] = &[
    &[(ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::empty())],
    &[
        (ColumnType::MYSQL_TYPE_LONG, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_VAR_STRING, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_LONGLONG, ColumnFlags::UNSIGNED_FLAG),
    ],
    &[
        (ColumnType::MYSQL_TYPE_DATETIME, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_TIME, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_DOUBLE, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_TINY, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_NEWDECIMAL, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_BLOB, ColumnFlags::BINARY_FLAG),
        (ColumnType::MYSQL_TYPE_SHORT, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_FLOAT, ColumnFlags::empty()),
        (ColumnType::MYSQL_TYPE_DATE, ColumnFlags::empty()),
    ],
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let layout = LAYOUTS[usize::from(selector) % LAYOUTS.len()];
    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.clone();
        let p = match packet::decode(&mut buf, 1 << 16) {
            Ok(Some(p)) => p,
            _ => break,
        };
        let used = before.len() - buf.len();
        if used == p.payload.len() + 4 {
            // One frame: it re-encodes byte for byte.
            let mut out = BytesMut::new();
            let mut seq = p.seq;
            packet::encode(&mut seq, &p.payload, &mut out);
            assert_eq!(&out[..], &before[..used]);
        }
        let b = &p.payload[..];
        let _ = message::response(b);
        let _ = message::parse_ok(b);
        let _ = message::parse_err(b);
        let _ = message::is_eof(b, selector & 1 == 0);
        let _ = message::eof_status(b, selector & 1 == 0);
        for n in [1usize, 2, 3] {
            if let Ok(values) = message::text_row(b, n) {
                // Lengths are re-encoded in their shortest form (a peer may
                // send longer ones): the values survive, not the bytes.
                let again = message::encode_text_row(values.iter().copied());
                assert_eq!(message::text_row(&again, n).as_ref(), Ok(&values));
            }
        }
        if let Ok(cells) = binary::binary_row(b, layout) {
            assert_eq!(cells.len(), layout.len());
            let raw: Vec<Option<&[u8]>> = cells
                .iter()
                .map(|c| c.value.as_ref().map(|_| c.raw))
                .collect();
            let again = binary::encode_binary_row(&raw);
            assert_eq!(
                binary::binary_row(&again, layout).map(|c| c.len()).ok(),
                Some(layout.len())
            );
            for c in cells.iter().filter_map(|c| c.value.as_ref()) {
                let _ = binary::text_of(c);
            }
        }
        // A COM_STMT_EXECUTE's parameters, types bound or remembered, one
        // of them sent before as long data.
        for n in [1usize, 3] {
            let known = &layout[..n.min(layout.len())];
            if let Ok((params, types)) = binary::execute_params(b, n, known, &[false, true]) {
                assert_eq!(params.len(), n);
                assert_eq!(types.len(), n);
            }
        }
        let _ = binary::parse_prepare_ok(b);
        let _ = binary::statement_id(b);
        if let Ok(col) = ParseBuf(b).parse::<Column>(()) {
            let s = binary::as_string_column(&col);
            let back: Column = ParseBuf(&s).parse(()).expect("a rebuilt column parses");
            assert_eq!(back.column_type(), ColumnType::MYSQL_TYPE_VAR_STRING);
            assert_eq!(back.org_name_ref(), col.org_name_ref());
        }
    }
});
