//! Fuzzes what the forwarders read from collectors (`forward::http`): the
//! status policy with its `Retry-After` (seconds or an HTTP date), Splunk
//! HEC event answers (`code`, `ackId`) and ack answers (`acks`), and
//! Elasticsearch `_bulk` answers applied item by item to a batch.
//!
//! The first two bytes are the status; the third the answer's kind and
//! the batch size; then a `Retry-After` value up to a NUL, then the body
//! (up to production's answer limits).
//!
//! Fail closed: a batch counts as delivered only when every sent item is;
//! an HEC answer with acknowledgment asked is taken only with an `ackId`;
//! a delivery never succeeds on a status outside 2xx; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::forward::http::{
    Answer, apply_bulk_answer, classify, hec_acked, hec_answer, parse_retry_after,
};
use warden::forward::{Batch, Item};

fn batch(n: usize) -> Batch {
    let mut b = Batch::default();
    for seq in 1..=n as u64 {
        let line = format!("{{\"seq\":{seq}}}").into_bytes();
        b.bytes += line.len();
        b.items.push(Item {
            seq,
            time_ms: 1_700_000_000_000 + seq as i64,
            uid: format!("c0ffee:{seq}"),
            notable: false,
            line,
            done: seq % 5 == 0,
        });
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, kind, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]) % 1000;
    let (retry, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let retry_after = std::str::from_utf8(retry).ok().and_then(parse_retry_after);
    if let Ok(r) = std::str::from_utf8(retry)
        && let Ok(secs) = r.trim().parse::<u64>()
    {
        assert_eq!(retry_after, Some(std::time::Duration::from_secs(secs)));
    }
    let a = Answer {
        status,
        retry_after,
        body: body.to_vec(),
    };
    let ok = classify("fuzz", &a).is_ok();
    assert_eq!(ok, (200..300).contains(&status));
    match kind % 4 {
        0 | 1 => {
            let acked = kind % 4 == 1;
            match hec_answer(&a, acked) {
                Ok(id) => {
                    assert!(ok);
                    assert_eq!(id.is_some(), acked, "ackId only and always when asked");
                }
                Err(_) => {}
            }
        }
        2 => {
            if hec_acked(&a, u64::from(*kind)).is_ok_and(|yes| yes) {
                assert!(ok);
            }
        }
        _ => {
            let n = usize::from(kind >> 2) % 12 + 1;
            let mut b = batch(n);
            let sent: Vec<usize> = (0..n).filter(|i| !b.items[*i].done).collect();
            if apply_bulk_answer(&mut b, &sent, &a.body).is_ok() {
                assert!(b.items.iter().all(|i| i.done), "delivered with items left");
            }
        }
    }
});
