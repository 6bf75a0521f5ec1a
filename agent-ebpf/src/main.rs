//! Warden's kernel side: decide "redirect or not" and record who called.
//!
//! * `cgroup/connect4`, `cgroup/connect6`: when an enrolled workload (by cgroup,
//!   ancestor cgroup at any depth, or uid) connects over TCP to a protected
//!   target, remember who called under the socket cookie and rewrite the
//!   destination to the local proxy — if the agent is serving (heartbeat
//!   current and the listener on the proxy port carries the agent's mark).
//!   Otherwise the connect fails with EPERM (fail-closed targets) or passes
//!   (fail-open ones). Each account's redirected connects are limited per
//!   second (EPERM beyond, reported), so no account can push another's
//!   records out of the LRU maps they wait in. IPv4-mapped IPv6 destinations are treated as IPv4; the
//!   unspecified address is resolved as the kernel would resolve it.
//! * `sockops` (`TCP_CONNECT_CB`): once the source port exists, move that record
//!   from the cookie to the connection's 4-tuple, where the proxy finds it on
//!   `accept()`; stale tuple entries are dropped.
//!
//! * raw tracepoints `sched_process_exec` / `_fork` / `_exit`: one record per
//!   live process (the file it exec'ed, when), which the proxy checks the
//!   caller's `/proc/<pid>/exe` against.
//! * `lsm/*` ([`lsm`]): self-protection against enrolled root workloads.
//! * `sk_skb/stream_verdict` (`warden_relay_verdict`): the in-kernel relay of
//!   `tcp` targets. Once the proxy has recorded a connection's open event it
//!   puts the accepted socket and its upstream socket in the relay's sockhash
//!   maps; from then on each socket's received bytes are redirected to the
//!   other socket's send side without reaching userspace.
//!
//! Loop avoidance: sockets of the agent's cgroup and connections already
//! aimed at the proxy are never touched. Nothing is ever skipped because of
//! the caller's uid, nor because of a socket's mark (an enrolled root
//! workload could set the agent's).
#![no_std]
#![no_main]

mod lsm;

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock, bpf_sock_addr, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes, bpf_sk_lookup_tcp, bpf_sk_release,
    },
    macros::{cgroup_sock_addr, map, raw_tracepoint, sock_ops, stream_verdict, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
    programs::{
        RawTracePointContext, SkBuffContext, SockAddrContext, SockOpsContext, TracePointContext,
    },
};
use warden_common::{
    AgentConfig, COMM_LEN, CONNECTS_PER_ACCOUNT_PER_SEC, ConnMeta, MATCH_CGROUP, MATCH_UID,
    MAX_ENROLLED_LEVEL, MkdirFormat, PROC_FILE, PROC_PREEXISTING, ProcRecord, RateWindow,
    TAG_FROM_MKDIR, TARGET_FAIL_OPEN, TargetKey, TargetValue, TaskOffsets, TupleKey, UNIT_PATH_LEN,
    UnitPathKey, capacity, lsm_kind, v4_mapped,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;
/// Return value that fails the call with EPERM.
const DENY: i32 = 0;
/// `sk_skb` verdict: free the buffer (`sk_action::SK_DROP`).
const SK_DROP: u32 = aya_ebpf::bindings::sk_action::SK_DROP;
/// `sizeof(bpf_sock_tuple.ipv4)` and `sizeof(bpf_sock_tuple.ipv6)`.
const TUPLE4_LEN: u32 = 12;
const TUPLE6_LEN: u32 = 36;

#[map(name = "WARDEN_CONFIG")]
static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);

#[map(name = "WARDEN_ENR_CGROUPS")]
static ENROLLED_CGROUPS: HashMap<u64, u32> = HashMap::pinned(capacity::ENROLLED_CGROUPS, 0);

#[map(name = "WARDEN_ENR_UIDS")]
pub(crate) static ENROLLED_UIDS: HashMap<u32, u32> = HashMap::pinned(capacity::ENROLLED_UIDS, 0);

#[map(name = "WARDEN_TARGETS")]
static TARGETS: HashMap<TargetKey, TargetValue> = HashMap::pinned(capacity::TARGETS, 0);

#[map(name = "WARDEN_PENDING")]
static PENDING: LruHashMap<u64, ConnMeta> = LruHashMap::pinned(capacity::PENDING, 0);

/// One `ConnMeta` per CPU to build records in (not pinned: scratch only).
#[map]
static SCRATCH: PerCpuArray<ConnMeta> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "WARDEN_ORIG_DST")]
static ORIG_DST: LruHashMap<TupleKey, ConnMeta> = LruHashMap::pinned(capacity::ORIG_DST, 0);

/// Each enrolled account's current one-second window of redirected
/// connects (see [`within_connect_rate`]).
#[map(name = "WARDEN_CONNECT_RATE")]
static CONNECT_RATE: LruHashMap<u64, RateWindow> = LruHashMap::pinned(capacity::CONNECT_RATE, 0);

#[map(name = "WARDEN_UNIT_PATHS")]
static UNIT_PATHS: HashMap<UnitPathKey, u32> = HashMap::pinned(capacity::UNIT_PATHS, 0);

#[map(name = "WARDEN_MKDIR_FMT")]
static MKDIR_FMT: Array<MkdirFormat> = Array::pinned(1, 0);

/// `BPF_F_NO_PREALLOC`: entries are allocated as they are inserted.
const BPF_F_NO_PREALLOC: u32 = 1;

/// What each live process runs (tgid → [`ProcRecord`]): the file it
/// exec'ed (device and inode, the kernel's encoding) and when, inherited at
/// fork, removed when the process exits. The proxy compares it with what
/// `/proc/<pid>/exe` shows at accept (`prctl(PR_SET_MM, PR_SET_MM_MAP)` can
/// point that at another file without an exec, allowed in an unprivileged
/// user namespace) and with the connect time (an exec after the connect).
///
/// A plain hash map, not an LRU one: a workload spawning processes must
/// never push its own record out (with an LRU map of 65,536 it could, where
/// `kernel.pid_max` is larger). The agent sizes it at load to the most
/// processes the kernel allows (`kernel.pid_max`, `kernel.threads-max`), so
/// it holds every live process; a record that still cannot be stored is
/// missing, and the proxy refuses a pinned caller without one.
#[map(name = "WARDEN_PROCS")]
static PROCS: HashMap<u32, ProcRecord> = HashMap::pinned(capacity::PROCS, BPF_F_NO_PREALLOC);

#[map(name = "WARDEN_TASK_OFF")]
static TASK_OFF: Array<TaskOffsets> = Array::pinned(1, 0);

/// One path buffer per CPU for the `cgroup_mkdir` program (scratch only).
#[map]
static PATH_SCRATCH: PerCpuArray<UnitPathKey> = PerCpuArray::with_max_entries(1, 0);

/// The in-kernel relay's redirect targets: each relayed socket stored under
/// the cookie of its *peer*, so that data received by a socket goes to the
/// socket stored under the receiver's own cookie. No program is attached to
/// this map: the agent fills it before [`RELAY_SOCKS`], so a socket's peer
/// is always present by the time the verdict program sees its data.
#[map(name = "WARDEN_RELAY_PEERS")]
static RELAY_PEERS: SockHash<u64> = SockHash::with_max_entries(capacity::RELAY_SOCKETS, 0);

/// The same sockets under their own cookie: membership of this map (which
/// `warden_relay_verdict` is attached to) is what moves a socket's received
/// bytes in the kernel. Not pinned: relayed sockets belong to the running
/// agent and leave both maps when they close.
#[map(name = "WARDEN_RELAY_SOCKS")]
static RELAY_SOCKS: SockHash<u64> = SockHash::with_max_entries(capacity::RELAY_SOCKETS, 0);

/// Redirects the bytes a relayed socket received to its peer's send side.
/// A socket whose peer is gone (closed) has its bytes dropped: the relay of
/// that connection is ending and the agent closes both sockets.
///
/// An empty buffer is a bare FIN (TCP queues it for its sequence number):
/// it is dropped here, never redirected. TCP has already recorded the FIN
/// (the agent reads EOF and passes the half-close on itself), and a
/// redirected empty buffer makes the peer's send queue worker
/// (`sk_psock_backlog`) see `skb_send_sock` return 0, which it takes for a
/// hard error: it sets `EPIPE` on the peer socket and stops its relay, so
/// the agent's next read of that socket (the other direction, still
/// running) fails and the bytes still queued for it are lost.
#[stream_verdict]
pub fn warden_relay_verdict(ctx: SkBuffContext) -> u32 {
    if ctx.len() == 0 {
        return SK_DROP;
    }
    // SAFETY: the context pointer of this invocation is valid for the helper.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SK_PASS (1) when the redirect is set up, SK_DROP (0) when the peer is
    // not in the map.
    RELAY_PEERS.redirect_skb(&ctx, &mut cookie, 0) as u32
}

#[cgroup_sock_addr(connect4)]
pub fn warden_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel hands to this program; the
    // verifier checks every field access below.
    let (ty, ip4, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    let port = u16::from_be(port as u16);
    if ty != SOCK_STREAM {
        return datagram_verdict(&ctx, mapped4(ip4), port, AF_INET, ty);
    }
    match decide(&ctx, mapped4(ip4), port, AF_INET) {
        Verdict::Pass => ALLOW,
        Verdict::Deny => DENY,
        Verdict::Rewrite(new_dst, new_port) => {
            // SAFETY: writing user_ip4/user_port is allowed for connect4 programs.
            unsafe {
                (*sa).user_ip4 = new_dst[3];
                (*sa).user_port = u32::from(new_port.to_be());
            }
            ALLOW
        }
    }
}

#[cgroup_sock_addr(connect6)]
pub fn warden_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: see warden_connect4.
    let (ty, ip6, port) = unsafe { ((*sa).type_, (*sa).user_ip6, (*sa).user_port) };
    let port = u16::from_be(port as u16);
    if ty != SOCK_STREAM {
        return datagram_verdict(&ctx, ip6, port, AF_INET6, ty);
    }
    match decide(&ctx, ip6, port, AF_INET6) {
        Verdict::Pass => ALLOW,
        Verdict::Deny => DENY,
        Verdict::Rewrite(words, new_port) => {
            // SAFETY: writing user_ip6/user_port is allowed for connect6
            // programs; each word is written separately as the verifier requires.
            unsafe {
                (*sa).user_ip6[0] = words[0];
                (*sa).user_ip6[1] = words[1];
                (*sa).user_ip6[2] = words[2];
                (*sa).user_ip6[3] = words[3];
                (*sa).user_port = u32::from(new_port.to_be());
            }
            ALLOW
        }
    }
}

/// `sendto()`/`sendmsg()` with a destination on an unconnected UDP socket
/// (the connect programs cover connected ones): a datagram from an enrolled
/// workload to a protected target's address and port is refused. Warden
/// relays TCP only, so a target's UDP port (HTTP/3, a server's UDP side)
/// would otherwise be reached directly, with no audit event.
#[cgroup_sock_addr(sendmsg4)]
pub fn warden_sendmsg4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is this invocation's context; the verifier checks the reads.
    let (ty, ip4, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    datagram_verdict(&ctx, mapped4(ip4), u16::from_be(port as u16), AF_INET, ty)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn warden_sendmsg6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in warden_sendmsg4.
    let (ty, ip6, port) = unsafe { ((*sa).type_, (*sa).user_ip6, (*sa).user_port) };
    datagram_verdict(&ctx, ip6, u16::from_be(port as u16), AF_INET6, ty)
}

/// The verdict on a non-stream socket's `connect()` or addressed `sendmsg()`
/// to `dst`:`port`: EPERM for an enrolled caller when the destination (the
/// unspecified address resolved as the kernel resolves it) is a protected
/// target, reported to the agent through the denial ring buffer; everything
/// else passes. Nothing is redirected: the proxy speaks TCP only.
#[inline(always)]
fn datagram_verdict(ctx: &SockAddrContext, dst: Addr, port: u16, family: u16, ty: u32) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return ALLOW;
    };
    if cfg.ready == 0 {
        return ALLOW;
    }
    // SAFETY: no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cgroup_id == cfg.agent_cgroup_id {
        return ALLOW;
    }
    let dst = if is_unspecified(&dst) {
        resolve_unspecified(ctx, &dst, family)
    } else {
        dst
    };
    let tkey = TargetKey {
        addr: bytes(dst),
        port,
        _pad: [0; 6],
    };
    // SAFETY: copied out at once; TARGETS is only written by userspace.
    let Some(target) = (unsafe { TARGETS.get(tkey) }).copied() else {
        return ALLOW;
    };
    let Some((match_kind, matched_id)) = enrolled(ctx, cgroup_id) else {
        return ALLOW;
    };
    lsm::report(
        match_kind,
        matched_id,
        cgroup_id,
        lsm_kind::DATAGRAM_TO_TARGET,
        u64::from(target.target_id),
        (u64::from(ty) << 32) | (u64::from(family) << 16) | u64::from(port),
    );
    DENY
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

/// `cgroup:cgroup_mkdir`: when the cgroup2 cgroup of an enrolled unit is
/// (re)created, enroll its new id before `mkdir()` returns — before any
/// process can be moved into it — instead of at the agent's next resolution.
#[tracepoint]
pub fn warden_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = enroll_new_unit_cgroup(&ctx);
    0
}

#[inline(always)]
fn enroll_new_unit_cgroup(ctx: &TracePointContext) -> Option<()> {
    let fmt = MKDIR_FMT.get(0)?;
    if fmt.path_off == 0 || fmt.id_off == 0 {
        return None;
    }
    // SAFETY: the offsets are the tracepoint's own (read from its format by
    // the agent); the reads go through bpf_probe_read_kernel.
    let root: i32 = unsafe { ctx.read_at(fmt.root_off as usize) }.ok()?;
    if root != 0 {
        // A cgroup v1 hierarchy: its ids are another numbering.
        return None;
    }
    // SAFETY: as above.
    let id: u64 = unsafe { ctx.read_at(fmt.id_off as usize) }.ok()?;
    // SAFETY: as above.
    let loc: u32 = unsafe { ctx.read_at(fmt.path_off as usize) }.ok()?;
    let key = PATH_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of PATH_SCRATCH; programs do not migrate
    // between CPUs while running. The string is read from the tracepoint
    // record (`__data_loc`: offset in the low 16 bits) with the checked
    // helper, into a buffer zeroed first so the key is NUL-padded.
    let len = unsafe {
        (*key).path = [0u8; UNIT_PATH_LEN];
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        bpf_probe_read_kernel_str_bytes(src, &mut (*key).path)
            .ok()?
            .len()
    };
    if len >= UNIT_PATH_LEN - 1 {
        // Possibly truncated: never match a prefix.
        return None;
    }
    // SAFETY: the key is valid (above). Passed by reference, not by value: the
    // key is this CPU's scratch slot, too big to copy onto the BPF stack.
    let key: &_ = unsafe { &*key };
    // SAFETY: the value is copied out at once.
    let tag = unsafe { UNIT_PATHS.get(key) }.copied()?;
    ENROLLED_CGROUPS.insert(id, tag | TAG_FROM_MKDIR, 0).ok()
}

/// Raw `sched_process_exec` (`task, old_pid, bprm`): record the file the
/// process now runs (`bprm->file`, also what `/proc/<pid>/exe` names right
/// after the exec) and when. A record that cannot be replaced is removed:
/// a stale one (the program before this exec) must never remain.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn warden_exec_file(ctx: RawTracePointContext) -> i32 {
    record_exec(&ctx);
    0
}

#[inline(always)]
fn record_exec(ctx: &RawTracePointContext) {
    // After exec the caller is its process's leader: pid_tgid >> 32 is the tgid.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: no preconditions.
    let exec_ns = unsafe { bpf_ktime_get_boot_ns() };
    let mut rec = ProcRecord {
        exec_ns,
        ino: 0,
        dev: 0,
        flags: 0,
    };
    if let Some(off) = TASK_OFF.get(0)
        && off.ready != 0
    {
        let bprm: u64 = ctx.arg(2);
        if let Some(key) =
            lsm::read::<*const u8>(bprm as *const u8, off.bprm_file).and_then(|f| file_key(f, off))
        {
            rec.ino = key.ino;
            rec.dev = key.dev;
            rec.flags = PROC_FILE;
        }
    }
    if PROCS.insert(tgid, rec, 0).is_err() {
        let _ = PROCS.remove(tgid);
    }
}

/// Raw `sched_process_fork` (`parent, child`): a new process runs its
/// parent's file. Its pid may have been another process's, so its record
/// is always replaced or removed. A parent without a record gives the child
/// none — except before the agent has recorded the processes that predate
/// it (`seeded`), when the parent may simply not be recorded yet. Threads
/// are skipped.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn warden_fork_file(ctx: RawTracePointContext) -> i32 {
    let _ = inherit_record(&ctx);
    0
}

#[inline(always)]
fn inherit_record(ctx: &RawTracePointContext) -> Option<()> {
    let off = TASK_OFF.get(0)?;
    if off.ready == 0 {
        return None;
    }
    let child: u64 = ctx.arg(1);
    let child = child as *const u8;
    let pid: i32 = lsm::read(child, off.task_pid)?;
    let tgid: i32 = lsm::read(child, off.task_tgid)?;
    if pid != tgid {
        return None;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: copied out at once.
    let rec = match unsafe { PROCS.get(parent) }.copied() {
        Some(rec) => rec,
        None if off.seeded == 0 => ProcRecord {
            exec_ns: 0,
            ino: 0,
            dev: 0,
            flags: PROC_PREEXISTING,
        },
        None => return PROCS.remove(tgid as u32).ok(),
    };
    if PROCS.insert(tgid as u32, rec, 0).is_err() {
        let _ = PROCS.remove(tgid as u32);
    }
    Some(())
}

/// Raw `sched_process_exit` (`task, …`): when the last thread of a process
/// exits (`signal->live` has dropped to 0), its record goes, so the map
/// holds live processes only and never fills with the dead.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn warden_proc_exit(_ctx: RawTracePointContext) -> i32 {
    let _ = forget_exited();
    0
}

#[inline(always)]
fn forget_exited() -> Option<()> {
    let off = TASK_OFF.get(0)?;
    if off.ready == 0 {
        return None;
    }
    // SAFETY: no preconditions; read only through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let signal: *const u8 = lsm::read(task, off.task_signal)?;
    let live: i32 = lsm::read(signal, off.signal_live)?;
    if live != 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    PROCS.remove(tgid).ok()
}

/// Device (kernel encoding) and inode of `file`.
#[inline(always)]
fn file_key(file: *const u8, off: &TaskOffsets) -> Option<warden_common::InodeKey> {
    let inode: *const u8 = lsm::read(file, off.file_f_inode)?;
    let ino: u64 = lsm::read(inode, off.inode_i_ino)?;
    let sb: *const u8 = lsm::read(inode, off.inode_i_sb)?;
    let dev: u32 = lsm::read(sb, off.sb_s_dev)?;
    Some(warden_common::InodeKey { ino, dev, _pad: 0 })
}

/// What a connect program does with the call.
enum Verdict {
    /// Leave the call as it is.
    Pass,
    /// Connect to this address (IPv6 form) and port instead.
    Rewrite(Addr, u16),
    /// Fail the call with EPERM.
    Deny,
}

/// Who an enrolled caller is: `MATCH_CGROUP` or `MATCH_UID`, and the
/// enrolled cgroup id or uid.
type Enrolled = (u32, u64);

/// The decision for one TCP connect by the current task to `dst`:`port`
/// (IPv6 form; IPv4 and IPv4-mapped destinations as `::ffff:a.b.c.d`).
#[inline(always)]
fn decide(ctx: &SockAddrContext, dst: Addr, port: u16, family: u16) -> Verdict {
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::Pass;
    };
    if cfg.ready == 0 {
        return Verdict::Pass;
    }
    // SAFETY: the helper has no preconditions in this program type.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cgroup_id == cfg.agent_cgroup_id {
        return Verdict::Pass;
    }
    // The unspecified address (0.0.0.0, ::, ::ffff:0.0.0.0) is not where the
    // connection goes: the kernel turns it into the socket's bound address or
    // loopback after this program ran. For enrolled callers, decide on the
    // address it stands for, and make the kernel use exactly that address.
    let unspecified = is_unspecified(&dst);
    let mut who: Option<Enrolled> = None;
    let dst = if unspecified {
        match enrolled(ctx, cgroup_id) {
            Some(w) => who = Some(w),
            None => return Verdict::Pass,
        }
        resolve_unspecified(ctx, &dst, family)
    } else {
        dst
    };
    let unchanged = if unspecified {
        Verdict::Rewrite(dst, port)
    } else {
        Verdict::Pass
    };

    let mapped = is_mapped(&dst);
    let proxy_addr = words(if mapped {
        cfg.proxy_addr4
    } else {
        cfg.proxy_addr6
    });
    if port == cfg.proxy_port && same(&dst, &proxy_addr) {
        return unchanged;
    }
    let tkey = TargetKey {
        addr: bytes(dst),
        port,
        _pad: [0; 6],
    };
    // SAFETY: copied out at once; TARGETS is only written by userspace.
    let Some(target) = (unsafe { TARGETS.get(tkey) }).copied() else {
        return unchanged;
    };
    let (match_kind, matched_id) = match who {
        Some(w) => w,
        None => match enrolled(ctx, cgroup_id) {
            Some(w) => w,
            None => return Verdict::Pass,
        },
    };

    if !agent_serving(ctx, cfg, mapped, &proxy_addr) {
        // Nothing of the agent's listens on the proxy port (or its heartbeat
        // lapsed): whoever holds the port now must not receive the workload.
        if target.flags & TARGET_FAIL_OPEN != 0 {
            return unchanged;
        }
        return Verdict::Deny;
    }

    // One account may not write the connection records faster than its
    // limit (default CONNECTS_PER_ACCOUNT_PER_SEC): beyond it the connect fails (EPERM) and
    // the agent audits it, so no account can push another's records out of
    // PENDING / ORIG_DST while they wait for the proxy's accept.
    let limit = if cfg.connects_per_sec != 0 {
        cfg.connects_per_sec
    } else {
        CONNECTS_PER_ACCOUNT_PER_SEC
    };
    if !within_connect_rate(match_kind, matched_id, limit) {
        lsm::report(
            match_kind,
            matched_id,
            cgroup_id,
            lsm_kind::CONNECT_RATE,
            u64::from(target.target_id),
            u64::from(limit),
        );
        return Verdict::Deny;
    }

    // The record is built in a per-CPU scratch slot: the BPF stack (512
    // bytes) cannot hold it next to everything else this program keeps.
    let Some(meta) = SCRATCH.get_ptr_mut(0) else {
        return Verdict::Deny;
    };
    // SAFETY: `meta` points to this CPU's slot of SCRATCH; programs do not
    // migrate between CPUs while running, so nothing else touches it.
    unsafe {
        (*meta).orig_addr = bytes(dst);
        (*meta).orig_port = port;
        (*meta).family = family;
        (*meta).match_kind = match_kind;
        (*meta).tgid = ctx.tgid();
        (*meta).pid = ctx.pid();
        (*meta).uid = ctx.uid();
        (*meta).gid = ctx.gid();
        (*meta).cgroup_id = cgroup_id;
        (*meta).matched_id = matched_id;
        // CLOCK_BOOTTIME, the clock of a process's start time in /proc, so
        // userspace can tell a reused pid from the caller.
        (*meta).ts_ns = bpf_ktime_get_boot_ns();
        (*meta).comm = ctx.command().unwrap_or([0u8; COMM_LEN]);
        (*meta).target_id = target.target_id;
        (*meta)._pad = 0;
    }
    // SAFETY: the context pointer is valid for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // If this insert fails the connection is still redirected: the proxy then
    // finds no metadata, refuses it and audits it. Never a silent bypass.
    // SAFETY: `meta` is valid (above) and only read by the helper; it is
    // passed by reference, not copied onto the BPF stack.
    let meta: &_ = unsafe { &*meta };
    let _ = PENDING.insert(cookie, meta, 0);
    Verdict::Rewrite(proxy_addr, cfg.proxy_port)
}

/// Counts one redirected connect of the account (`match_kind`,
/// `matched_id`) in its current one-second window; false once the window
/// already holds `limit`. The count is not atomic
/// across CPUs (a few connects over the limit at most); an account whose
/// window cannot be stored is not limited.
#[inline(always)]
fn within_connect_rate(match_kind: u32, matched_id: u64, limit: u32) -> bool {
    const WINDOW_NS: u64 = 1_000_000_000;
    let key = (u64::from(match_kind) << 32) ^ matched_id;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match CONNECT_RATE.get_ptr_mut(key) {
        Some(w) => {
            // SAFETY: a pointer to this key's value in the map, valid for
            // this program run; concurrent updates can only lose counts.
            unsafe {
                if now.wrapping_sub((*w).start_ns) >= WINDOW_NS {
                    (*w).start_ns = now;
                    (*w).count = 1;
                    return true;
                }
                if (*w).count >= limit {
                    return false;
                }
                (*w).count += 1;
            }
            true
        }
        None => {
            let w = RateWindow {
                start_ns: now,
                count: 1,
                _pad: 0,
            };
            let _ = CONNECT_RATE.insert(key, w, 0);
            true
        }
    }
}

/// The caller's socket.
#[inline(always)]
fn sock(ctx: &SockAddrContext) -> *mut bpf_sock {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: `sk` is always set for sock_addr programs (PTR_TO_SOCKET).
    unsafe { (*sa).__bindgen_anon_1.sk }
}

/// Whether the caller is enrolled, by cgroup (its own or an ancestor's) or
/// else by uid.
#[inline(always)]
fn enrolled(ctx: &SockAddrContext, cgroup_id: u64) -> Option<Enrolled> {
    if let Some(id) = enrolled_cgroup(cgroup_id) {
        return Some((MATCH_CGROUP, id));
    }
    let uid = ctx.uid();
    // SAFETY: the value is not used, only its presence.
    if unsafe { ENROLLED_UIDS.get(uid) }.is_some() {
        return Some((MATCH_UID, u64::from(uid)));
    }
    userns_owner_enrolled().map(|owner| (MATCH_UID, u64::from(owner)))
}

/// Deepest user namespaces are at level 32 (`MAX_USER_NS_LEVEL`).
const MAX_USERNS_WALK: u32 = 33;

/// The enrolled uid that created the caller's user namespace or one of its
/// ancestors. A user with subordinate uids (`/etc/subuid`, mapped by the
/// setuid `newuidmap`) can become one of them in a namespace it created: it
/// stays enrolled as the uid that created the namespace.
#[inline(always)]
fn userns_owner_enrolled() -> Option<u32> {
    let off = TASK_OFF.get(0)?;
    if off.ready == 0 {
        return None;
    }
    // SAFETY: no preconditions; the result is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let cred: *const u8 = lsm::read(task, off.task_cred)?;
    let mut ns: *const u8 = lsm::read(cred, off.cred_user_ns)?;
    let mut i = 0;
    while i < MAX_USERNS_WALK {
        let level: i32 = lsm::read(ns, off.userns_level)?;
        if level <= 0 {
            return None;
        }
        let owner: u32 = lsm::read(ns, off.userns_owner)?;
        // SAFETY: presence only.
        if unsafe { ENROLLED_UIDS.get(owner) }.is_some() {
            return Some(owner);
        }
        ns = lsm::read(ns, off.userns_parent)?;
        i += 1;
    }
    None
}

/// `0.0.0.0`, `::` or `::ffff:0.0.0.0`.
#[inline(always)]
fn is_unspecified(a: &Addr) -> bool {
    a[0] == 0 && a[1] == 0 && (a[2] == 0 || a[2] == MAPPED_PREFIX) && a[3] == 0
}

/// The address the kernel connects to when asked for the unspecified one
/// (`tcp_v4_connect` through the route lookup, `tcp_v6_connect`):
/// * IPv4 socket, `0.0.0.0`: its bound address, else 127.0.0.1;
/// * IPv6 socket, `::`: `::ffff:127.0.0.1` when bound to an IPv4-mapped
///   address, else `::1`;
/// * IPv6 socket, `::ffff:0.0.0.0` (IPv4 through the dual stack): the IPv4
///   source the socket has — its bound IPv4-mapped address, 127.0.0.6
///   (`LOOPBACK4_IPV6`) when bound to a real IPv6 address, else 127.0.0.1.
///
/// The connect program then writes the result back, so the kernel connects
/// exactly where the decision was made even if this ever differed from its
/// own choice.
#[inline(always)]
fn resolve_unspecified(ctx: &SockAddrContext, dst: &Addr, family: u16) -> Addr {
    let sk = sock(ctx);
    if family == AF_INET {
        // SAFETY: `src_ip4` of the caller's socket is readable.
        let bound = unsafe { read_volatile(&(*sk).src_ip4) };
        return mapped4(if bound != 0 { bound } else { LOOPBACK4 });
    }
    // SAFETY: `src_ip6` of the caller's socket is readable, word by word.
    let bound: Addr = unsafe {
        [
            read_volatile(&(*sk).src_ip6[0]),
            read_volatile(&(*sk).src_ip6[1]),
            read_volatile(&(*sk).src_ip6[2]),
            read_volatile(&(*sk).src_ip6[3]),
        ]
    };
    let bound_mapped = is_mapped(&bound);
    if dst[2] == 0 {
        // `::`
        return if bound_mapped {
            mapped4(LOOPBACK4)
        } else {
            [0, 0, 0, LOOPBACK6_LAST]
        };
    }
    // `::ffff:0.0.0.0`
    if bound_mapped {
        return mapped4(if bound[3] != 0 { bound[3] } else { LOOPBACK4 });
    }
    if bound[0] == 0 && bound[1] == 0 && bound[2] == 0 && bound[3] == 0 {
        return mapped4(LOOPBACK4);
    }
    mapped4(LOOPBACK4_IPV6)
}

/// True when the agent counts as serving: its heartbeat has not lapsed, and
/// the listener a redirected connection would reach is the agent's own (it
/// carries the agent's SO_MARK, which only a process with CAP_NET_ADMIN or
/// CAP_NET_RAW can set). A port taken over by anyone else while the agent is
/// down is therefore never handed a workload's connection.
#[inline(always)]
fn agent_serving(
    ctx: &SockAddrContext,
    cfg: &AgentConfig,
    mapped: bool,
    proxy_addr: &Addr,
) -> bool {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let unset =
        proxy_addr[0] == 0 && proxy_addr[1] == 0 && proxy_addr[2] == 0 && proxy_addr[3] == 0;
    if now > cfg.alive_until_ns || unset || cfg.mark == 0 {
        return false;
    }
    let dport = cfg.proxy_port.to_be();
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: [0; 4],
                daddr: [0; 4],
                sport: 0,
                dport: 0,
            },
        },
    };
    let size = if mapped {
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: 0,
            daddr: proxy_addr[3],
            sport: 0,
            dport,
        };
        TUPLE4_LEN
    } else {
        tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: [0; 4],
            daddr: *proxy_addr,
            sport: 0,
            dport,
        };
        TUPLE6_LEN
    };
    // SAFETY: the tuple lives on this stack frame and is fully initialised;
    // the returned socket, when not null, is released below on every path.
    let listener = unsafe {
        bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            &mut tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if listener.is_null() {
        return false;
    }
    // SAFETY: a non-null result is a referenced full socket; `mark` is readable.
    let mark = unsafe { read_volatile(&(*listener).mark) };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(listener.cast()) };
    mark == cfg.mark
}

/// The enrolled cgroup id covering the caller: its own, else the deepest
/// enrolled ancestor. `bpf_get_current_ancestor_cgroup_id(level)` counts
/// levels from the root, so an ancestor at a level up to
/// `MAX_ENROLLED_LEVEL` is seen however deep below it the caller sits;
/// enrolled cgroups deeper than that are refused by the agent.
#[inline(always)]
pub(crate) fn enrolled_cgroup(cgroup_id: u64) -> Option<u64> {
    // SAFETY: value unused, presence only.
    if unsafe { ENROLLED_CGROUPS.get(cgroup_id) }.is_some() {
        return Some(cgroup_id);
    }
    // From level 1 down to the caller's own level (ancestor ids are 0 past
    // it), keeping the deepest hit, so the most specific enrollment wins. Only
    // the id is carried across iterations (a scalar, never a map value
    // pointer), so the verifier's states stay few; the cost is one helper
    // call per level of the caller.
    let mut best: u64 = 0;
    let mut level: i32 = 1;
    while level <= MAX_ENROLLED_LEVEL {
        // SAFETY: no preconditions; returns 0 past the caller's depth.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        // SAFETY: value unused, presence only.
        if unsafe { ENROLLED_CGROUPS.get(id) }.is_some() {
            best = id;
        }
        level += 1;
    }
    if best != 0 {
        return Some(best);
    }
    None
}

/// An address as the four 32-bit words of its IPv6 form, each holding its
/// bytes in network order (as `user_ip6` does); IPv4 as `::ffff:a.b.c.d`.
type Addr = [u32; 4];
/// Third word of an IPv4-mapped address (`0000:ffff`).
const MAPPED_PREFIX: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// The IPv4 address the kernel gives a socket bound to a real IPv6 address.
const LOOPBACK4_IPV6: u32 = u32::from_ne_bytes([127, 0, 0, 6]);
/// Last word of `::1`.
const LOOPBACK6_LAST: u32 = u32::from_ne_bytes([0, 0, 0, 1]);

/// `::ffff:a.b.c.d` from an IPv4 address as `user_ip4` holds it.
#[inline(always)]
fn mapped4(ip4: u32) -> Addr {
    [0, 0, MAPPED_PREFIX, ip4]
}

#[inline(always)]
fn is_mapped(a: &Addr) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == MAPPED_PREFIX
}

#[inline(always)]
fn same(a: &Addr, b: &Addr) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// The map-key form (`[u8; 16]`, network order) of an address.
#[inline(always)]
fn bytes(a: Addr) -> [u8; 16] {
    // SAFETY: both types are 16 plain bytes; any bit pattern is valid.
    unsafe { core::mem::transmute::<Addr, [u8; 16]>(a) }
}

/// The inverse of [`bytes`].
#[inline(always)]
fn words(b: [u8; 16]) -> Addr {
    // SAFETY: as for `bytes`.
    unsafe { core::mem::transmute::<[u8; 16], Addr>(b) }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
