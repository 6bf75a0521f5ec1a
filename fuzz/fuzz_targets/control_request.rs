//! Fuzzes the requests of the control socket and the approvals socket
//! (`control::server`, `control::approvals`): one line read as those
//! servers read it (at most `MAX_REQUEST` bytes, up to the first newline,
//! UTF-8), decoded as a `Request`, and an approval request dispatched to
//! an approvals service (`control::approvals::dispatch`) for a root peer,
//! an approver and a stranger.
//!
//! A decoded request re-encodes to one that decodes to itself; only
//! approval requests reach the approvals service; a stranger's request
//! never succeeds; nothing may panic.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use warden::approval::Approvals;
use warden::approval::peer::{Peer, Place};
use warden::control::{Request, Response, approvals, server};

static APPROVALS: LazyLock<Arc<Approvals>> = LazyLock::new(|| {
    let _rt = warden_fuzz::runtime().enter();
    Approvals::new(
        warden_fuzz::config().approvals.clone(),
        warden_fuzz::audit(),
        "warden approvals".into(),
    )
});

fn peer(uid: u32) -> Peer {
    Peer {
        uid,
        gid: uid,
        pid: Some(4242),
        gids: vec![uid],
        uids: vec![uid; 4],
        place: Place::Known {
            cgroups: vec!["/system.slice/approver.service".into()],
            cgroup_ids: vec![7],
            accounts: Vec::new(),
        },
    }
}

/// The line `read_line` gives over a stream cut at `limit` bytes.
fn read_line(data: &[u8], limit: u64) -> Option<&str> {
    let cut = &data[..data.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
    let line = match cut.iter().position(|b| *b == b'\n') {
        Some(i) => &cut[..=i],
        None => cut,
    };
    std::str::from_utf8(line).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, data)) = warden_fuzz::selector(data) else {
        return;
    };
    assert_eq!(server::MAX_REQUEST, approvals::MAX_REQUEST);
    let Some(line) = read_line(data, server::MAX_REQUEST) else {
        return;
    };
    let Ok(req) = serde_json::from_str::<Request>(line) else {
        return;
    };
    let text = serde_json::to_string(&req).expect("a request encodes");
    let again: Request = serde_json::from_str(&text).expect("an encoded request decodes");
    assert_eq!(again, req);
    if !req.is_approval() {
        return;
    }
    let (uid, stranger) = match sel % 3 {
        0 => (0, false),
        1 => (1000, false),
        _ => (1001, true),
    };
    let resp = warden_fuzz::runtime().block_on(approvals::dispatch(req, &APPROVALS, &peer(uid)));
    if stranger {
        assert!(matches!(resp, Response::Error { .. }), "{resp:?}");
    }
    serde_json::to_vec(&resp).expect("a response encodes");
});
