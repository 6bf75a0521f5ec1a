//! Fuzzes the HTTP request codec: any byte stream is parsed as a request
//! head; a head that parses has its framing decided, its target
//! normalised, and its body decoded from the rest of the input (in small
//! pieces, so every decoder state is reached). Nothing may panic; a
//! normalised path must normalise to itself, and a re-written head must
//! parse back to the same method, target and headers.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warden::protocol::http::{
    BodyDecoder, BodyEvent, parse_request, path::normalize, request_body, write_request,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, n))) = parse_request(data, 1 << 14) else {
        return;
    };
    let mut out = Vec::new();
    write_request(&head, &mut out);
    let (again, _) = parse_request(&out, 1 << 16)
        .expect("a written head parses")
        .expect("complete");
    assert_eq!(again.method, head.method);
    assert_eq!(again.target, head.target);
    assert_eq!(again.headers, head.headers);
    if let Ok(t) = normalize(&head.target) {
        let twice = normalize(&t.forward()).expect("a normalised target normalises");
        assert_eq!(twice.path, t.path);
        assert_eq!(twice.match_path, t.match_path);
    }
    let Ok(kind) = request_body(&head) else {
        return;
    };
    let mut dec = BodyDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut rest = &data[n..];
    let mut total = 0usize;
    loop {
        match dec.decode(&mut buf, 7) {
            Ok(Some(BodyEvent::Data(d))) => {
                assert!(!d.is_empty() && d.len() <= 7);
                total += d.len();
            }
            Ok(Some(BodyEvent::End)) => break,
            Ok(None) if rest.is_empty() => break,
            Ok(None) => {
                let k = rest.len().min(3);
                buf.extend_from_slice(&rest[..k]);
                rest = &rest[k..];
            }
            Err(_) => break,
        }
    }
    assert!(total <= data.len());
});
