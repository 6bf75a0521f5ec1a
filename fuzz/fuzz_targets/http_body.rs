//! Fuzzes the masking of a whole upstream body (`proxy::http`,
//! `respond` and `mask_body`): gzip or deflate decoding at production's
//! limit (`decode_body`, `max_message_bytes`), then JSON (strict parse,
//! field rules, member names, JSON in strings), form or text masking with
//! the grant's masking. The first input byte picks the class and the
//! coding; the rest is the body as it came.
//!
//! Differential: the masked body, read as a client decodes it (JSON
//! strings, member names and numbers; form names and values percent
//! decoded; the text), holds nothing a detector of the masking still finds.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use warden::masking::Masker;
use warden::masking::json::FieldRules;
use warden::proxy::http::decode_body;
use warden::proxy::http::response::BodyClass;

static MASKINGS: LazyLock<Vec<(std::sync::Arc<Masker>, std::sync::Arc<FieldRules>)>> =
    LazyLock::new(|| vec![warden_fuzz::masking("web"), warden_fuzz::masking("pii")]);

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = warden_fuzz::selector(data) else {
        return;
    };
    let class = match sel % 3 {
        0 => BodyClass::Json,
        1 => BodyClass::Form,
        _ => BodyClass::Text,
    };
    let (m, fields) = &MASKINGS[usize::from(sel >> 7)];
    let limit = warden_fuzz::config()
        .target("web")
        .map_or(1 << 24, |t| t.max_message_bytes);
    let plain = match (sel >> 2) % 3 {
        0 => body.to_vec(),
        coded => match decode_body(body, coded == 1, limit) {
            Some(p) => p,
            None => return,
        },
    };
    assert!(plain.len() <= limit);
    let Ok((masked, n)) = warden_fuzz::mask_body(m, fields, class, &plain) else {
        return;
    };
    if n == 0 {
        assert_eq!(masked, plain, "nothing masked, nothing changed");
    }
    for v in warden_fuzz::decoded_values(class, &masked) {
        assert!(
            m.mask_patterns(&v).is_none(),
            "a masked {class:?} body still holds {:?}",
            String::from_utf8_lossy(&v)
        );
    }
});
