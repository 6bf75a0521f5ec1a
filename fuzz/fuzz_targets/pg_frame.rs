//! Fuzzes PostgreSQL framing and message parsing: any byte stream is split
//! into frames with `decode_frame` (a small maximum, so the length checks
//! are reached), and every frame is parsed as both a frontend and a backend
//! message. Nothing may panic; a message that parses must re-encode and
//! parse back to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warden::protocol::postgres::{
    BackendMessage, DataRowValues, FrontendMessage, backend, decode_frame,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 16) {
        assert!(frame.len() >= 5);
        if let Ok(m) = FrontendMessage::parse(&frame) {
            let mut out = BytesMut::new();
            m.encode(&mut out).expect("a parsed message encodes");
            let again = decode_frame(&mut out, 1 << 16)
                .expect("frames")
                .expect("whole");
            assert_eq!(FrontendMessage::parse(&again).as_ref(), Ok(&m));
            assert_eq!(again.raw, frame.raw, "frontend re-encoding is byte-exact");
        }
        if let Ok(m) = BackendMessage::parse(&frame) {
            let mut out = BytesMut::new();
            m.encode(&mut out).expect("a parsed message encodes");
            let again = decode_frame(&mut out, 1 << 16)
                .expect("frames")
                .expect("whole");
            if !matches!(
                m,
                BackendMessage::Authentication(backend::Authentication::Other(_))
            ) {
                assert_eq!(BackendMessage::parse(&again).as_ref(), Ok(&m));
                assert_eq!(again.raw, frame.raw, "backend re-encoding is byte-exact");
            }
        }
        let rows = DataRowValues::from_frame(&frame);
        if frame.tag == b'D' {
            assert_eq!(rows.is_ok(), BackendMessage::parse(&frame).is_ok());
            if let Ok(values) = rows {
                let n = values.len();
                assert_eq!(values.count(), n);
            }
        }
    }
});
