//! Denials of the BPF LSM programs, from their ring buffer into the audit
//! trail: who (pid, uid, cgroup, comm, enrolled account), what (the kind and
//! its detail) and when (the kernel's time of the denial). A workload that
//! retries in a loop cannot flood the store: per second the first
//! [`RefusalLimiter::PER_WINDOW`] denials are recorded one by one and the
//! rest as one `suppressed` event with their count. Denials that find the
//! ring buffer full are still denied, only not reported.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::sync::watch;
use warden_common::{ConnMeta, InodeKey, LsmEvent, MATCH_CGROUP, lsm_kind};

use crate::audit::ocsf::KernelDenial;
use crate::audit::store::AuditHandle;
use crate::identity::Enrolled;
use crate::proxy::refusals::RefusalLimiter;

/// What the denial reader needs, built by the daemon.
pub struct Context {
    pub datapath: Arc<super::Datapath>,
    pub audit: AuditHandle,
    pub enrolled: Arc<Enrolled>,
    /// A target's name and address by its id in the kernel maps, in the
    /// configuration in force.
    pub target: Box<dyn Fn(u64) -> Option<(String, std::net::SocketAddr)> + Send + Sync>,
}

/// Reads denials until shutdown, recording each as an audit event.
pub async fn serve(shared: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    // Read even without the LSM programs: the datagram refusals of the
    // connect and sendmsg programs come through the same ring buffer.
    let Some(mut ring) = shared.datapath.take_lsm_events() else {
        return;
    };
    let files = protected_names(&shared);
    let limiter = RefusalLimiter::default();
    let mut suppressed: Option<KernelDenial> = None;
    // Polled (no epoll registration, which would need `unsafe`): a denial
    // reaches the trail within POLL.
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window = Instant::now();
    loop {
        tokio::select! {
            _ = poll.tick() => {
                for ev in drain(&mut ring) {
                    let denial = describe(&shared, &files, &ev);
                    let admit = limiter.admit(Instant::now());
                    if let Some(n) = admit.summary {
                        record_summary(&shared, suppressed.take(), n).await;
                    }
                    if admit.record {
                        tracing::warn!(
                            lsm.kind = %denial.kind,
                            lsm.pid = denial.tgid,
                            lsm.uid = denial.uid,
                            lsm.comm = %denial.comm,
                            lsm.detail = %denial.detail,
                            "denied to an enrolled workload"
                        );
                        record(&shared, denial).await;
                    } else if suppressed.is_none() {
                        suppressed = Some(denial);
                    }
                }
                if window.elapsed() >= RefusalLimiter::WINDOW {
                    window = Instant::now();
                    if let Some(n) = limiter.flush(window) {
                        record_summary(&shared, suppressed.take(), n).await;
                    }
                }
            }
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

/// How often the ring buffer is read.
const POLL: Duration = Duration::from_millis(100);

fn drain(ring: &mut RingBuf<MapData>) -> Vec<LsmEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(ev) = parse_event(&item) {
            out.push(ev);
        }
    }
    out
}

/// An [`LsmEvent`] from its bytes (`#[repr(C)]`, native endian), read
/// field by field.
fn parse_event(b: &[u8]) -> Option<LsmEvent> {
    if b.len() < std::mem::size_of::<LsmEvent>() {
        return None;
    }
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let mut comm = [0u8; warden_common::COMM_LEN];
    comm.copy_from_slice(b.get(64..64 + warden_common::COMM_LEN)?);
    Some(LsmEvent {
        ts_ns: u64_at(0)?,
        cgroup_id: u64_at(8)?,
        matched_id: u64_at(16)?,
        arg0: u64_at(24)?,
        arg1: u64_at(32)?,
        pid: u32_at(40)?,
        tgid: u32_at(44)?,
        uid: u32_at(48)?,
        kind: u32_at(52)?,
        match_kind: u32_at(56)?,
        _pad: 0,
        comm,
    })
}

async fn record(shared: &Context, denial: KernelDenial) {
    if let Err(e) = shared.audit.record(denial).await {
        tracing::error!(error = %e, "kernel denial NOT recorded in the audit store");
    }
}

/// One event for `n` denials recorded without an event each; `first` is
/// the first of them (who and what), when it was kept.
async fn record_summary(shared: &Context, first: Option<KernelDenial>, n: u64) {
    let mut ev = first.unwrap_or_default();
    ev.detail = format!(
        "{n} denials not recorded one by one (more than {} a second); the first: {} {}",
        RefusalLimiter::PER_WINDOW,
        ev.kind,
        ev.detail
    );
    ev.kind = "suppressed".into();
    ev.count = n;
    if ev.time_ms == 0 {
        ev.time_ms = now_ms();
    }
    record(shared, ev).await;
}

/// Protected inodes and the paths they were recorded from.
fn protected_names(shared: &Context) -> HashMap<(u32, u64), String> {
    shared
        .datapath
        .protected_paths()
        .iter()
        .filter_map(|p| {
            super::lsm::inode_key(p)
                .map(|InodeKey { ino, dev, .. }| ((dev, ino), p.display().to_string()))
        })
        .collect()
}

/// The audit event of one denial.
fn describe(shared: &Context, files: &HashMap<(u32, u64), String>, ev: &LsmEvent) -> KernelDenial {
    let comm = comm(&ev.comm);
    let meta = ConnMeta {
        match_kind: ev.match_kind,
        matched_id: ev.matched_id,
        cgroup_id: ev.cgroup_id,
        uid: ev.uid,
        tgid: ev.tgid,
        pid: ev.pid,
        ..Default::default()
    };
    let account = shared.enrolled.lock().account_for(&meta).map(|(a, _)| a);
    let cgroup_path = super::cgroup::process_cgroup_path(ev.tgid)
        .ok()
        .filter(|p| {
            super::cgroup::cgroup_id(&super::cgroup::cgroup_dir(
                shared.enrolled.cgroup_mount(),
                p,
            ))
            .ok()
                == Some(ev.cgroup_id)
        })
        .or_else(|| cgroup_path_of(shared.enrolled.cgroup_mount(), ev.cgroup_id));
    let file = |dev: u64, ino: u64| {
        let dev = dev as u32;
        let name = files
            .get(&(dev, ino))
            .map(String::as_str)
            .unwrap_or("a protected file");
        format!("{name} (dev {}:{}, inode {ino})", dev >> 20, dev & 0xf_ffff)
    };
    let detail = match ev.kind {
        lsm_kind::BPF => format!("bpf({})", bpf_cmd(ev.arg0)),
        lsm_kind::CGROUP_WRITE => format!(
            "write to the files of cgroup {} (outside its enrolled subtree)",
            cgroup_path_of(shared.enrolled.cgroup_mount(), ev.arg0)
                .unwrap_or_else(|| ev.arg0.to_string())
        ),
        lsm_kind::CLONE_INTO_CGROUP => format!("clone3(CLONE_INTO_CGROUP), flags {:#x}", ev.arg0),
        lsm_kind::SO_MARK => "setsockopt(SOL_SOCKET, SO_MARK)".to_owned(),
        lsm_kind::RAW_SOCKET => format!("socket({}, {})", family(ev.arg0), sock_type(ev.arg1)),
        lsm_kind::PTRACE => format!("ptrace of the agent (pid {}, mode {:#x})", ev.arg0, ev.arg1),
        lsm_kind::SIGNAL => format!("signal {} to the agent (pid {})", ev.arg1, ev.arg0),
        lsm_kind::PROTECTED_FILE => format!("open {}", file(ev.arg0, ev.arg1)),
        lsm_kind::PROTECTED_CHANGE => format!("unlink, rename or link {}", file(ev.arg0, ev.arg1)),
        lsm_kind::SETUID => format!("change of uid to {} (not enrolled)", ev.arg0),
        lsm_kind::DATAGRAM_TO_TARGET => datagram_detail(shared, ev.arg0, ev.arg1),
        lsm_kind::CONNECT_RATE => format!(
            "connect to {} refused: the account made {} redirected connects this second",
            target_name(shared, ev.arg0),
            ev.arg1
        ),
        _ => format!("kind {} ({:#x}, {:#x})", ev.kind, ev.arg0, ev.arg1),
    };
    KernelDenial {
        time_ms: boot_ns_to_ms(ev.ts_ns),
        kind: lsm_kind::name(ev.kind).to_owned(),
        detail,
        account,
        pid: ev.pid,
        tgid: ev.tgid,
        uid: ev.uid,
        comm,
        cgroup_id: ev.cgroup_id,
        cgroup_path,
        enrolled_by: if ev.match_kind == MATCH_CGROUP {
            "cgroup"
        } else {
            "uid"
        }
        .to_owned(),
        enrolled_id: ev.matched_id,
        count: 1,
    }
}

/// What a refused datagram was: socket type, family and port (`arg1`) and
/// the protected target it was aimed at (`arg0`, its id).
/// "target NAME (ADDRESS)" of a target id in the kernel's record.
fn target_name(shared: &Context, target_id: u64) -> String {
    (shared.target)(target_id)
        .map(|(name, address)| format!("target {name} ({address})"))
        .unwrap_or_else(|| format!("target id {target_id}"))
}

fn datagram_detail(shared: &Context, target_id: u64, packed: u64) -> String {
    let ty = packed >> 32;
    let port = packed & 0xffff;
    let target = target_name(shared, target_id);
    format!(
        "{} datagram to port {port} of {target}: Warden relays TCP only",
        sock_type(ty)
    )
}

fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The cgroup2 path (relative to the mount) of cgroup `id`, searched
/// breadth-first (bounded: denials are few and rate-limited).
fn cgroup_path_of(mount: &Path, id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut queue = std::collections::VecDeque::from([mount.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > 20_000 {
            return None;
        }
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            let rel = dir.strip_prefix(mount).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    queue.push_back(e.path());
                }
            }
        }
    }
    None
}

fn bpf_cmd(cmd: u64) -> String {
    const NAMES: [&str; 37] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    usize::try_from(cmd)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("command {cmd}"), |n| (*n).to_owned())
}

fn family(f: u64) -> String {
    match f {
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        17 => "AF_PACKET".into(),
        other => format!("family {other}"),
    }
}

fn sock_type(t: u64) -> String {
    match t & 0xf {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        10 => "SOCK_PACKET".into(),
        other => format!("type {other}"),
    }
}

/// A `bpf_ktime_get_boot_ns()` time as wall-clock milliseconds.
fn boot_ns_to_ms(ts_ns: u64) -> i64 {
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as i128) * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0);
    let ago_ms = ((boot - ts_ns as i128).max(0) / 1_000_000) as i64;
    now_ms() - ago_ms
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_from_their_bytes() {
        let ev = LsmEvent {
            ts_ns: 1,
            cgroup_id: 2,
            matched_id: 3,
            arg0: 4,
            arg1: 5,
            pid: 6,
            tgid: 7,
            uid: 8,
            kind: lsm_kind::BPF,
            match_kind: MATCH_CGROUP,
            _pad: 0,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
        };
        let mut bytes = Vec::new();
        for v in [ev.ts_ns, ev.cgroup_id, ev.matched_id, ev.arg0, ev.arg1] {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [ev.pid, ev.tgid, ev.uid, ev.kind, ev.match_kind, 0] {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        bytes.extend_from_slice(&ev.comm);
        assert_eq!(bytes.len(), std::mem::size_of::<LsmEvent>());
        assert_eq!(parse_event(&bytes), Some(ev));
        assert_eq!(parse_event(&bytes[..79]), None);
    }

    #[test]
    fn names_of_what_was_denied() {
        assert_eq!(bpf_cmd(3), "BPF_MAP_DELETE_ELEM");
        assert_eq!(bpf_cmd(34), "BPF_LINK_DETACH");
        assert_eq!(bpf_cmd(99), "command 99");
        assert_eq!(family(17), "AF_PACKET");
        assert_eq!(sock_type(3 | 0o2000000), "SOCK_RAW");
        assert_eq!(comm(b"sh\0\0\0"), "sh");
    }

    #[test]
    fn boot_time_converts_to_wall_time() {
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
        let ns = boot.tv_sec() as u64 * 1_000_000_000 + boot.tv_nsec() as u64;
        let ms = boot_ns_to_ms(ns - 2_000_000_000);
        let diff = now_ms() - ms;
        assert!((1_900..=2_200).contains(&diff), "{diff}");
    }
}
