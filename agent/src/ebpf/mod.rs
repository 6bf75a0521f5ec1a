//! The kernel side as seen from userspace: loading the embedded eBPF object,
//! pinning maps and links under `<bpf_pin_dir>/v<layout>`, attaching at the
//! configured cgroup, re-adopting pins left by a previous run, and the map
//! accesses the rest of the agent needs (targets, enrollments, original
//! destinations, process records, the agent-config slot). No other module
//! touches aya.

pub mod btf;
pub mod cgroup;
pub mod denials;
pub mod keys;
pub mod lsm;
pub mod relay;

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, RingBuf, SockHash};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError, RawTracePoint, SkSkb, SockOps, TracePoint,
};
use aya::{Ebpf, EbpfLoader};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
use serde::Serialize;
use warden_common::{
    AgentConfig, ConnMeta, InodeKey, LAYOUT_VERSION, LsmConfig, MkdirFormat, ProcRecord,
    TAG_FROM_MKDIR, TargetKey, TargetValue, TaskOffsets, TupleKey, UNIT_PATH_LEN, UnitPathKey,
    maps, programs,
};

/// The eBPF object built from `agent-ebpf` by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/warden"));

/// How long the kernel side keeps counting the agent as alive after the last
/// heartbeat. Once it lapses, enrolled connections to fail-closed targets
/// fail with EPERM and fail-open ones pass through. (A dead agent is noticed
/// at once anyway: its listener, which carries its mark, is gone.)
pub const HEARTBEAT_GRACE_NS: u64 = 1_000_000_000;

/// How often the agent pushes the deadline forward.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

const LINK_PREFIX: &str = "link_";

/// Attach flags for cgroup links. `BPF_LINK_CREATE` refuses any flag for
/// cgroup attach types: a link attachment always behaves as
/// `BPF_F_ALLOW_MULTI`, so Warden's programs coexist with others (systemd's,
/// a previous Warden's during a restart) at the same cgroup.
const LINK_ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("warden must run as root (it loads eBPF programs and attaches them to cgroups)")]
    NotRoot,
    #[error("no cgroup v2 hierarchy is mounted (none of type cgroup2 in /proc/self/mounts)")]
    NoCgroup2,
    #[error("cgroup {path} does not exist under the cgroup2 mount {mount}")]
    NoSuchCgroup { path: String, mount: PathBuf },
    #[error(
        "bpf_pin_dir {path} is not on a bpf filesystem and bpffs could not be mounted: {detail}"
    )]
    NoBpffs { path: PathBuf, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("loading the eBPF object failed (does this kernel have BPF and BTF?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("eBPF object is missing {what} {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("pinning {what}: {detail}")]
    Pin { what: String, detail: String },
}

/// What the datapath needs to know about the agent.
#[derive(Debug, Clone)]
pub struct DatapathOptions {
    /// `agent.bpf_pin_dir`; the versioned directory is created below it.
    pub pin_base: PathBuf,
    /// cgroup2 mount point.
    pub cgroup_mount: PathBuf,
    /// cgroup2 path to attach at (`/` for the root).
    pub attach_cgroup: String,
    pub proxy_addr4: SocketAddr,
    pub proxy_addr6: Option<SocketAddr>,
    pub mark: u32,
    pub agent_cgroup_id: u64,
    /// Files and directories enrolled workloads may not open, move or remove
    /// (see [`lsm::protected_paths`]); recorded by device and inode at attach.
    pub protected: Vec<PathBuf>,
    /// `[agent] max_connects_per_account_per_sec`.
    pub connects_per_sec: u32,
}

/// One attached program, for `warden status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AttachedProgram {
    pub program: String,
    pub program_id: u32,
    pub link_id: u32,
    pub pin: PathBuf,
}

/// The loaded and attached datapath. Dropping it leaves the pinned links in
/// place (fail closed across restarts); [`Datapath::detach`] removes them.
pub struct Datapath {
    _ebpf: Ebpf,
    pin_dir: PathBuf,
    attach_dir: PathBuf,
    attached: Vec<AttachedProgram>,
    links: Vec<PinnedLink>,
    agent_config: Mutex<(Array<MapData, AgentConfig>, AgentConfig)>,
    cgroups: Mutex<BpfHashMap<MapData, u64, u32>>,
    uids: Mutex<BpfHashMap<MapData, u32, u32>>,
    targets: Mutex<BpfHashMap<MapData, TargetKey, TargetValue>>,
    orig_dst: Mutex<BpfHashMap<MapData, TupleKey, ConnMeta>>,
    unit_paths: Mutex<BpfHashMap<MapData, UnitPathKey, u32>>,
    mkdir_format: Mutex<Array<MapData, MkdirFormat>>,
    /// What each process runs (raw tracepoints), see [`Datapath::proc_record`].
    procs: Mutex<BpfHashMap<MapData, u32, ProcRecord>>,
    /// The capacity `WARDEN_PROCS` has (set at its creation, possibly by an
    /// earlier run).
    procs_capacity: u32,
    task_offsets: Mutex<Array<MapData, TaskOffsets>>,
    /// Whether every process is recorded (the exec, fork and exit programs
    /// are attached and the processes that predate them were seeded).
    procs_tracked: bool,
    lsm_config: Mutex<Array<MapData, LsmConfig>>,
    protected_inodes: Mutex<BpfHashMap<MapData, InodeKey, u32>>,
    /// Denials of the LSM programs, until [`Datapath::take_lsm_events`].
    lsm_events: Mutex<Option<RingBuf<MapData>>>,
    agent_cgroup_id: u64,
    protected: Vec<PathBuf>,
    /// Whether the BPF LSM programs are attached (self-protection).
    lsm_attached: bool,
    /// Why they are not, when they are not.
    lsm_error: Option<String>,
    /// Entries the `cgroup_mkdir` program added that the agent's resolution
    /// did not include at the last sync (removed at the next one if still
    /// not included: the cgroup was created and removed in between).
    mkdir_unadopted: Mutex<Vec<u64>>,
    /// The in-kernel relay's maps until [`Datapath::attach`] attaches the
    /// verdict program to them.
    relay_maps: Option<(SockHash<MapData, u64>, SockHash<MapData, u64>)>,
    /// The in-kernel relay of `tcp` targets, when its program is attached.
    relay: Option<relay::KernelRelay>,
    /// Why it is not (the splice relay is used instead).
    relay_error: Option<String>,
}

/// Loads program `$name` of type `$ty` from `$dp`'s object, attaches it with
/// `|prog| attach-expression` (giving the link id), and gives
/// `($name, link, program id)` with the link taken over as an [`FdLink`] to
/// pin. A macro: every program type has its own attach signature and link
/// type.
macro_rules! load_and_attach {
    ($dp:expr, $ty:ty, $name:expr, |$p:ident| $attach:expr) => {{
        let name: &'static str = $name;
        let prog: &mut $ty = $dp
            ._ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing {
                what: "program",
                name,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        prog.load()
            .map_err(|source| DatapathError::Program { name, source })?;
        let prog_id = prog
            .info()
            .map_err(|source| DatapathError::Program { name, source })?
            .id();
        let $p = &mut *prog;
        let id = $attach.map_err(|source| DatapathError::Program { name, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| DatapathError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| DatapathError::Pin {
            what: format!("link of {name}"),
            detail: e.to_string(),
        })?;
        (name, link, prog_id)
    }};
}

impl Datapath {
    /// Loads the object, adopting maps pinned by a previous run (same layout
    /// version) or pinning fresh ones. Nothing is attached yet: fill the maps,
    /// then call [`Datapath::attach`].
    pub fn load(opts: &DatapathOptions) -> Result<Self, DatapathError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(DatapathError::NotRoot);
        }
        let attach_dir = cgroup::cgroup_dir(&opts.cgroup_mount, &opts.attach_cgroup);
        if !attach_dir.is_dir() {
            return Err(DatapathError::NoSuchCgroup {
                path: opts.attach_cgroup.clone(),
                mount: opts.cgroup_mount.clone(),
            });
        }
        ensure_bpffs(&opts.pin_base)?;
        let pin_dir = versioned_dir(&opts.pin_base);
        fs::create_dir_all(&pin_dir).map_err(|source| DatapathError::Io {
            what: format!("creating pin directory {}", pin_dir.display()),
            source,
        })?;
        let want_procs = procs_capacity();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .map_max_entries(maps::PROCS, want_procs)
            .load(EBPF_OBJECT)?;

        let config_map: Array<MapData, AgentConfig> = take_map(&mut ebpf, maps::CONFIG)?;
        let cgroups = take_map(&mut ebpf, maps::ENROLLED_CGROUPS)?;
        let uids = take_map(&mut ebpf, maps::ENROLLED_UIDS)?;
        let targets = take_map(&mut ebpf, maps::TARGETS)?;
        let orig_dst = take_map(&mut ebpf, maps::ORIG_DST)?;
        let unit_paths = take_map(&mut ebpf, maps::UNIT_PATHS)?;
        let mkdir_format = take_map(&mut ebpf, maps::MKDIR_FORMAT)?;
        let procs: BpfHashMap<MapData, u32, ProcRecord> = take_map(&mut ebpf, maps::PROCS)?;
        // An adopted map keeps the capacity it was created with.
        let procs_capacity = aya::maps::MapInfo::from_pin(pin_dir.join(maps::PROCS))
            .map(|i| i.max_entries())
            .unwrap_or(want_procs);
        if procs_capacity < want_procs {
            tracing::warn!(
                capacity = procs_capacity,
                wanted = want_procs,
                "the pinned process records map is smaller than kernel.pid_max/kernel.threads-max now allow: once it is full, new processes have no record and pinned accounts refuse them (remove the pins under bpf_pin_dir and restart to resize)"
            );
        }
        let task_offsets = take_map(&mut ebpf, maps::TASK_OFFSETS)?;
        let lsm_config = take_map(&mut ebpf, maps::LSM_CONFIG)?;
        let protected_inodes = take_map(&mut ebpf, maps::PROTECTED)?;
        let lsm_events = take_map(&mut ebpf, maps::LSM_EVENTS)?;
        let relay_maps = (
            take_map(&mut ebpf, maps::RELAY_PEERS)?,
            take_map(&mut ebpf, maps::RELAY_SOCKS)?,
        );

        let cfg = AgentConfig {
            proxy_addr4: keys::addr_bytes(opts.proxy_addr4.ip()),
            proxy_addr6: opts
                .proxy_addr6
                .map(|a| keys::addr_bytes(a.ip()))
                .unwrap_or([0; 16]),
            proxy_port: opts.proxy_addr4.port(),
            _pad0: 0,
            mark: opts.mark,
            agent_cgroup_id: opts.agent_cgroup_id,
            alive_until_ns: 0,
            ready: 0,
            connects_per_sec: opts.connects_per_sec,
        };
        Ok(Self {
            _ebpf: ebpf,
            pin_dir,
            attach_dir,
            attached: Vec::new(),
            links: Vec::new(),
            agent_config: Mutex::new((config_map, cfg)),
            cgroups: Mutex::new(cgroups),
            uids: Mutex::new(uids),
            targets: Mutex::new(targets),
            orig_dst: Mutex::new(orig_dst),
            unit_paths: Mutex::new(unit_paths),
            mkdir_format: Mutex::new(mkdir_format),
            procs: Mutex::new(procs),
            procs_capacity,
            task_offsets: Mutex::new(task_offsets),
            procs_tracked: false,
            lsm_config: Mutex::new(lsm_config),
            protected_inodes: Mutex::new(protected_inodes),
            lsm_events: Mutex::new(Some(lsm_events)),
            agent_cgroup_id: opts.agent_cgroup_id,
            protected: opts.protected.clone(),
            lsm_attached: false,
            lsm_error: None,
            mkdir_unadopted: Mutex::new(Vec::new()),
            relay_maps: Some(relay_maps),
            relay: None,
            relay_error: None,
        })
    }

    /// Publishes the agent settings to the kernel side and marks it ready and
    /// alive; call after the maps hold the targets and enrollments.
    pub fn publish_config(&self) -> Result<(), DatapathError> {
        self.update_config(|c| {
            c.ready = 1;
            c.alive_until_ns = monotonic_ns().saturating_add(HEARTBEAT_GRACE_NS);
        })
    }

    /// Pushes the liveness deadline forward (called every second).
    pub fn heartbeat(&self) -> Result<(), DatapathError> {
        self.update_config(|c| {
            c.alive_until_ns = monotonic_ns().saturating_add(HEARTBEAT_GRACE_NS);
        })
    }

    /// Marks the agent down at once (graceful stop): fail-open targets pass
    /// through, fail-closed ones fail with EPERM.
    pub fn mark_down(&self) -> Result<(), DatapathError> {
        self.update_config(|c| c.alive_until_ns = 0)
    }

    fn update_config(&self, f: impl FnOnce(&mut AgentConfig)) -> Result<(), DatapathError> {
        let mut guard = lock(&self.agent_config);
        let (map, cfg) = &mut *guard;
        f(cfg);
        map.set(0, *cfg, 0).map_err(|source| DatapathError::Map {
            name: maps::CONFIG,
            source,
        })
    }

    /// Attaches the connect and sock_ops programs at the configured cgroup,
    /// and the cgroup_mkdir tracepoint program when tracefs allows, and pins their
    /// links, replacing the links a previous run pinned. The new programs are
    /// attached before the old links are released, so coverage has no gap.
    pub fn attach(&mut self) -> Result<(), DatapathError> {
        let cgroup = File::open(&self.attach_dir).map_err(|source| DatapathError::Io {
            what: format!("opening cgroup {}", self.attach_dir.display()),
            source,
        })?;
        // Leftovers of an interrupted start.
        remove_matching(&self.pin_dir, |n| n.ends_with(".new"));

        let mut fresh: Vec<(&'static str, FdLink, u32)> = Vec::new();
        for name in [
            programs::CONNECT4,
            programs::CONNECT6,
            programs::SENDMSG4,
            programs::SENDMSG6,
        ] {
            fresh.push(load_and_attach!(self, CgroupSockAddr, name, |p| p
                .attach(&cgroup, LINK_ATTACH_MODE)));
        }
        fresh.push(load_and_attach!(self, SockOps, programs::SOCK_OPS, |p| p
            .attach(&cgroup, LINK_ATTACH_MODE)));
        match self.attach_cgroup_mkdir() {
            Ok(Some(attached)) => fresh.push(attached),
            Ok(None) => {}
            // Enrolled units are then re-resolved once a second only.
            Err(e) => {
                tracing::warn!(error = %e, "cgroup_mkdir tracepoint not attached: a restarted enrolled unit is covered within a second, not at once")
            }
        }

        match self.attach_proc_records() {
            Ok(attached) => {
                fresh.extend(attached);
                self.procs_tracked = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "process records not kept: a workload that execs another program after its connect, or points /proc/<pid>/exe at another file (prctl PR_SET_MM in a user namespace), passes an exe pin")
            }
        }

        match self.attach_lsm() {
            Ok(attached) => {
                fresh.extend(attached);
                self.lsm_attached = true;
                self.lsm_error = None;
            }
            Err(e) => {
                self.lsm_error = Some(format!("BPF LSM programs: {e}"));
                tracing::warn!(error = %e, "BPF LSM programs not attached: a root workload in an enrolled cgroup is not contained (see ARCHITECTURE.md, threat model)")
            }
        }

        match self.attach_relay() {
            Ok(r) => {
                self.relay = Some(r);
                self.relay_error = None;
            }
            Err(e) => {
                self.relay_error = Some(e.to_string());
                tracing::warn!(error = %e, "in-kernel relay not attached: tcp targets are relayed with splice(2)");
            }
        }

        for (name, link, program_id) in fresh {
            let pin = self.pin_dir.join(format!("{LINK_PREFIX}{name}"));
            if pin.exists() {
                release_pinned_link(&pin)?;
            }
            let link_id = link
                .info()
                .map(|i| i.id())
                .map_err(|e| DatapathError::Pin {
                    what: format!("link info of {name}"),
                    detail: e.to_string(),
                })?;
            let pinned = link.pin(&pin).map_err(|e| DatapathError::Pin {
                what: pin.display().to_string(),
                detail: e.to_string(),
            })?;
            self.links.push(pinned);
            self.attached.push(AttachedProgram {
                program: name.to_owned(),
                program_id,
                link_id,
                pin,
            });
        }
        // Pins of other layout versions belong to agents that no longer run.
        if let Some(base) = self.pin_dir.parent() {
            let current = self.pin_dir.clone();
            for dir in version_dirs(base) {
                if dir != current {
                    let _ = remove_version_dir(&dir);
                }
            }
        }
        Ok(())
    }

    /// Loads and attaches the `cgroup:cgroup_mkdir` program, with the field
    /// offsets of this kernel's tracepoint format. `None` when the kernel has
    /// no such tracepoint or tracefs is unavailable (said in the log).
    fn attach_cgroup_mkdir(
        &mut self,
    ) -> Result<Option<(&'static str, FdLink, u32)>, DatapathError> {
        let name = programs::CGROUP_MKDIR;
        let Some(tracefs) = ensure_tracefs() else {
            tracing::warn!(
                "tracefs is not available: a restarted enrolled unit is covered within a second, not at once"
            );
            return Ok(None);
        };
        let format_path = tracefs.join("events/cgroup/cgroup_mkdir/format");
        let text = fs::read_to_string(&format_path).map_err(|source| DatapathError::Io {
            what: format!("reading {}", format_path.display()),
            source,
        })?;
        let fmt = mkdir_format(&text).ok_or_else(|| DatapathError::Pin {
            what: format_path.display().to_string(),
            detail: "unexpected fields (root, id, path)".into(),
        })?;
        lock(&self.mkdir_format)
            .set(0, fmt, 0)
            .map_err(|source| DatapathError::Map {
                name: maps::MKDIR_FORMAT,
                source,
            })?;
        Ok(Some(load_and_attach!(self, TracePoint, name, |p| p
            .attach("cgroup", "cgroup_mkdir"))))
    }

    /// Fills the LSM settings (kernel offsets from BTF, the agent's pid and
    /// cgroup, the protected inodes) and loads and attaches every LSM
    /// program. Fails (and attaches nothing) when BPF LSM is not active or
    /// the kernel's BTF lacks a field the programs read.
    fn attach_lsm(&mut self) -> Result<Vec<(&'static str, FdLink, u32)>, DatapathError> {
        let lsm_err = |e: lsm::LsmError| DatapathError::Pin {
            what: "BPF LSM".into(),
            detail: e.to_string(),
        };
        if bpf_lsm_active() != Some(true) {
            return Err(lsm_err(lsm::LsmError::Inactive));
        }
        let off = lsm::kernel_offsets(&lsm::kernel_btf().map_err(lsm_err)?).map_err(lsm_err)?;
        let keys: Vec<(InodeKey, u32)> = self
            .protected
            .iter()
            .filter_map(|p| {
                let key = lsm::inode_key(p);
                if key.is_none() {
                    tracing::debug!(path = %p.display(), "protected path does not exist (yet)");
                }
                key.map(|k| (k, 1))
            })
            .collect();
        sync_map(&self.protected_inodes, maps::PROTECTED, &keys)?;
        lock(&self.lsm_config)
            .set(
                0,
                LsmConfig {
                    agent_cgroup_id: self.agent_cgroup_id,
                    agent_tgid: std::process::id(),
                    ready: 1,
                    off,
                    _pad: 0,
                },
                0,
            )
            .map_err(|source| DatapathError::Map {
                name: maps::LSM_CONFIG,
                source,
            })?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| DatapathError::Pin {
            what: "BPF LSM".into(),
            detail: format!("reading the kernel's BTF: {e}"),
        })?;
        let mut out = Vec::new();
        for (name, hook) in programs::LSM {
            let prog: &mut Lsm = self
                ._ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing {
                    what: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            prog.load(hook, &btf)
                .map_err(|source| DatapathError::Program { name, source })?;
            let prog_id = prog
                .info()
                .map_err(|source| DatapathError::Program { name, source })?
                .id();
            let id = prog
                .attach()
                .map_err(|source| DatapathError::Program { name, source })?;
            let link = prog
                .take_link(id)
                .map_err(|source| DatapathError::Program { name, source })?;
            out.push((name, FdLink::from(link), prog_id));
        }
        Ok(out)
    }

    /// Loads `warden_relay_verdict` and attaches it to the relay's sockets
    /// map (a program attachment to a map: not a link, not pinned; it lasts
    /// as long as the agent's handle on the object).
    fn attach_relay(&mut self) -> Result<relay::KernelRelay, DatapathError> {
        let name = programs::RELAY_VERDICT;
        let (peers, socks) = self.relay_maps.take().ok_or(DatapathError::Missing {
            what: "map",
            name: maps::RELAY_SOCKS,
        })?;
        let prog: &mut SkSkb = self
            ._ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing {
                what: "program",
                name,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        prog.load()
            .map_err(|source| DatapathError::Program { name, source })?;
        prog.attach(socks.fd())
            .map_err(|source| DatapathError::Program { name, source })?;
        Ok(relay::KernelRelay::new(peers, socks))
    }

    /// The in-kernel relay of `tcp` targets, when attached.
    pub fn kernel_relay(&self) -> Option<&relay::KernelRelay> {
        self.relay.as_ref()
    }

    /// Why the in-kernel relay is not attached (`None` when it is).
    pub fn relay_error(&self) -> Option<&str> {
        self.relay_error.as_deref()
    }

    /// What the LSM programs protect (as configured at start).
    pub fn protected_paths(&self) -> &[PathBuf] {
        &self.protected
    }

    /// Whether the BPF LSM programs are attached.
    pub fn lsm_attached(&self) -> bool {
        self.lsm_attached
    }

    /// Why the BPF LSM programs are not attached (`None` when they are).
    pub fn lsm_error(&self) -> Option<&str> {
        self.lsm_error.as_deref()
    }

    /// The ring buffer of LSM denials (once; `None` afterwards).
    pub fn take_lsm_events(&self) -> Option<RingBuf<MapData>> {
        lock(&self.lsm_events).take()
    }

    /// Fills the offsets the exec, fork and exit programs read (from the
    /// kernel's BTF), loads and attaches them, then records every process
    /// that already exists (as [`warden_common::PROC_PREEXISTING`], unless
    /// the kernel recorded it first) and marks the records seeded: from then
    /// on every process has a record, and a missing one means it could not
    /// be stored.
    fn attach_proc_records(&mut self) -> Result<Vec<(&'static str, FdLink, u32)>, DatapathError> {
        let err = |e: lsm::LsmError| DatapathError::Pin {
            what: "process records".into(),
            detail: e.to_string(),
        };
        let mut off = lsm::task_offsets(&lsm::kernel_btf().map_err(err)?).map_err(err)?;
        let map_err = |source| DatapathError::Map {
            name: maps::TASK_OFFSETS,
            source,
        };
        // Seeded by an earlier run: the adopted records are complete (the
        // pinned programs kept them while no agent ran).
        off.seeded = lock(&self.task_offsets)
            .get(&0, 0)
            .map(|o| o.seeded)
            .unwrap_or(0);
        lock(&self.task_offsets).set(0, off, 0).map_err(map_err)?;
        let attached = vec![
            load_and_attach!(self, RawTracePoint, programs::EXEC_FILE, |p| p
                .attach("sched_process_exec")),
            load_and_attach!(self, RawTracePoint, programs::FORK_FILE, |p| p
                .attach("sched_process_fork")),
            load_and_attach!(self, RawTracePoint, programs::PROC_EXIT, |p| p
                .attach("sched_process_exit")),
        ];
        self.seed_proc_records();
        off.seeded = 1;
        lock(&self.task_offsets).set(0, off, 0).map_err(map_err)?;
        Ok(attached)
    }

    /// Records every process listed in /proc that has no record yet.
    fn seed_proc_records(&self) {
        const BPF_NOEXIST: u64 = 1;
        let Ok(dir) = fs::read_dir("/proc") else {
            return;
        };
        let mut procs = lock(&self.procs);
        let preexisting = ProcRecord {
            flags: warden_common::PROC_PREEXISTING,
            ..ProcRecord::default()
        };
        for tgid in dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            // Already recorded by the kernel (EEXIST), or gone: both fine.
            let _ = procs.insert(tgid, preexisting, BPF_NOEXIST);
        }
    }

    /// What the kernel recorded about process `tgid` (see [`ProcLookup`]).
    pub fn proc_record(&self, tgid: u32) -> ProcLookup {
        if !self.procs_tracked {
            return ProcLookup::Untracked;
        }
        match lock(&self.procs).get(&tgid, 0) {
            Ok(r) => ProcLookup::Found(r),
            Err(_) => ProcLookup::Missing,
        }
    }

    /// Replaces the enrolled-unit paths the `cgroup_mkdir` program matches
    /// (cgroup2 path → account tag). Paths too long for the key are skipped
    /// (those units are covered by the agent's own resolution only).
    pub fn sync_unit_paths(&self, desired: &[(String, u32)]) -> Result<(), DatapathError> {
        let keys: Vec<(UnitPathKey, u32)> = desired
            .iter()
            .filter_map(|(p, tag)| unit_path_key(p).map(|k| (k, *tag)))
            .collect();
        sync_map(&self.unit_paths, maps::UNIT_PATHS, &keys)
    }

    /// Replaces the protected-targets map contents with `desired`.
    pub fn sync_targets(&self, desired: &[(TargetKey, TargetValue)]) -> Result<(), DatapathError> {
        sync_map(&self.targets, maps::TARGETS, desired)
    }

    /// Replaces the enrolled-cgroups map contents with `desired` (cgroup id → tag).
    ///
    /// Entries the `cgroup_mkdir` program added since the caller resolved
    /// its `desired` set (a unit recreated in between) are kept until the
    /// next sync, so a resolution racing with the mkdir never un-enrolls the
    /// new cgroup.
    pub fn sync_cgroups(&self, desired: &[(u64, u32)]) -> Result<(), DatapathError> {
        let name = maps::ENROLLED_CGROUPS;
        let mut unadopted = lock(&self.mkdir_unadopted);
        let mut map = lock(&self.cgroups);
        for (k, v) in desired {
            map.insert(k, v, 0)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        let present: Vec<(u64, u32)> = map.iter().filter_map(Result::ok).collect();
        let mut kept = Vec::new();
        for (id, tag) in present {
            if desired.iter().any(|(d, _)| *d == id) {
                continue;
            }
            // Added by the kernel, not seen by the last sync: keep it once.
            // (An entry added after this read is not seen, so not removed.)
            if tag & TAG_FROM_MKDIR != 0 && !unadopted.contains(&id) {
                kept.push(id);
                continue;
            }
            map.remove(&id)
                .map_err(|source| DatapathError::Map { name, source })?;
        }
        *unadopted = kept;
        Ok(())
    }

    /// Replaces the enrolled-uids map contents with `desired` (uid → tag).
    pub fn sync_uids(&self, desired: &[(u32, u32)]) -> Result<(), DatapathError> {
        sync_map(&self.uids, maps::ENROLLED_UIDS, desired)
    }

    /// Looks up and deletes the kernel's record for an accepted connection.
    pub fn take_orig_dst(&self, key: &TupleKey) -> Result<Option<ConnMeta>, DatapathError> {
        let mut map = lock(&self.orig_dst);
        match map.get(key, 0) {
            Ok(meta) => {
                // A failed delete only leaves an entry that sock_ops invalidates
                // when the tuple is reused, or LRU evicts.
                let _ = map.remove(key);
                Ok(Some(meta))
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DatapathError::Map {
                name: maps::ORIG_DST,
                source,
            }),
        }
    }

    pub fn attached(&self) -> &[AttachedProgram] {
        &self.attached
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn attach_dir(&self) -> &Path {
        &self.attach_dir
    }

    /// Entries and capacity of each hash map the agent holds (for the
    /// `warden_bpf_map_entries` metric). Walks the keys: a few thousand
    /// syscalls for a full map, meant for a scrape every few seconds.
    pub fn map_fill(&self) -> Vec<MapFill> {
        use warden_common::capacity as cap;
        fn count<K: aya::Pod, V: aya::Pod>(m: &Mutex<BpfHashMap<MapData, K, V>>) -> u64 {
            lock(m).keys().filter(Result::is_ok).count() as u64
        }
        vec![
            MapFill::new(
                "enrolled_cgroups",
                count(&self.cgroups),
                cap::ENROLLED_CGROUPS,
            ),
            MapFill::new("enrolled_uids", count(&self.uids), cap::ENROLLED_UIDS),
            MapFill::new("targets", count(&self.targets), cap::TARGETS),
            MapFill::new("orig_dst", count(&self.orig_dst), cap::ORIG_DST),
            MapFill::new("unit_paths", count(&self.unit_paths), cap::UNIT_PATHS),
            MapFill::new("procs", count(&self.procs), self.procs_capacity),
            MapFill::new(
                "protected_inodes",
                count(&self.protected_inodes),
                cap::PROTECTED,
            ),
        ]
    }
}

/// What the kernel recorded about a process ([`Datapath::proc_record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcLookup {
    /// Processes are not recorded (the programs could not be attached:
    /// logged at start).
    Untracked,
    /// No record: the process is gone, or its record could not be stored.
    Missing,
    Found(ProcRecord),
}

/// The capacity `WARDEN_PROCS` is created with: the most processes the
/// kernel allows at once (`kernel.pid_max` and `kernel.threads-max`, the
/// smaller of the two, each thread group counting once), with some room,
/// and never less than the compiled default.
fn procs_capacity() -> u32 {
    let read = |p: &str| -> Option<u64> { fs::read_to_string(p).ok()?.trim().parse().ok() };
    let most = match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    let with_room = most.saturating_add(4096).min(u64::from(u32::MAX));
    (with_room as u32).max(warden_common::capacity::PROCS)
}

/// One map's fill level ([`Datapath::map_fill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

impl MapFill {
    fn new(name: &'static str, entries: u64, capacity: u32) -> Self {
        MapFill {
            name,
            entries,
            capacity: u64::from(capacity),
        }
    }
}

/// What `uninstall` removed.
#[derive(Debug, Default, Serialize)]
pub struct UninstallReport {
    pub links_released: usize,
    pub pins_removed: usize,
}

/// Removes every pinned link and map under `pin_base` (all layout versions).
/// Programs stay attached only while some other process holds their links.
pub fn uninstall(pin_base: &Path) -> Result<UninstallReport, DatapathError> {
    let mut report = UninstallReport::default();
    if !pin_base.exists() {
        return Ok(report);
    }
    for dir in version_dirs(pin_base) {
        let r = remove_version_dir(&dir)?;
        report.links_released += r.links_released;
        report.pins_removed += r.pins_removed;
    }
    // Only remove the base if nothing else lives there.
    let _ = fs::remove_dir(pin_base);
    Ok(report)
}

fn remove_version_dir(dir: &Path) -> Result<UninstallReport, DatapathError> {
    let mut report = UninstallReport::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(source) => {
            return Err(DatapathError::Io {
                what: format!("listing {}", dir.display()),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_link = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(LINK_PREFIX));
        if is_link {
            release_pinned_link(&path)?;
            report.links_released += 1;
        } else {
            match fs::remove_file(&path) {
                Ok(()) => report.pins_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DatapathError::Io {
                        what: format!("removing pin {}", path.display()),
                        source,
                    });
                }
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(report),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(report),
        Err(source) => Err(DatapathError::Io {
            what: format!("removing {}", dir.display()),
            source,
        }),
    }
}

fn release_pinned_link(pin: &Path) -> Result<(), DatapathError> {
    match PinnedLink::from_pin(pin) {
        Ok(link) => match link.unpin() {
            Ok(_) => Ok(()),
            // Someone else (a stopping daemon) unpinned it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Io {
                what: format!("unpinning {}", pin.display()),
                source,
            }),
        },
        // Not a link (or already gone): remove whatever is there.
        Err(_) => match fs::remove_file(pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Io {
                what: format!("removing {}", pin.display()),
                source,
            }),
        },
    }
}

fn version_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix('v')
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|e| e.path())
        .collect()
}

fn remove_matching(dir: &Path, pred: impl Fn(&str) -> bool) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(&pred) {
                let _ = release_pinned_link(&e.path());
            }
        }
    }
}

/// `<base>/v<LAYOUT_VERSION>`.
pub fn versioned_dir(base: &Path) -> PathBuf {
    base.join(format!("v{LAYOUT_VERSION}"))
}

/// Makes sure `pin_base` lives on a bpf filesystem, mounting bpffs at
/// `/sys/fs/bpf` when that is where it should be and nothing is mounted yet.
fn ensure_bpffs(pin_base: &Path) -> Result<(), DatapathError> {
    if on_bpffs(pin_base) {
        return Ok(());
    }
    let default = Path::new("/sys/fs/bpf");
    if pin_base.starts_with(default) && !on_bpffs(default) {
        fs::create_dir_all(default).map_err(|source| DatapathError::Io {
            what: "creating /sys/fs/bpf".into(),
            source,
        })?;
        nix::mount::mount(
            Some("bpf"),
            default,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| DatapathError::NoBpffs {
            path: pin_base.to_path_buf(),
            detail: format!("mount -t bpf bpf /sys/fs/bpf: {e}"),
        })?;
        tracing::info!(path = "/sys/fs/bpf", "mounted bpffs");
    }
    if on_bpffs(pin_base) {
        return Ok(());
    }
    Err(DatapathError::NoBpffs {
        path: pin_base.to_path_buf(),
        detail: "mount bpffs there or choose a directory under /sys/fs/bpf".into(),
    })
}

/// Whether `bpf` is among the kernel's active LSMs (securityfs's `lsm`,
/// mounted at /sys/kernel/security once if nothing is); `None` when that
/// cannot be read. Warden's LSM programs are attached only when it is, and
/// `warden status` warns when not.
pub fn bpf_lsm_active() -> Option<bool> {
    static MOUNT: std::sync::Once = std::sync::Once::new();
    let lsm = Path::new("/sys/kernel/security/lsm");
    MOUNT.call_once(|| {
        if !lsm.exists() {
            let _ = nix::mount::mount(
                Some("securityfs"),
                "/sys/kernel/security",
                Some("securityfs"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            );
        }
    });
    let text = fs::read_to_string(lsm).ok()?;
    Some(lsm_list_has_bpf(&text))
}

/// Whether a comma-separated LSM list (`/sys/kernel/security/lsm`) names `bpf`.
pub fn lsm_list_has_bpf(text: &str) -> bool {
    text.trim().split(',').any(|l| l.trim() == "bpf")
}

/// The tracefs mount, mounted at /sys/kernel/tracing when nothing is.
fn ensure_tracefs() -> Option<&'static Path> {
    let candidates = [
        Path::new("/sys/kernel/tracing"),
        Path::new("/sys/kernel/debug/tracing"),
    ];
    let mounted = |p: &Path| p.join("events/cgroup/cgroup_mkdir/format").exists();
    if let Some(p) = candidates.into_iter().find(|p| mounted(p)) {
        return Some(p);
    }
    let p = candidates[0];
    match nix::mount::mount(
        Some("tracefs"),
        p,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    ) {
        Ok(()) => {
            tracing::info!(path = %p.display(), "mounted tracefs");
            mounted(p).then_some(p)
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "could not mount tracefs");
            None
        }
    }
}

/// Offsets of `root`, `id` and `path` in a `cgroup:cgroup_mkdir` format
/// file, when they have the expected types and sizes.
pub fn mkdir_format(text: &str) -> Option<MkdirFormat> {
    let field = |decl: &str, size: u32| -> Option<u32> {
        text.lines().find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("field:")?;
            let (d, rest) = rest.split_once(';')?;
            if d.trim() != decl {
                return None;
            }
            let mut off = None;
            let mut sz = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    off = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    sz = v.parse::<u32>().ok();
                }
            }
            (sz? == size).then_some(off?)
        })
    };
    Some(MkdirFormat {
        root_off: field("int root", 4)?,
        id_off: field("u64 id", 8)?,
        path_off: field("__data_loc char[] path", 4)?,
        _pad: 0,
    })
}

/// The map key of a unit's cgroup2 path; `None` when it does not fit.
pub fn unit_path_key(path: &str) -> Option<UnitPathKey> {
    let b = path.as_bytes();
    if b.is_empty() || b.len() >= UNIT_PATH_LEN - 1 || b.contains(&0) {
        return None;
    }
    let mut key = UnitPathKey {
        path: [0; UNIT_PATH_LEN],
    };
    key.path[..b.len()].copy_from_slice(b);
    Some(key)
}

/// True when the nearest existing ancestor of `path` is on bpffs.
fn on_bpffs(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(cur) = p {
        if cur.exists() {
            return statfs(cur).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
        }
        p = cur.parent();
    }
    false
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn sync_map<K, V>(
    map: &Mutex<BpfHashMap<MapData, K, V>>,
    name: &'static str,
    desired: &[(K, V)],
) -> Result<(), DatapathError>
where
    K: aya::Pod + PartialEq,
    V: aya::Pod,
{
    let mut map = lock(map);
    for (k, v) in desired {
        map.insert(k, v, 0)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !desired.iter().any(|(d, _)| d == k))
        .collect();
    for k in stale {
        map.remove(&k)
            .map_err(|source| DatapathError::Map { name, source })?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave a map handle in a
    // torn state (the kernel owns the data), so poisoning is safe to ignore.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: cgroup_mkdir\nID: 544\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:int level;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n";

    #[test]
    fn reads_the_cgroup_mkdir_format() {
        assert_eq!(
            mkdir_format(FORMAT_6_18),
            Some(MkdirFormat {
                root_off: 8,
                id_off: 16,
                path_off: 24,
                _pad: 0
            })
        );
        // A kernel whose id is 32-bit (before 5.5) is not understood.
        let old = FORMAT_6_18.replace("u64 id;\toffset:16;\tsize:8", "int id;\toffset:16;\tsize:4");
        assert_eq!(mkdir_format(&old), None);
    }

    #[test]
    fn bpf_in_the_lsm_list() {
        assert!(lsm_list_has_bpf("lockdown,capability,landlock,yama,bpf\n"));
        assert!(!lsm_list_has_bpf("lockdown,capability,apparmor"));
        assert!(!lsm_list_has_bpf("bpfx,xbpf"));
    }

    #[test]
    fn unit_path_keys_are_nul_padded_and_bounded() {
        let k = unit_path_key("/system.slice/a.service").unwrap();
        assert_eq!(&k.path[..23], b"/system.slice/a.service");
        assert!(k.path[23..].iter().all(|b| *b == 0));
        assert!(unit_path_key(&format!("/{}", "x".repeat(125))).is_some());
        assert!(unit_path_key(&format!("/{}", "x".repeat(126))).is_none());
        assert!(unit_path_key("").is_none());
    }
}
