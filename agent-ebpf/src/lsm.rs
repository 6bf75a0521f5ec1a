//! BPF LSM programs: self-protection against enrolled workloads running as
//! root. Each program denies (`-EPERM`) one way out of Warden's control to a
//! *subject* — a task enrolled by cgroup (its own or an ancestor, any depth)
//! or by uid, never the agent itself — and reports the denial through the
//! `WARDEN_LSM_EVENTS` ring buffer, which the agent turns into audit events.
//! Tasks that are not subjects are never denied anything here.
//!
//! * `bpf`: every `bpf()` command (no map edits, no link detach, no loading).
//! * `file_open`: a cgroup2 file opened for write outside the subject's
//!   enrolled subtree (for a uid-enrolled subject: in the agent's cgroup) —
//!   `cgroup.procs`, `cgroup.threads` and every other control file; and any
//!   file that is, or lies below, a protected inode (Warden's state dir, pin
//!   dir, config and the secret files it names), by device and inode.
//! * `task_alloc`: `clone3(CLONE_INTO_CGROUP)`, the other way into a cgroup.
//! * `socket_setsockopt`: `SO_MARK` (the hook does not see the value; no
//!   enrolled workload may mark its sockets).
//! * `socket_create`: `AF_PACKET`, and `SOCK_RAW`/`SOCK_PACKET` in
//!   `AF_INET`/`AF_INET6`.
//! * `ptrace_access_check`, `task_kill`: ptrace of, and signals to, the agent.
//! * `inode_unlink`, `inode_rename`, `inode_link`: protected files cannot be
//!   removed, moved out from under their directory, or linked elsewhere.
//! * `task_fix_setuid`: a process enrolled by uid cannot change its (real)
//!   uid to one that is not enrolled.
//!
//! Kernel struct fields are read with `bpf_probe_read_kernel` at offsets the
//! agent takes from the running kernel's BTF (`LsmConfig::off`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
    },
    macros::{lsm, map},
    maps::{Array, HashMap, RingBuf},
    programs::LsmContext,
};
use warden_common::{
    COMM_LEN, InodeKey, KernelOffsets, LsmConfig, LsmEvent, MATCH_CGROUP, MATCH_UID, capacity,
    lsm_kind,
};

use crate::{ENROLLED_UIDS, enrolled_cgroup};

const ALLOW: i32 = 0;
/// `-EPERM`.
const DENY: i32 = -1;

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
const SOCK_PACKET: i32 = 10;
const SOCK_TYPE_MASK: i32 = 0xf;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const FMODE_WRITE: u32 = 0x2;
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// Dentry levels walked up from an opened file looking for a protected
/// directory, or from a cgroup looking for the subject's enrolled one
/// (cgroups cannot be enrolled deeper than `MAX_ENROLLED_LEVEL`).
const MAX_WALK: u32 = 130;

#[map(name = "WARDEN_LSM_CFG")]
static LSM_CONFIG: Array<LsmConfig> = Array::pinned(1, 0);

#[map(name = "WARDEN_PROTECTED")]
static PROTECTED: HashMap<InodeKey, u32> = HashMap::pinned(capacity::PROTECTED, 0);

#[map(name = "WARDEN_LSM_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::LSM_EVENTS_BYTES, 0);

/// An enrolled caller: `(MATCH_CGROUP | MATCH_UID, enrolled id, own cgroup id)`.
#[derive(Clone, Copy)]
struct Subject {
    match_kind: u32,
    matched_id: u64,
    cgroup_id: u64,
}

/// The caller as a subject of these programs, with the settings; `None` for
/// everyone else (the agent, non-enrolled tasks, or before the agent filled
/// the settings).
#[inline(always)]
fn subject() -> Option<(Subject, &'static LsmConfig)> {
    let cfg = LSM_CONFIG.get(0)?;
    if cfg.ready == 0 {
        return None;
    }
    // SAFETY: no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cgroup_id == cfg.agent_cgroup_id {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.agent_tgid {
        return None;
    }
    if let Some(id) = enrolled_cgroup(cgroup_id) {
        return Some((
            Subject {
                match_kind: MATCH_CGROUP,
                matched_id: id,
                cgroup_id,
            },
            cfg,
        ));
    }
    let uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: presence only.
    if unsafe { ENROLLED_UIDS.get(uid) }.is_some() {
        return Some((
            Subject {
                match_kind: MATCH_UID,
                matched_id: u64::from(uid),
                cgroup_id,
            },
            cfg,
        ));
    }
    None
}

/// Reports a denial to the agent and gives the hook's verdict. When the ring
/// buffer is full the denial stands; only its report is lost.
#[inline(always)]
fn deny(s: &Subject, kind: u32, arg0: u64, arg1: u64) -> i32 {
    report(s.match_kind, s.matched_id, s.cgroup_id, kind, arg0, arg1);
    DENY
}

/// Puts one denial of the current task in the ring buffer (also used by the
/// connect and sendmsg programs, which are not LSM programs). When the ring
/// buffer is full only the report is lost.
#[inline(always)]
pub(crate) fn report(
    match_kind: u32,
    matched_id: u64,
    cgroup_id: u64,
    kind: u32,
    arg0: u64,
    arg1: u64,
) {
    if let Some(mut entry) = EVENTS.reserve::<LsmEvent>(0) {
        let pid_tgid = bpf_get_current_pid_tgid();
        // SAFETY: no preconditions.
        let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
        entry.write(LsmEvent {
            ts_ns,
            cgroup_id,
            matched_id,
            arg0,
            arg1,
            pid: pid_tgid as u32,
            tgid: (pid_tgid >> 32) as u32,
            uid: bpf_get_current_uid_gid() as u32,
            kind,
            match_kind,
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]),
        });
        entry.submit(0);
    }
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub(crate) fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a fault gives Err.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }.ok()
}

/// The superblock of `inode`: its `s_dev` (kernel encoding) and `s_magic`.
#[inline(always)]
fn inode_sb(inode: *const u8, off: &KernelOffsets) -> Option<(u32, u64)> {
    let sb: *const u8 = read(inode, off.inode_i_sb)?;
    let dev: u32 = read(sb, off.sb_s_dev)?;
    let magic: u64 = read(sb, off.sb_s_magic)?;
    Some((dev, magic))
}

/// The protected inode that `dentry` is or lies below (walking `d_parent`
/// up to the filesystem's root), on the filesystem of device `dev`.
#[inline(always)]
fn protected_ancestor(dentry: *const u8, dev: u32, off: &KernelOffsets) -> Option<u64> {
    let mut d = dentry;
    let mut i = 0;
    while i < MAX_WALK {
        if d.is_null() {
            return None;
        }
        let inode: *const u8 = read(d, off.dentry_d_inode).unwrap_or(core::ptr::null());
        if !inode.is_null() {
            let ino: u64 = read(inode, off.inode_i_ino)?;
            let key = InodeKey { ino, dev, _pad: 0 };
            // SAFETY: presence only.
            if unsafe { PROTECTED.get(key) }.is_some() {
                return Some(ino);
            }
        }
        let parent: *const u8 = read(d, off.dentry_d_parent)?;
        if parent == d {
            return None;
        }
        d = parent;
        i += 1;
    }
    None
}

/// Whether the cgroup whose directory dentry is `dir` is `ancestor` or lies
/// below it (cgroup2: a cgroup's id is its directory's inode number).
#[inline(always)]
fn cgroup_within(dir: *const u8, ancestor: u64, off: &KernelOffsets) -> bool {
    let mut d = dir;
    let mut i = 0;
    while i < MAX_WALK {
        let Some(inode) = read::<*const u8>(d, off.dentry_d_inode) else {
            return false;
        };
        let Some(ino) = read::<u64>(inode, off.inode_i_ino) else {
            return false;
        };
        if ino == ancestor {
            return true;
        }
        let Some(parent) = read::<*const u8>(d, off.dentry_d_parent) else {
            return false;
        };
        if parent == d {
            return false;
        }
        d = parent;
        i += 1;
    }
    false
}

#[lsm(hook = "bpf")]
pub fn warden_lsm_bpf(ctx: LsmContext) -> i32 {
    let Some((s, _)) = subject() else {
        return ALLOW;
    };
    let cmd: i32 = ctx.arg(0);
    deny(&s, lsm_kind::BPF, cmd as u64, 0)
}

#[lsm(hook = "file_open")]
pub fn warden_lsm_file_open(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let file: *const u8 = ctx.arg(0);
    file_open(&s, cfg, file).unwrap_or(ALLOW)
}

#[inline(always)]
fn file_open(s: &Subject, cfg: &LsmConfig, file: *const u8) -> Option<i32> {
    let off = &cfg.off;
    let inode: *const u8 = read(file, off.file_f_inode)?;
    let dentry: *const u8 = read(file, off.file_f_dentry)?;
    let (dev, magic) = inode_sb(inode, off)?;
    if magic == CGROUP2_SUPER_MAGIC {
        let mode: u32 = read(file, off.file_f_mode)?;
        if mode & FMODE_WRITE == 0 {
            return None;
        }
        // A cgroup's control files live in its directory.
        let dir: *const u8 = read(dentry, off.dentry_d_parent)?;
        let dir_inode: *const u8 = read(dir, off.dentry_d_inode)?;
        let cgroup: u64 = read(dir_inode, off.inode_i_ino)?;
        let allowed = if s.match_kind == MATCH_CGROUP {
            cgroup_within(dir, s.matched_id, off) && !cgroup_within(dir, cfg.agent_cgroup_id, off)
        } else {
            !cgroup_within(dir, cfg.agent_cgroup_id, off)
        };
        if allowed {
            return None;
        }
        return Some(deny(s, lsm_kind::CGROUP_WRITE, cgroup, 0));
    }
    let ino = protected_ancestor(dentry, dev, off)?;
    Some(deny(s, lsm_kind::PROTECTED_FILE, u64::from(dev), ino))
}

#[lsm(hook = "task_alloc")]
pub fn warden_lsm_task_alloc(ctx: LsmContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 {
        return ALLOW;
    }
    let Some((s, _)) = subject() else {
        return ALLOW;
    };
    deny(&s, lsm_kind::CLONE_INTO_CGROUP, flags, 0)
}

#[lsm(hook = "socket_setsockopt")]
pub fn warden_lsm_setsockopt(ctx: LsmContext) -> i32 {
    let level: i32 = ctx.arg(1);
    let optname: i32 = ctx.arg(2);
    if level != SOL_SOCKET || optname != SO_MARK {
        return ALLOW;
    }
    let Some((s, _)) = subject() else {
        return ALLOW;
    };
    deny(&s, lsm_kind::SO_MARK, level as u64, optname as u64)
}

#[lsm(hook = "socket_create")]
pub fn warden_lsm_socket_create(ctx: LsmContext) -> i32 {
    let family: i32 = ctx.arg(0);
    let ty: i32 = ctx.arg(1);
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return ALLOW;
    }
    let base = ty & SOCK_TYPE_MASK;
    let raw = family == AF_PACKET
        || ((family == AF_INET || family == AF_INET6) && (base == SOCK_RAW || base == SOCK_PACKET));
    if !raw {
        return ALLOW;
    }
    let Some((s, _)) = subject() else {
        return ALLOW;
    };
    deny(&s, lsm_kind::RAW_SOCKET, family as u64, ty as u64)
}

/// The thread-group id of `task`.
#[inline(always)]
fn task_tgid(task: *const u8, off: &KernelOffsets) -> Option<u32> {
    read::<i32>(task, off.task_tgid).map(|t| t as u32)
}

#[lsm(hook = "ptrace_access_check")]
pub fn warden_lsm_ptrace(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let child: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    match task_tgid(child, &cfg.off) {
        Some(t) if t == cfg.agent_tgid => deny(&s, lsm_kind::PTRACE, u64::from(t), u64::from(mode)),
        _ => ALLOW,
    }
}

#[lsm(hook = "task_kill")]
pub fn warden_lsm_task_kill(ctx: LsmContext) -> i32 {
    let sig: i32 = ctx.arg(2);
    if sig == 0 {
        return ALLOW;
    }
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let target: *const u8 = ctx.arg(0);
    match task_tgid(target, &cfg.off) {
        Some(t) if t == cfg.agent_tgid => deny(&s, lsm_kind::SIGNAL, u64::from(t), sig as u64),
        _ => ALLOW,
    }
}

/// Denies a change to `dentry` when it is, or lies below, a protected inode.
#[inline(always)]
fn protect_dentry(s: &Subject, cfg: &LsmConfig, dentry: *const u8) -> Option<i32> {
    let off = &cfg.off;
    let inode: *const u8 = read(dentry, off.dentry_d_inode)?;
    let (dev, _) = inode_sb(inode, off)?;
    let ino = protected_ancestor(dentry, dev, off)?;
    Some(deny(s, lsm_kind::PROTECTED_CHANGE, u64::from(dev), ino))
}

#[lsm(hook = "inode_unlink")]
pub fn warden_lsm_inode_unlink(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let dentry: *const u8 = ctx.arg(1);
    protect_dentry(&s, cfg, dentry).unwrap_or(ALLOW)
}

#[lsm(hook = "inode_rename")]
pub fn warden_lsm_inode_rename(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let old: *const u8 = ctx.arg(1);
    if let Some(v) = protect_dentry(&s, cfg, old) {
        return v;
    }
    // Replacing a protected file by renaming over it.
    let new: *const u8 = ctx.arg(3);
    protect_dentry(&s, cfg, new).unwrap_or(ALLOW)
}

#[lsm(hook = "inode_link")]
pub fn warden_lsm_inode_link(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    let old: *const u8 = ctx.arg(0);
    protect_dentry(&s, cfg, old).unwrap_or(ALLOW)
}

#[lsm(hook = "task_fix_setuid")]
pub fn warden_lsm_setuid(ctx: LsmContext) -> i32 {
    let Some((s, cfg)) = subject() else {
        return ALLOW;
    };
    if s.match_kind != MATCH_UID {
        return ALLOW;
    }
    let new: *const u8 = ctx.arg(0);
    let Some(uid) = read::<u32>(new, cfg.off.cred_uid) else {
        return ALLOW;
    };
    // SAFETY: presence only.
    if unsafe { ENROLLED_UIDS.get(uid) }.is_some() {
        return ALLOW;
    }
    deny(&s, lsm_kind::SETUID, u64::from(uid), 0)
}
