//! Types shared by Warden's eBPF programs (`agent-ebpf`) and the userspace agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, because the
//! same bytes are read by the kernel-side programs and by userspace through map
//! syscalls. Addresses are always stored in IPv6 form, network byte order
//! (`::ffff:a.b.c.d` for IPv4), and ports in host byte order, so that the key a
//! program writes and the key the proxy computes from `accept()` are identical.
#![no_std]

#[cfg(feature = "pg")]
pub mod pg_parse_error;

/// Version of the map and program layout. It is part of the pin path
/// (`<bpf_pin_dir>/v<LAYOUT_VERSION>`), so an agent never adopts maps whose
/// layout it does not understand. (The `layout-next` feature, for the
/// package upgrade test only, makes it one more.)
pub const LAYOUT_VERSION: u32 = 2 + cfg!(feature = "layout-next") as u32;

/// Deepest cgroup level (the root is level 0, `/a` level 1) at which a cgroup
/// can be enrolled. The kernel side checks every ancestor of the caller from
/// this level up to level 1, so a caller at any depth below an enrolled cgroup
/// is covered; deeper enrolled cgroups are refused by the agent. systemd units
/// cannot be this deep (a unit name, slices included, has at most 255 bytes).
pub const MAX_ENROLLED_LEVEL: i32 = 127;

/// Redirected connects one enrolled account (an enrolled cgroup or uid) may
/// make per second by default (`[agent] max_connects_per_account_per_sec`,
/// `AgentConfig::connects_per_sec`); beyond it `connect()` fails with EPERM, reported as
/// [`lsm_kind::CONNECT_RATE`]. It bounds how fast one account can write
/// the kernel's connection records (`WARDEN_PENDING`, `WARDEN_ORIG_DST`,
/// LRU maps of 65,536): pushing another account's record out takes 65,536
/// inserts while that record waits for the proxy's accept, i.e. a wait of
/// more than 65,536 / this many seconds.
pub const CONNECTS_PER_ACCOUNT_PER_SEC: u32 = 10_000;

/// Value of `WARDEN_CONNECT_RATE` (key: `match_kind << 32 ^ matched_id`,
/// see the connect programs): the current one-second window of an
/// account's redirected connects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// `bpf_ktime_get_ns()` at the window's start.
    pub start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

/// `TargetValue::flags`: when the agent is down, let connections to this target
/// through untouched instead of refusing them.
pub const TARGET_FAIL_OPEN: u32 = 1;

/// `ConnMeta::match_kind`: the caller was enrolled through its cgroup (or an ancestor).
pub const MATCH_CGROUP: u32 = 1;
/// `ConnMeta::match_kind`: the caller was enrolled through its uid.
pub const MATCH_UID: u32 = 2;

/// Length of `comm` as the kernel keeps it (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Map names, shared so that the loader and the programs cannot disagree.
pub mod maps {
    pub const CONFIG: &str = "WARDEN_CONFIG";
    pub const ENROLLED_CGROUPS: &str = "WARDEN_ENR_CGROUPS";
    pub const ENROLLED_UIDS: &str = "WARDEN_ENR_UIDS";
    pub const TARGETS: &str = "WARDEN_TARGETS";
    pub const PENDING: &str = "WARDEN_PENDING";
    pub const ORIG_DST: &str = "WARDEN_ORIG_DST";
    pub const UNIT_PATHS: &str = "WARDEN_UNIT_PATHS";
    /// Per-account windows of redirected connects ([`super::RateWindow`]).
    pub const CONNECT_RATE: &str = "WARDEN_CONNECT_RATE";
    pub const MKDIR_FORMAT: &str = "WARDEN_MKDIR_FMT";
    /// One [`ProcRecord`] per live process (tgid): the file it exec'ed and
    /// when. A hash map that never evicts, sized by the agent to the most
    /// processes the kernel allows; entries go when their process exits.
    pub const PROCS: &str = "WARDEN_PROCS";
    /// The struct offsets the exec, fork and exit programs read ([`TaskOffsets`]).
    pub const TASK_OFFSETS: &str = "WARDEN_TASK_OFF";
    pub const LSM_CONFIG: &str = "WARDEN_LSM_CFG";
    pub const PROTECTED: &str = "WARDEN_PROTECTED";
    pub const LSM_EVENTS: &str = "WARDEN_LSM_EVENTS";
    /// The in-kernel relay of `tcp` targets (not pinned).
    pub const RELAY_PEERS: &str = "WARDEN_RELAY_PEERS";
    pub const RELAY_SOCKS: &str = "WARDEN_RELAY_SOCKS";
}

/// Program names (the Rust function names in `agent-ebpf`).
pub mod programs {
    pub const CONNECT4: &str = "warden_connect4";
    pub const CONNECT6: &str = "warden_connect6";
    pub const SOCK_OPS: &str = "warden_sock_ops";
    pub const CGROUP_MKDIR: &str = "warden_cgroup_mkdir";
    /// Raw tracepoints `sched_process_exec`, `sched_process_fork` and
    /// `sched_process_exit`: each process's [`super::ProcRecord`] (the file it
    /// runs as exec'ed, not as `/proc/<pid>/exe` says later:
    /// `prctl(PR_SET_MM)` can change that without an exec).
    pub const EXEC_FILE: &str = "warden_exec_file";
    pub const FORK_FILE: &str = "warden_fork_file";
    pub const PROC_EXIT: &str = "warden_proc_exit";
    /// `cgroup/sendmsg4` and `cgroup/sendmsg6`: datagrams to targets.
    pub const SENDMSG4: &str = "warden_sendmsg4";
    pub const SENDMSG6: &str = "warden_sendmsg6";
    /// `sk_skb/stream_verdict` of the in-kernel `tcp` relay.
    pub const RELAY_VERDICT: &str = "warden_relay_verdict";
    /// BPF LSM programs and the hook each attaches to.
    pub const LSM: [(&str, &str); 11] = [
        ("warden_lsm_bpf", "bpf"),
        ("warden_lsm_file_open", "file_open"),
        ("warden_lsm_setsockopt", "socket_setsockopt"),
        ("warden_lsm_socket_create", "socket_create"),
        ("warden_lsm_ptrace", "ptrace_access_check"),
        ("warden_lsm_task_alloc", "task_alloc"),
        ("warden_lsm_task_kill", "task_kill"),
        ("warden_lsm_inode_unlink", "inode_unlink"),
        ("warden_lsm_inode_rename", "inode_rename"),
        ("warden_lsm_inode_link", "inode_link"),
        ("warden_lsm_setuid", "task_fix_setuid"),
    ];
}

/// Capacity of the maps; the LRU maps evict their oldest entries when full.
pub mod capacity {
    /// `WARDEN_PROCS` as compiled; the agent sets it at load to the most
    /// processes the kernel allows (`kernel.pid_max`, `kernel.threads-max`).
    pub const PROCS: u32 = 65536;
    pub const ENROLLED_CGROUPS: u32 = 4096;
    pub const ENROLLED_UIDS: u32 = 4096;
    pub const TARGETS: u32 = 4096;
    pub const PENDING: u32 = 65536;
    pub const ORIG_DST: u32 = 65536;
    pub const UNIT_PATHS: u32 = 1024;
    /// Accounts with a connect window (LRU: an idle account's window may go).
    pub const CONNECT_RATE: u32 = 8192;
    pub const PROTECTED: u32 = 1024;
    /// Sockets in the in-kernel relay (two per relayed connection).
    pub const RELAY_SOCKETS: u32 = 65536;
    /// Bytes of the LSM denial ring buffer (a power of two, page multiple).
    pub const LSM_EVENTS_BYTES: u32 = 256 * 1024;
}

/// Longest cgroup2 path (with its NUL) of an enrolled unit that the
/// `cgroup_mkdir` program can match; longer ones are re-resolved by the agent
/// only (once a second).
pub const UNIT_PATH_LEN: usize = 128;

/// Set in an `ENROLLED_CGROUPS` value written by the `cgroup_mkdir` program
/// (not by the agent): the agent keeps such an entry until its own
/// resolution has caught up.
pub const TAG_FROM_MKDIR: u32 = 1 << 31;

/// Key of `UNIT_PATHS`: the cgroup2 path of an enrolled unit as the
/// `cgroup:cgroup_mkdir` tracepoint reports it (`/system.slice/x.service`),
/// NUL-padded. Value: the account tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitPathKey {
    pub path: [u8; UNIT_PATH_LEN],
}

/// Offsets of the `cgroup:cgroup_mkdir` tracepoint's fields, read by the agent
/// from tracefs (`events/cgroup/cgroup_mkdir/format`); `path` is a
/// `__data_loc` word. All zero: the program does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MkdirFormat {
    pub root_off: u32,
    pub id_off: u32,
    pub path_off: u32,
    pub _pad: u32,
}

/// Single slot of agent settings read by every program (array map, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// IPv4 listen address of the proxy, in IPv4-mapped IPv6 form.
    pub proxy_addr4: [u8; 16],
    /// IPv6 listen address of the proxy (`::1` by default); all zero when the
    /// proxy has no IPv6 listener.
    pub proxy_addr6: [u8; 16],
    /// Proxy port, host byte order.
    pub proxy_port: u16,
    pub _pad0: u16,
    /// SO_MARK carried by the agent's own upstream sockets; never redirected.
    pub mark: u32,
    /// cgroup id (cgroup2 inode) of the agent; sockets created there are never redirected.
    pub agent_cgroup_id: u64,
    /// `bpf_ktime_get_ns()` deadline until which the agent counts as alive. The
    /// agent pushes it forward every second; targets marked fail-open are passed
    /// through once it is in the past.
    pub alive_until_ns: u64,
    /// Non-zero once userspace filled this slot; until then nothing is redirected.
    pub ready: u32,
    /// Redirected connects one account may make per second (0: the
    /// default, [`CONNECTS_PER_ACCOUNT_PER_SEC`]).
    pub connects_per_sec: u32,
}

/// Offsets (bytes) of the kernel struct fields the LSM programs read, taken
/// by the agent from the running kernel's BTF (`/sys/kernel/btf/vmlinux`),
/// so no struct layout is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    /// `file.f_path.dentry`.
    pub file_f_dentry: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_inode: u32,
    pub task_tgid: u32,
    /// `cred.uid` (a `kuid_t`, its `val`).
    pub cred_uid: u32,
}

/// Offsets (bytes, from the running kernel's BTF) read by the raw
/// tracepoint programs that record the file each process exec'ed, and by
/// the connect programs' walk up the caller's user namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `linux_binprm.file`.
    pub bprm_file: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    /// `task_struct.cred` (the credentials `bpf_get_current_uid_gid` reads).
    pub task_cred: u32,
    pub cred_user_ns: u32,
    pub userns_level: u32,
    /// `user_namespace.owner` (a `kuid_t`: the uid that created it).
    pub userns_owner: u32,
    pub userns_parent: u32,
    /// Non-zero once filled.
    pub ready: u32,
    /// Non-zero once the agent has recorded every process that existed
    /// before the programs were attached ([`PROC_PREEXISTING`]); from then
    /// on a process forked by one without a record gets none either (the
    /// proxy refuses pinned callers without a record).
    pub seeded: u32,
    /// `task_struct.signal` and `signal_struct.live` (an `atomic_t`: live
    /// threads of the process; 0 once its last thread is exiting).
    pub task_signal: u32,
    pub signal_live: u32,
}

/// `ProcRecord::flags`: `ino`/`dev` are the file the process exec'ed (or
/// its parent's, inherited at fork).
pub const PROC_FILE: u32 = 1;
/// `ProcRecord::flags`: the process existed before Warden first recorded
/// processes (recorded from /proc at that time): what it exec'ed is not
/// known, and it is checked as before.
pub const PROC_PREEXISTING: u32 = 2;

/// Value of `WARDEN_PROCS` (key: tgid): what the kernel saw the process
/// run.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcRecord {
    /// `bpf_ktime_get_boot_ns()` at its last exec (the clock of
    /// `ConnMeta::ts_ns`); inherited at fork; 0 when unknown.
    pub exec_ns: u64,
    pub ino: u64,
    /// Device in the kernel's encoding (`sb->s_dev`).
    pub dev: u32,
    /// [`PROC_FILE`], [`PROC_PREEXISTING`].
    pub flags: u32,
}

/// Single slot of the LSM programs' settings (array map, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmConfig {
    /// cgroup id of the agent: its processes are never subjects, and
    /// enrolled workloads may not write to its cgroup files.
    pub agent_cgroup_id: u64,
    /// Process id of the agent (ptrace and signals to it are denied).
    pub agent_tgid: u32,
    /// Non-zero once userspace filled this slot; until then nothing is denied.
    pub ready: u32,
    pub off: KernelOffsets,
    pub _pad: u32,
}

/// Key of the protected-inodes map: an inode as the kernel names it
/// (`sb->s_dev`, in the kernel's `MKDEV` encoding, and `i_ino`). Opening it
/// or anything below it (a directory) is denied to enrolled workloads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// What an enrolled workload was denied (`LsmEvent::kind`).
pub mod lsm_kind {
    /// The `bpf()` syscall; `arg0` = command.
    pub const BPF: u32 = 1;
    /// Opening a cgroup2 file for write outside the caller's enrolled
    /// subtree (or in the agent's cgroup); `arg0` = the file's cgroup id.
    pub const CGROUP_WRITE: u32 = 2;
    /// `clone3(CLONE_INTO_CGROUP)`; `arg0` = clone flags.
    pub const CLONE_INTO_CGROUP: u32 = 3;
    /// `setsockopt(SOL_SOCKET, SO_MARK)`; `arg0` = level, `arg1` = option.
    pub const SO_MARK: u32 = 4;
    /// A raw or packet socket; `arg0` = family, `arg1` = type.
    pub const RAW_SOCKET: u32 = 5;
    /// ptrace access to the agent; `arg0` = its pid, `arg1` = mode.
    pub const PTRACE: u32 = 6;
    /// Opening a protected file; `arg0` = dev, `arg1` = ino of the match.
    pub const PROTECTED_FILE: u32 = 7;
    /// A signal to the agent; `arg0` = its pid, `arg1` = signal.
    pub const SIGNAL: u32 = 8;
    /// Unlinking, renaming or linking a protected file; as `PROTECTED_FILE`.
    pub const PROTECTED_CHANGE: u32 = 9;
    /// A uid-enrolled process changing its uid to one that is not enrolled;
    /// `arg0` = the new uid.
    pub const SETUID: u32 = 10;
    /// Not an LSM denial: a datagram (`connect()` or addressed `sendmsg()` on
    /// a non-stream socket) from an enrolled workload to a protected target;
    /// `arg0` = target id, `arg1` = socket type << 32 | family << 16 | port.
    pub const DATAGRAM_TO_TARGET: u32 = 11;
    /// Not an LSM denial: a redirected connect refused because the caller's
    /// account already made its limit of connects this second
    /// (`AgentConfig::connects_per_sec`); `arg0` = target id, `arg1` = the
    /// limit.
    pub const CONNECT_RATE: u32 = 12;

    /// The name audit events give a kind.
    pub const fn name(kind: u32) -> &'static str {
        match kind {
            BPF => "bpf",
            CGROUP_WRITE => "cgroup_write",
            CLONE_INTO_CGROUP => "clone_into_cgroup",
            SO_MARK => "so_mark",
            RAW_SOCKET => "raw_socket",
            PTRACE => "ptrace",
            PROTECTED_FILE => "protected_file",
            SIGNAL => "signal",
            PROTECTED_CHANGE => "protected_change",
            SETUID => "setuid",
            DATAGRAM_TO_TARGET => "datagram_to_target",
            CONNECT_RATE => "connect_rate",
            _ => "unknown",
        }
    }
}

/// One denial by an LSM program, sent to the agent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmEvent {
    /// `bpf_ktime_get_boot_ns()` at the denial.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// The enrolled cgroup id (the caller's or an ancestor's) or the uid.
    pub matched_id: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    /// One of [`lsm_kind`].
    pub kind: u32,
    /// `MATCH_CGROUP` or `MATCH_UID`.
    pub match_kind: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// Key of the protected-targets map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Value of the protected-targets map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetValue {
    pub flags: u32,
    /// Index of the target in the agent's configuration (informational).
    pub target_id: u32,
}

/// Key of the original-destination map: the connection as the proxy sees it
/// (`src` = client, `dst` = proxy listener).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub _pad: u32,
}

/// What the kernel saw when an enrolled workload called `connect()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnMeta {
    /// Destination the workload asked for (IPv6 form, network byte order).
    pub orig_addr: [u8; 16],
    /// Destination port, host byte order.
    pub orig_port: u16,
    /// Address family of the workload's socket (AF_INET = 2, AF_INET6 = 10).
    pub family: u16,
    /// `MATCH_CGROUP` or `MATCH_UID`.
    pub match_kind: u32,
    pub tgid: u32,
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup id of the calling task.
    pub cgroup_id: u64,
    /// The enrolled cgroup id (the caller's or an ancestor's) or the enrolled uid.
    pub matched_id: u64,
    /// `bpf_ktime_get_boot_ns()` at connect time (CLOCK_BOOTTIME, the clock
    /// of `/proc/<pid>/stat`'s start time).
    pub ts_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// `TargetValue::target_id` of the destination.
    pub target_id: u32,
    pub _pad: u32,
}

/// Converts an IPv4 address (network-order octets) to its IPv4-mapped IPv6 form.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// True when `addr` is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub const fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

// SAFETY (for the `Pod` impls below): every type is `#[repr(C)]`, `Copy`, made
// only of integers and byte arrays, and has no implicit padding (checked by the
// size asserts), so any bit pattern is a valid value.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for AgentConfig {}
    unsafe impl aya::Pod for TargetKey {}
    unsafe impl aya::Pod for TargetValue {}
    unsafe impl aya::Pod for TupleKey {}
    unsafe impl aya::Pod for ConnMeta {}
    unsafe impl aya::Pod for UnitPathKey {}
    unsafe impl aya::Pod for MkdirFormat {}
    unsafe impl aya::Pod for LsmConfig {}
    unsafe impl aya::Pod for TaskOffsets {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for LsmEvent {}
    unsafe impl aya::Pod for ProcRecord {}
    unsafe impl aya::Pod for RateWindow {}
}

const _: () = assert!(core::mem::size_of::<AgentConfig>() == 64);
const _: () = assert!(core::mem::size_of::<TargetKey>() == 24);
const _: () = assert!(core::mem::size_of::<TargetValue>() == 8);
const _: () = assert!(core::mem::size_of::<TupleKey>() == 40);
const _: () = assert!(core::mem::size_of::<ConnMeta>() == 88);
const _: () = assert!(core::mem::size_of::<UnitPathKey>() == UNIT_PATH_LEN);
const _: () = assert!(core::mem::size_of::<MkdirFormat>() == 16);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 44);
const _: () = assert!(core::mem::size_of::<LsmConfig>() == 64);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 64);
const _: () = assert!(core::mem::size_of::<ProcRecord>() == 24);
const _: () = assert!(core::mem::size_of::<RateWindow>() == 16);
const _: () = assert!(core::mem::size_of::<LsmEvent>() == 80);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(
            size_of::<AgentConfig>(),
            16 + 16 + 2 + 2 + 4 + 8 + 8 + 4 + 4
        );
        assert_eq!(size_of::<TargetKey>(), 16 + 2 + 6);
        assert_eq!(size_of::<TupleKey>(), 16 + 16 + 2 + 2 + 4);
        assert_eq!(
            size_of::<ConnMeta>(),
            16 + 2 + 2 + 4 + 4 * 4 + 8 + 8 + 8 + COMM_LEN + 4 + 4
        );
        assert_eq!(offset_of!(ConnMeta, cgroup_id) % 8, 0);
        assert_eq!(offset_of!(AgentConfig, agent_cgroup_id) % 8, 0);
        assert_eq!(align_of::<ConnMeta>(), 8);
        // agent/src/ebpf/denials.rs reads LsmEvent field by field.
        assert_eq!(offset_of!(LsmEvent, pid), 40);
        assert_eq!(offset_of!(LsmEvent, match_kind), 56);
        assert_eq!(offset_of!(LsmEvent, comm), 64);
    }

    #[test]
    fn v4_mapping_round_trips() {
        let m = v4_mapped([127, 0, 0, 2]);
        assert!(is_v4_mapped(&m));
        assert_eq!(&m[12..], &[127, 0, 0, 2]);
        let mut loopback6 = [0u8; 16];
        loopback6[15] = 1;
        assert!(!is_v4_mapped(&loopback6));
    }
}
