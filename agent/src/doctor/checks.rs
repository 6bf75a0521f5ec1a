//! The checks of `warden doctor` other than files: kernel features, pins,
//! enrollments, targets, forwarders, clock and disk.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_common::programs as program;

use super::{Area, Finding};
use crate::config::Config;
use crate::control::StatusReport;
use crate::identity::Selector;
use crate::identity::enrollment::EnrollmentView;

/// How long a target gets to accept the doctor's TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Below this much free space where the store lives, a problem.
const MIN_FREE_BYTES: u64 = 1 << 30;
/// Below this share of free space, a warning.
const WARN_FREE_PERCENT: u64 = 10;
/// A wall clock before this (2025-01-01) is unset, not merely wrong.
const CLOCK_FLOOR_MS: i64 = 1_735_689_600_000;
/// The newest audit event may be at most this far in the future.
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// BTF, the cgroup2 mount, BPF LSM, bpffs under the pin directory.
pub(super) fn kernel(cfg: Option<&Config>) -> Vec<Finding> {
    let mut out = Vec::new();
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    out.push(if btf.exists() {
        Finding::ok(Area::Kernel, "BTF", btf.display().to_string())
    } else {
        Finding::problem(
            Area::Kernel,
            "BTF",
            "/sys/kernel/btf/vmlinux is missing: the programs cannot be loaded",
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (every current distribution kernel is)",
        )
    });
    out.push(match crate::ebpf::cgroup::cgroup2_mount() {
        Ok(m) => Finding::ok(Area::Kernel, "cgroup2", format!("mounted at {}", m.display())),
        Err(_) => Finding::problem(
            Area::Kernel,
            "cgroup2",
            "no cgroup2 hierarchy is mounted",
            "mount it (`mount -t cgroup2 none /sys/fs/cgroup`) or boot with systemd.unified_cgroup_hierarchy=1",
        ),
    });
    out.push(match crate::ebpf::bpf_lsm_active() {
        Some(true) => Finding::ok(Area::Kernel, "BPF LSM", "active"),
        Some(false) => Finding::warning(
            Area::Kernel,
            "BPF LSM",
            "not active: a root workload in an enrolled cgroup can bypass Warden",
            "add bpf to the kernel's lsm= boot parameter (e.g. lsm=landlock,lockdown,yama,apparmor,bpf)",
        ),
        None => Finding::warning(
            Area::Kernel,
            "BPF LSM",
            "cannot tell (no /sys/kernel/security/lsm)",
            "mount securityfs at /sys/kernel/security so the active LSMs can be read",
        ),
    });
    let pin_base = cfg.map_or_else(crate::config::model::defaults::bpf_pin_dir, |c| {
        c.agent.bpf_pin_dir.clone()
    });
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    out.push(match fs_type_at(&mounts, &pin_base) {
        Some((mnt, ty)) if ty == "bpf" => Finding::ok(
            Area::Kernel,
            "bpffs",
            format!(
                "{} is on bpffs mounted at {}",
                pin_base.display(),
                mnt.display()
            ),
        ),
        // The agent mounts bpffs there itself at start.
        _ if pin_base.starts_with("/sys/fs/bpf") => Finding::warning(
            Area::Kernel,
            "bpffs",
            "/sys/fs/bpf is not a bpf filesystem yet",
            "start the agent (it mounts bpffs at /sys/fs/bpf) or `mount -t bpf bpf /sys/fs/bpf`",
        ),
        _ => Finding::problem(
            Area::Kernel,
            "bpffs",
            format!("{} is not on a bpf filesystem", pin_base.display()),
            "set bpf_pin_dir under /sys/fs/bpf, or mount bpffs there (`mount -t bpf bpf DIR`)",
        ),
    });
    out
}

/// The mount point and filesystem type of the mount that holds `path`
/// (the longest mount point that is a prefix of it; `/proc/self/mounts`
/// lists later mounts last, and a later one over the same point wins).
fn fs_type_at(mounts: &str, path: &Path) -> Option<(PathBuf, String)> {
    let mut best: Option<(PathBuf, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(dir), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let dir = PathBuf::from(dir.replace("\\040", " "));
        if path.starts_with(&dir)
            && best
                .as_ref()
                .is_none_or(|(b, _)| dir.components().count() >= b.components().count())
        {
            best = Some((dir, ty.to_owned()));
        }
    }
    best
}

/// The programs the agent reports attached, and their link pins.
pub(super) fn pins(cfg: &Config, status: Option<&StatusReport>) -> Vec<Finding> {
    let dir = crate::ebpf::versioned_dir(&cfg.agent.bpf_pin_dir);
    let Some(st) = status else {
        // Without an agent, pins present mean enrolled traffic is refused
        // (fail closed); absent, nothing is redirected at all.
        return vec![
            if dir.join(format!("link_{}", program::CONNECT4)).exists() {
                Finding::ok(
                    Area::Pins,
                    dir.display().to_string(),
                    "programs pinned: enrolled connections fail closed while the agent is down",
                )
            } else {
                Finding::problem(
                    Area::Pins,
                    dir.display().to_string(),
                    "no programs pinned: nothing is redirected or refused",
                    "start the agent (`systemctl start warden`)",
                )
            },
        ];
    };
    let mut out = Vec::new();
    for needed in [
        program::CONNECT4,
        program::CONNECT6,
        program::SENDMSG4,
        program::SENDMSG6,
        program::SOCK_OPS,
    ] {
        if !st.programs.iter().any(|p| p.program == needed) {
            out.push(Finding::problem(
                Area::Pins,
                needed,
                "not attached",
                "restart the agent (`systemctl restart warden`) and read its log for the attach error",
            ));
        }
    }
    for p in &st.programs {
        out.push(if p.pin.exists() {
            Finding::ok(
                Area::Pins,
                p.program.as_str(),
                format!(
                    "prog {} link {} pinned at {}",
                    p.program_id,
                    p.link_id,
                    p.pin.display()
                ),
            )
        } else {
            Finding::problem(
                Area::Pins,
                p.program.as_str(),
                format!(
                    "attached, but its pin {} is gone: a restart would leave a gap",
                    p.pin.display()
                ),
                "restart the agent (`systemctl restart warden`) so it pins its links again",
            )
        });
    }
    out
}

/// Every enrolled cgroup and unit resolves to a cgroup that exists; every
/// enrolled uid names a user.
pub(super) fn enrollments(cfg: &Config, status: Option<&StatusReport>) -> Vec<Finding> {
    // The agent's own view (live enrollments included), else the config's.
    let views: Vec<EnrollmentView> = match status {
        Some(st) => st.enrollments.clone(),
        None => config_enrollments(cfg),
    };
    let mut out = Vec::new();
    for v in &views {
        let check = format!("{} {}", v.account, v.selector);
        out.push(match &v.selector {
            Selector::Cgroup(path) if v.cgroup_id.is_none() => Finding::problem(
                Area::Enrollment,
                check,
                format!("cgroup {path} does not exist: the selector enrolls nothing"),
                "correct the cgroup path (relative to the cgroup2 mount) or remove the selector",
            ),
            Selector::Unit(unit) if v.cgroup_id.is_none() => Finding::problem(
                Area::Enrollment,
                check,
                format!("unit {unit} has no cgroup (not running, or no such unit)"),
                format!("start {unit}, or correct or remove the selector"),
            ),
            Selector::Uid(uid)
                if nix::unistd::User::from_uid((*uid).into())
                    .ok()
                    .flatten()
                    .is_none() =>
            {
                Finding::warning(
                    Area::Enrollment,
                    check,
                    format!("no user has uid {uid} (a process can still take it)"),
                    "correct the uid if it is a typo, else ignore this",
                )
            }
            _ => Finding::ok(
                Area::Enrollment,
                check,
                match (v.cgroup_id, &v.cgroup_path) {
                    (Some(id), Some(p)) => format!("cgroup {p} (id {id})"),
                    (Some(id), None) => format!("cgroup id {id}"),
                    _ => "uid exists".to_owned(),
                },
            ),
        });
    }
    if views.is_empty() {
        out.push(Finding::ok(
            Area::Enrollment,
            "accounts",
            "nothing is enrolled",
        ));
    }
    out
}

/// The config's selectors resolved here, as the agent would.
fn config_enrollments(cfg: &Config) -> Vec<EnrollmentView> {
    use crate::identity::enrollment::SelectorSource;
    let mount = crate::ebpf::cgroup::cgroup2_mount().ok();
    let id_of = |p: &str| {
        let m = mount.as_ref()?;
        crate::ebpf::cgroup::cgroup_id(&crate::ebpf::cgroup::cgroup_dir(m, p)).ok()
    };
    let mut out = Vec::new();
    for a in &cfg.accounts {
        let view = |selector, cgroup_id, cgroup_path| EnrollmentView {
            account: a.name.clone(),
            selector,
            source: SelectorSource::Config,
            cgroup_id,
            cgroup_path,
        };
        for c in &a.cgroups {
            out.push(view(Selector::Cgroup(c.clone()), id_of(c), None));
        }
        for u in &a.units {
            let path = mount
                .as_ref()
                .and_then(|m| crate::identity::unit::resolve(m, u));
            let id = path.as_deref().and_then(id_of);
            out.push(view(Selector::Unit(u.clone()), id, path));
        }
        for u in &a.uids {
            out.push(view(Selector::Uid(*u), None, None));
        }
    }
    out
}

/// A TCP connect to every target, carrying the agent's mark so that the
/// agent's own programs never redirect it (needs CAP_NET_ADMIN; without it
/// the connect is made unmarked).
pub(super) fn targets(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in &cfg.targets {
        let check = format!("target {}", t.name);
        out.push(match connect_marked(t.address, cfg.agent.upstream_mark) {
            Ok(()) => Finding::ok(Area::Targets, check, format!("{} accepts connections", t.address)),
            Err(e) => Finding::problem(
                Area::Targets,
                check,
                format!("{} cannot be reached: {e}", t.address),
                format!(
                    "make the service listen on {} and let this host reach it, or correct the target's address",
                    t.address
                ),
            ),
        });
    }
    out
}

fn connect_marked(addr: std::net::SocketAddr, mark: u32) -> std::io::Result<()> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Best effort: unmarked, an enrolled doctor is redirected to the proxy.
    let _ = sock.set_mark(mark);
    sock.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    let _ = TcpStream::from(sock).shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Each `[[forward]]` output's state and backlog as the agent reports it.
pub(super) fn forwarders(cfg: &Config, status: Option<&StatusReport>) -> Vec<Finding> {
    let Some(st) = status else {
        return cfg
            .forwards
            .iter()
            .map(|f| {
                Finding::warning(
                    Area::Forwarders,
                    f.name.as_str(),
                    "health and lag unknown: the agent is not running",
                    "start the agent, then run `warden doctor` again",
                )
            })
            .collect();
    };
    st.forwarders
        .iter()
        .map(|f| {
            let lag = format!(
                "{} to {}: {} events behind (acked through seq {}), state {}",
                f.kind, f.destination, f.backlog, f.acked_seq, f.state
            );
            match (&f.last_error, f.state.as_str()) {
                (Some(err), "retrying" | "parked" | "stopped") => Finding::problem(
                    Area::Forwarders,
                    f.name.as_str(),
                    format!("{lag}; last error: {err}"),
                    "make the collector reachable and accepting (URL, CA, credentials): events wait in the store meanwhile",
                ),
                _ if f.backlog_over_warn => Finding::problem(
                    Area::Forwarders,
                    f.name.as_str(),
                    format!("{lag}, over backlog_warn {}", f.backlog_warn),
                    "check the collector's throughput, or raise batch_max_events; retention keeps unacknowledged events",
                ),
                _ => Finding::ok(Area::Forwarders, f.name.as_str(), lag),
            }
        })
        .collect()
}

/// The wall clock is set, and not behind the newest audit event.
pub(super) fn clock(cfg: &Config) -> Vec<Finding> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let now = crate::audit::reader::format_time(now_ms);
    if now_ms < CLOCK_FLOOR_MS {
        return vec![Finding::problem(
            Area::Clock,
            "wall clock",
            format!("{now} is before 2025: the clock is not set"),
            "set the clock and keep it synchronised (systemd-timesyncd, chrony or ntpd)",
        )];
    }
    let newest = crate::audit::reader::AuditReader::open(&cfg.audit_path())
        .ok()
        .and_then(|r| {
            let f = crate::audit::reader::TailFilter::default();
            let after = r.tail_start(&f, 1).ok()?;
            r.query(&f, after, 1).ok()?.into_iter().next()
        });
    match newest {
        Some(ev) if ev.time_ms > now_ms + CLOCK_SKEW_MS => vec![Finding::problem(
            Area::Clock,
            "wall clock",
            format!(
                "{now} is behind the newest audit event (seq {}, {}): the clock went back",
                ev.seq,
                crate::audit::reader::format_time(ev.time_ms)
            ),
            "set the clock right and keep it synchronised; events recorded meanwhile carry wrong times",
        )],
        _ => vec![Finding::ok(Area::Clock, "wall clock", now)],
    }
}

/// Free space on the filesystem of the audit store.
pub(super) fn disk(cfg: &Config) -> Vec<Finding> {
    let store = cfg.audit_path();
    // The nearest directory that exists (the store may not yet).
    let mut dir = store.parent().map(Path::to_path_buf);
    while let Some(d) = &dir {
        if d.is_dir() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    let Some(dir) = dir else {
        return Vec::new();
    };
    let check = format!("store {}", store.display());
    match nix::sys::statvfs::statvfs(&dir) {
        Ok(v) => {
            let frag = v.fragment_size();
            let avail = v.blocks_available().saturating_mul(frag);
            let total = v.blocks().saturating_mul(frag).max(1);
            let size = std::fs::metadata(&store).map_or(0, |m| m.len());
            let detail = format!(
                "{} free of {} ({}%) at {}; store {}",
                bytes(avail),
                bytes(total),
                avail * 100 / total,
                dir.display(),
                bytes(size)
            );
            if avail < MIN_FREE_BYTES {
                vec![Finding::problem(
                    Area::Disk,
                    check,
                    detail,
                    "free space there or move audit.path: a store that cannot write refuses every connection",
                )]
            } else if avail * 100 / total < WARN_FREE_PERCENT {
                vec![Finding::warning(
                    Area::Disk,
                    check,
                    detail,
                    "free space there or lower retention_days before the store fills it",
                )]
            } else {
                vec![Finding::ok(Area::Disk, check, detail)]
            }
        }
        Err(e) => vec![Finding::problem(
            Area::Disk,
            check,
            format!("statvfs {}: {e}", dir.display()),
            "make the store's directory readable by root",
        )],
    }
}

fn bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

/// The effective uid of process `pid` (`/proc/<pid>/status`).
pub(super) fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_mount_holding_a_path_wins() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        let (mnt, ty) = fs_type_at(mounts, Path::new("/sys/fs/bpf/warden")).unwrap();
        assert_eq!(
            (mnt.as_path(), ty.as_str()),
            (Path::new("/sys/fs/bpf"), "bpf")
        );
        let (_, ty) = fs_type_at(mounts, Path::new("/sys/fs/bpfx")).unwrap();
        assert_eq!(ty, "sysfs", "a prefix must be a whole path component");
    }

    #[test]
    fn uid_of_this_process() {
        assert_eq!(
            process_uid(std::process::id()),
            Some(nix::unistd::geteuid().as_raw())
        );
    }
}
