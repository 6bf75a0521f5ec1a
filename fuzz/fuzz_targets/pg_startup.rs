//! Fuzzes the PostgreSQL startup packet decoder: any byte string gives a
//! packet, "need more", or an error, never a panic; a decoded packet
//! re-encodes to exactly the bytes it was decoded from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warden::protocol::postgres::{MAX_STARTUP_PACKET, decode_startup};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(packet)) = decode_startup(&mut buf, MAX_STARTUP_PACKET) {
        let used = data.len() - buf.len();
        let mut out = BytesMut::new();
        packet.encode(&mut out).expect("a decoded packet encodes");
        assert_eq!(&out[..], &data[..used]);
    }
});
