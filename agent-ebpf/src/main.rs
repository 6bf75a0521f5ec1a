//! Warden's kernel side: decide "redirect or not" and record who called.
//!
//! * `cgroup/connect4`, `cgroup/connect6`: when an enrolled workload (by cgroup,
//!   ancestor cgroup, or uid) connects over TCP to a protected target, remember
//!   who called under the socket cookie and rewrite the destination to the
//!   local proxy. IPv4-mapped IPv6 destinations are treated as IPv4.
//! * `sockops` (`TCP_CONNECT_CB`): once the source port exists, move that record
//!   from the cookie to the connection's 4-tuple, where the proxy finds it on
//!   `accept()`; stale tuple entries are dropped.
//!
//! Loop avoidance: sockets of the agent's cgroup, sockets carrying the agent's
//! SO_MARK, and connections already aimed at the proxy are never touched.
//! Nothing is ever skipped because of the caller's uid.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock_addr},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_socket_cookie,
        bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use warden_common::{
    AgentConfig, COMM_LEN, ConnMeta, MATCH_CGROUP, MATCH_UID, MAX_CGROUP_DEPTH, TARGET_FAIL_OPEN,
    TargetKey, TargetValue, TupleKey, capacity, v4_mapped,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;

#[map(name = "WARDEN_CONFIG")]
static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);

#[map(name = "WARDEN_ENR_CGROUPS")]
static ENROLLED_CGROUPS: HashMap<u64, u32> = HashMap::pinned(capacity::ENROLLED_CGROUPS, 0);

#[map(name = "WARDEN_ENR_UIDS")]
static ENROLLED_UIDS: HashMap<u32, u32> = HashMap::pinned(capacity::ENROLLED_UIDS, 0);

#[map(name = "WARDEN_TARGETS")]
static TARGETS: HashMap<TargetKey, TargetValue> = HashMap::pinned(capacity::TARGETS, 0);

#[map(name = "WARDEN_PENDING")]
static PENDING: LruHashMap<u64, ConnMeta> = LruHashMap::pinned(capacity::PENDING, 0);

#[map(name = "WARDEN_ORIG_DST")]
static ORIG_DST: LruHashMap<TupleKey, ConnMeta> = LruHashMap::pinned(capacity::ORIG_DST, 0);

#[cgroup_sock_addr(connect4)]
pub fn warden_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel hands to this program; the
    // verifier checks every field access below.
    let (ty, ip4, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    if ty != SOCK_STREAM {
        return ALLOW;
    }
    let dst = v4_mapped(ip4.to_ne_bytes());
    let port = u16::from_be(port as u16);
    if let Some(new_dst) = decide(&ctx, dst, port, AF_INET) {
        let octets = [new_dst[12], new_dst[13], new_dst[14], new_dst[15]];
        let cfg_port = proxy_port();
        // SAFETY: writing user_ip4/user_port is allowed for connect4 programs.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(octets);
            (*sa).user_port = u32::from(cfg_port.to_be());
        }
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn warden_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: see warden_connect4.
    let (ty, ip6, port) = unsafe { ((*sa).type_, (*sa).user_ip6, (*sa).user_port) };
    if ty != SOCK_STREAM {
        return ALLOW;
    }
    let dst = words_to_bytes(ip6);
    let port = u16::from_be(port as u16);
    if let Some(new_dst) = decide(&ctx, dst, port, AF_INET6) {
        let cfg_port = proxy_port();
        let words = bytes_to_words(new_dst);
        // SAFETY: writing user_ip6/user_port is allowed for connect6 programs;
        // each word is written separately as the verifier requires.
        unsafe {
            (*sa).user_ip6[0] = words[0];
            (*sa).user_ip6[1] = words[1];
            (*sa).user_ip6[2] = words[2];
            (*sa).user_ip6[3] = words[3];
            (*sa).user_port = u32::from(cfg_port.to_be());
        }
    }
    ALLOW
}

#[sock_ops]
pub fn warden_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // Every context field is read once, up front, with a volatile load at a
    // constant offset: the verifier rejects loads through a context pointer
    // that the compiler offset and then selected between branches.
    let ops = ctx.ops;
    // SAFETY: `ops` is the context pointer of this sock_ops invocation and
    // every field read here is readable for sock_ops programs.
    let (family, lip4, rip4, lip6, rip6, lport, rport) = unsafe {
        (
            read_volatile(&(*ops).family),
            read_volatile(&(*ops).local_ip4),
            read_volatile(&(*ops).remote_ip4),
            [
                read_volatile(&(*ops).local_ip6[0]),
                read_volatile(&(*ops).local_ip6[1]),
                read_volatile(&(*ops).local_ip6[2]),
                read_volatile(&(*ops).local_ip6[3]),
            ],
            [
                read_volatile(&(*ops).remote_ip6[0]),
                read_volatile(&(*ops).remote_ip6[1]),
                read_volatile(&(*ops).remote_ip6[2]),
                read_volatile(&(*ops).remote_ip6[3]),
            ],
            read_volatile(&(*ops).local_port),
            read_volatile(&(*ops).remote_port),
        )
    };
    let (src, dst) = if family == u32::from(AF_INET) {
        (v4_mapped(lip4.to_ne_bytes()), v4_mapped(rip4.to_ne_bytes()))
    } else if family == u32::from(AF_INET6) {
        let remote = words_to_bytes(rip6);
        if warden_common::is_v4_mapped(&remote) {
            // IPv4-mapped connect on a dual-stack socket: the IPv6 view of the
            // local address is only filled in after the IPv4 connect returns,
            // so use the IPv4 fields the kernel already set.
            (v4_mapped(lip4.to_ne_bytes()), v4_mapped(rip4.to_ne_bytes()))
        } else {
            (words_to_bytes(lip6), remote)
        }
    } else {
        return 1;
    };
    // local_port is in host byte order; remote_port holds the network-order
    // port in one of its 16-bit halves depending on the kernel's conversion.
    let rp = if rport & 0xffff == 0 {
        rport >> 16
    } else {
        rport
    };
    let key = TupleKey {
        src_addr: src,
        dst_addr: dst,
        src_port: lport as u16,
        dst_port: u16::from_be(rp as u16),
        _pad: 0,
    };
    // SAFETY: the context pointer is valid for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; PENDING entries are only written
    // by the connect programs for this same socket, which already returned.
    match unsafe { PENDING.get(cookie) } {
        Some(meta) => {
            let meta = *meta;
            let _ = ORIG_DST.insert(key, meta, 0);
            let _ = PENDING.remove(cookie);
        }
        None => {
            // Not one of ours: make sure no stale entry for this tuple (left by a
            // connection the proxy never accepted) can be claimed by it.
            let _ = ORIG_DST.remove(key);
        }
    }
    1
}

/// Returns the address to redirect to, or `None` to leave the call untouched.
#[inline(always)]
fn decide(ctx: &SockAddrContext, dst: [u8; 16], port: u16, family: u16) -> Option<[u8; 16]> {
    let cfg = CONFIG.get(0)?;
    if cfg.ready == 0 {
        return None;
    }
    let mapped = warden_common::is_v4_mapped(&dst);
    let proxy_addr = if mapped {
        cfg.proxy_addr4
    } else {
        cfg.proxy_addr6
    };
    if port == cfg.proxy_port && dst == proxy_addr {
        return None;
    }
    let tkey = TargetKey {
        addr: dst,
        port,
        _pad: [0; 6],
    };
    // SAFETY: copied out at once; TARGETS is only written by userspace.
    let target = unsafe { *TARGETS.get(tkey)? };

    // SAFETY: the helper has no preconditions in this program type.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cgroup_id == cfg.agent_cgroup_id {
        return None;
    }
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: `sk` is always set for sock_addr programs (PTR_TO_SOCKET) and
    // `mark` is a readable field of bpf_sock.
    let mark = unsafe { (*(*sa).__bindgen_anon_1.sk).mark };
    if cfg.mark != 0 && mark == cfg.mark {
        return None;
    }
    if target.flags & TARGET_FAIL_OPEN != 0 {
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if now > cfg.alive_until_ns {
            return None;
        }
    }
    if !mapped && proxy_addr == [0u8; 16] {
        // No IPv6 listener: leave the call alone rather than break it.
        return None;
    }

    let uid = ctx.uid();
    let (match_kind, matched_id) = match enrolled_cgroup(cgroup_id) {
        Some(id) => (MATCH_CGROUP, id),
        None => {
            // SAFETY: the value is not used, only its presence.
            if unsafe { ENROLLED_UIDS.get(uid) }.is_some() {
                (MATCH_UID, u64::from(uid))
            } else {
                return None;
            }
        }
    };

    let comm = ctx.command().unwrap_or([0u8; COMM_LEN]);
    let meta = ConnMeta {
        orig_addr: dst,
        orig_port: port,
        family,
        match_kind,
        tgid: ctx.tgid(),
        pid: ctx.pid(),
        uid,
        gid: ctx.gid(),
        cgroup_id,
        matched_id,
        // CLOCK_BOOTTIME, the clock of a process's start time in /proc, so
        // userspace can tell a reused pid from the caller.
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        comm,
        target_id: target.target_id,
        _pad: 0,
    };
    // SAFETY: the context pointer is valid for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // If this insert fails the connection is still redirected: the proxy then
    // finds no metadata, refuses it and audits it. Never a silent bypass.
    let _ = PENDING.insert(cookie, meta, 0);
    Some(proxy_addr)
}

/// The enrolled cgroup id covering the caller (its own or the deepest enrolled
/// ancestor), walking at most `MAX_CGROUP_DEPTH` levels.
#[inline(always)]
fn enrolled_cgroup(cgroup_id: u64) -> Option<u64> {
    // SAFETY: value unused, presence only.
    if unsafe { ENROLLED_CGROUPS.get(cgroup_id) }.is_some() {
        return Some(cgroup_id);
    }
    // Deepest level first, so the most specific enrollment wins; levels past
    // the caller's depth return 0. Returning at the first hit keeps the
    // verifier's view simple (no pointer merging across iterations).
    let mut level = MAX_CGROUP_DEPTH - 1;
    while level >= 0 {
        // SAFETY: no preconditions; returns 0 past the caller's depth.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        // SAFETY: value unused, presence only.
        if id != 0 && unsafe { ENROLLED_CGROUPS.get(id) }.is_some() {
            return Some(id);
        }
        level -= 1;
    }
    None
}

fn proxy_port() -> u16 {
    CONFIG.get(0).map(|c| c.proxy_port).unwrap_or(0)
}

#[inline(always)]
fn words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    let a = w[0].to_ne_bytes();
    let b = w[1].to_ne_bytes();
    let c = w[2].to_ne_bytes();
    let d = w[3].to_ne_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

#[inline(always)]
fn bytes_to_words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
