//! Who is on the other end of the approvals socket, learnt when the
//! connection is accepted (before its request is read): uid, gid and pid
//! from SO_PEERCRED, a pidfd of the process (SO_PEERPIDFD), and from
//! `/proc/<pid>` every uid and group it holds and the cgroup of each of its
//! threads. The `/proc` facts count only if the pidfd still names a live
//! process with that pid once they are read, so the pid cannot have been
//! reused meanwhile. From these: the accounts that one of those cgroups (or
//! an ancestor of one) or one of those uids is enrolled for, and whether
//! the peer is an approver under `[approvals] approvers`.
//!
//! The groups come from `/proc` rather than SO_PEERGROUPS: no crate in the
//! tree offers that option without `unsafe`, which the agent does not use;
//! with the pidfd check they are the groups of the process that connected.
//!
//! What this cannot see: a process that left its cgroup between `connect`
//! and the accept (or before connecting) is placed where it went. A
//! workload able to write `cgroup.procs` outside its own subtree (root
//! without a cgroup namespace) can leave every enforcement that is bound to
//! its cgroup, the redirect included; see ARCHITECTURE.md.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{Gid, Group, Uid, User};

use crate::audit::event::ApproverIdentity;
use crate::config::approvals::Approvers;
use crate::ebpf::cgroup;

/// Where a peer's process sat when it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Known {
        /// The cgroup2 path (relative to the mount) of each of its threads.
        cgroups: Vec<String>,
        /// The ids of those cgroups and of every ancestor below the root
        /// cgroup (which holds every process).
        cgroup_ids: Vec<u64>,
        /// The accounts enrolled for one of those cgroups, the root cgroup
        /// or one of the peer's uids, sorted.
        accounts: Vec<String>,
    },
    /// Could not be learnt: such a peer decides nothing.
    Unknown { why: String },
}

/// What `/proc` says about a process, for the enrollment lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The cgroup path of each thread, deduplicated.
    pub cgroups: Vec<String>,
    /// The ids of those cgroups and all their ancestors, the root's included.
    pub cgroup_ids: Vec<u64>,
    /// Every uid the process holds.
    pub uids: Vec<u32>,
}

/// A peer's credentials with its group ids and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
    /// SO_PEERCRED's uid and the real, effective, saved and filesystem uids
    /// of the process.
    pub uids: Vec<u32>,
    pub place: Place,
}

impl Peer {
    /// The peer of an accepted Unix stream, learnt at once (before its
    /// request is read). `enrolled` names the accounts enrolled for any of
    /// the located cgroups (or ids) or uids.
    pub fn of_stream<S: AsFd>(
        stream: &S,
        cgroup_mount: &Path,
        enrolled: impl FnOnce(&Located) -> Vec<String>,
    ) -> std::io::Result<Peer> {
        let cred = getsockopt(stream, sockopt::PeerCredentials)?;
        let uid = cred.uid();
        let gid = cred.gid();
        let pid = u32::try_from(cred.pid()).ok().filter(|p| *p != 0);
        // ENOPROTOOPT before Linux 6.5: the /proc facts are then read
        // without proof that the pid was not reused. Any other error (the
        // process is gone) places the peer nowhere.
        let pidfd = match getsockopt(stream, sockopt::PeerPidfd) {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::errno::Errno::ENOPROTOOPT) => Ok(None),
            Err(e) => Err(format!("no pidfd for the peer: {e}")),
        };
        let facts = match (pid, pidfd) {
            (None, _) => Err("the kernel reported no pid".to_owned()),
            (Some(_), Err(why)) => Err(why),
            (Some(pid), Ok(pidfd)) => read_proc(pid, cgroup_mount).and_then(|f| {
                if pidfd.as_ref().is_some_and(|fd| !pidfd_names(fd, pid)) {
                    Err(format!("process {pid} ended before it could be located"))
                } else {
                    Ok(f)
                }
            }),
        };
        let root = cgroup::cgroup_id(cgroup_mount).ok();
        Ok(match facts {
            Err(why) => Peer::with_groups(
                uid,
                gid,
                pid,
                user_groups(uid, gid),
                vec![uid],
                Place::Unknown { why },
            ),
            Ok((gids, mut located)) => {
                if !located.uids.contains(&uid) {
                    located.uids.insert(0, uid);
                }
                let accounts = enrolled(&located);
                let Located {
                    cgroups,
                    mut cgroup_ids,
                    uids,
                } = located;
                cgroup_ids.retain(|id| Some(*id) != root);
                Peer::with_groups(
                    uid,
                    gid,
                    pid,
                    gids,
                    uids,
                    Place::Known {
                        cgroups,
                        cgroup_ids,
                        accounts,
                    },
                )
            }
        })
    }

    fn with_groups(
        uid: u32,
        gid: u32,
        pid: Option<u32>,
        mut gids: Vec<u32>,
        uids: Vec<u32>,
        place: Place,
    ) -> Peer {
        if !gids.contains(&gid) {
            gids.insert(0, gid);
        }
        Peer {
            uid,
            gid,
            pid,
            gids,
            uids,
            place,
        }
    }

    /// The identity recorded with a decision.
    pub fn identity(&self) -> ApproverIdentity {
        ApproverIdentity {
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
            user: User::from_uid(Uid::from_raw(self.uid))
                .ok()
                .flatten()
                .map(|u| u.name),
            groups: self
                .gids
                .iter()
                .map(|&g| {
                    Group::from_gid(Gid::from_raw(g))
                        .ok()
                        .flatten()
                        .map_or_else(|| g.to_string(), |gr| gr.name)
                })
                .collect(),
        }
    }

    /// Listed by uid, or in a listed group.
    pub fn is_approver(&self, approvers: &Approvers) -> bool {
        if approvers.uids.contains(&self.uid) {
            return true;
        }
        approvers.groups.iter().any(|name| {
            Group::from_name(name)
                .ok()
                .flatten()
                .is_some_and(|g| self.gids.contains(&g.gid.as_raw()))
        })
    }
}

/// The groups of `pid` and where it runs: every thread's cgroup with the
/// ids of those cgroups and their ancestors, and its uids.
fn read_proc(pid: u32, mount: &Path) -> Result<(Vec<u32>, Located), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("the status of process {pid} is unreadable: {e}"))?;
    let gids = parse_status_groups(&status)
        .ok_or_else(|| format!("the status of process {pid} names no groups"))?;
    let uids = parse_status_uids(&status)
        .ok_or_else(|| format!("the status of process {pid} names no uids"))?;
    let mut cgroups = vec![
        cgroup::process_cgroup_path(pid)
            .map_err(|e| format!("the cgroup of process {pid} is unreadable: {e}"))?,
    ];
    // Threads of a threaded subtree can sit in other cgroups than the
    // leader; a thread that ended meanwhile is skipped.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("the threads of process {pid} are unreadable: {e}"))?;
    for t in tasks.flatten() {
        let cg = std::fs::read_to_string(t.path().join("cgroup")).ok();
        if let Some(path) = cg.as_deref().and_then(cgroup2_line)
            && !cgroups.iter().any(|c| c == path)
        {
            cgroups.push(path.to_owned());
        }
    }
    // A cgroup outside the agent's own cgroup namespace reads as `/..`;
    // it cannot be looked up under the mount.
    if let Some(p) = cgroups.iter().find(|p| outside_namespace(p)) {
        return Err(format!(
            "process {pid} runs in cgroup {p}, outside the agent's cgroup namespace"
        ));
    }
    let mut cgroup_ids = Vec::new();
    for path in &cgroups {
        for id in
            ancestry_ids(path, mount).map_err(|e| format!("cgroup {path} of process {pid}: {e}"))?
        {
            if !cgroup_ids.contains(&id) {
                cgroup_ids.push(id);
            }
        }
    }
    Ok((
        gids,
        Located {
            cgroups,
            cgroup_ids,
            uids,
        },
    ))
}

fn outside_namespace(cgroup_path: &str) -> bool {
    cgroup_path.split('/').any(|c| c == "..")
}

fn cgroup2_line(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The ids of cgroup `path` and every ancestor up to the root, leaf first.
fn ancestry_ids(path: &str, mount: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = vec![cgroup::cgroup_id(&cgroup::cgroup_dir(mount, path))?];
    let mut cur = path.trim_end_matches('/');
    while let Some(i) = cur.rfind('/') {
        cur = &cur[..i];
        // cgroup_dir maps "" to the mount itself.
        if let Ok(id) = cgroup::cgroup_id(&cgroup::cgroup_dir(mount, cur)) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Whether the pidfd still refers to a live process numbered `pid`
/// (`Pid:` in its fdinfo is -1 once the process has been reaped).
fn pidfd_names(fd: &OwnedFd, pid: u32) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default();
    parse_fdinfo_pid(&info) == Some(i64::from(pid))
}

fn parse_fdinfo_pid(info: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The real, effective, saved and filesystem uids in `/proc/<pid>/status`.
fn parse_status_uids(status: &str) -> Option<Vec<u32>> {
    let rest = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut out: Vec<u32> = Vec::new();
    for u in rest.split_whitespace() {
        let u = u.parse().ok()?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Every gid in `/proc/<pid>/status` (`Gid:` effective and `Groups:`).
pub(crate) fn parse_status_groups(status: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut seen = false;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Gid:") {
            // real, effective, saved, fs: the effective one counts.
            if let Some(g) = rest.split_whitespace().nth(1).and_then(|g| g.parse().ok()) {
                out.push(g);
            }
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            seen = true;
            out.extend(
                rest.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out.dedup();
    seen.then_some(out)
}

/// The user's groups from the group database (when /proc is unavailable).
fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Some(user) = User::from_uid(Uid::from_raw(uid)).ok().flatten() else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_groups_are_read() {
        let s = "Name:\tpsql\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t101\t100\t100\nGroups:\t4 24 27 \n";
        assert_eq!(parse_status_groups(s), Some(vec![101, 4, 24, 27]));
        assert_eq!(parse_status_groups("Name: x\n"), None);
    }

    #[test]
    fn approvers_by_uid_and_group() {
        let p = Peer {
            uid: 4242,
            gid: 0,
            pid: None,
            gids: vec![0],
            uids: vec![4242],
            place: Place::Unknown { why: "test".into() },
        };
        let by_uid = Approvers {
            groups: vec![],
            uids: vec![4242],
        };
        assert!(p.is_approver(&by_uid));
        // gid 0 is "root" on every Linux system.
        let by_group = Approvers {
            groups: vec!["root".into()],
            uids: vec![],
        };
        assert!(p.is_approver(&by_group));
        let neither = Approvers {
            groups: vec!["no-such-group-warden".into()],
            uids: vec![1],
        };
        assert!(!p.is_approver(&neither));
    }

    #[test]
    fn fdinfo_pid_is_read() {
        assert_eq!(
            parse_fdinfo_pid("pos:\t0\nflags:\t02000002\nPid:\t4242\nNSpid:\t4242\n"),
            Some(4242)
        );
        assert_eq!(parse_fdinfo_pid("Pid:\t-1\n"), Some(-1));
        assert_eq!(parse_fdinfo_pid("pos: 0\n"), None);
    }

    #[test]
    fn status_uids_are_read_all_four() {
        let s = "Name:\tsu\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uids(s), Some(vec![1000, 0]));
        assert_eq!(parse_status_uids("Uid:\tx\n"), None);
        assert_eq!(parse_status_uids("Name: x\n"), None);
    }

    #[test]
    fn cgroup_lines_and_foreign_namespaces_are_read() {
        assert_eq!(
            cgroup2_line("1:name=systemd:/\n0::/app.slice/x\n"),
            Some("/app.slice/x")
        );
        assert_eq!(cgroup2_line("1:cpu:/\n"), None);
        assert!(outside_namespace("/../../system.slice/app.service"));
        assert!(!outside_namespace("/app.slice/x..y"));
    }

    #[test]
    fn ancestry_runs_from_the_leaf_to_the_root() {
        let mount = cgroup::cgroup2_mount().unwrap();
        let me = std::process::id();
        let own = cgroup::process_cgroup_path(me).unwrap();
        let ids = ancestry_ids(&own, &mount).unwrap();
        let own_id = cgroup::cgroup_id(&cgroup::cgroup_dir(&mount, &own)).unwrap();
        let root_id = cgroup::cgroup_id(&mount).unwrap();
        assert_eq!(ids.first(), Some(&own_id), "leaf first");
        assert_eq!(ids.last(), Some(&root_id), "up to the root");
        assert_eq!(
            ids.len(),
            own.split('/').filter(|c| !c.is_empty()).count() + 1
        );
        assert_eq!(ancestry_ids("/", &mount).unwrap(), vec![root_id]);
        assert!(ancestry_ids("/no/such/warden-cgroup", &mount).is_err());
    }

    #[test]
    fn a_connected_peer_is_located_in_its_cgroup_with_its_ancestors() {
        let mount = cgroup::cgroup2_mount().unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut asked = None;
        let p = Peer::of_stream(&a, &mount, |l| {
            asked = Some(l.clone());
            l.uids.iter().map(|u| format!("acct-of-{u}")).collect()
        })
        .unwrap();
        drop(b);
        let me = std::process::id();
        assert_eq!(p.pid, Some(me));
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert_eq!(p.uids.first(), Some(&p.uid));
        let own = cgroup::process_cgroup_path(me).unwrap();
        let root_id = cgroup::cgroup_id(&mount).unwrap();
        let asked = asked.unwrap();
        assert_eq!(asked.cgroups.first(), Some(&own));
        let all = ancestry_ids(&own, &mount).unwrap();
        assert!(all.iter().all(|id| asked.cgroup_ids.contains(id)));
        let Place::Known {
            cgroups,
            cgroup_ids,
            accounts,
        } = &p.place
        else {
            panic!("{:?}", p.place);
        };
        assert_eq!(cgroups, &asked.cgroups);
        assert!(!cgroup_ids.contains(&root_id), "the root holds everyone");
        assert_eq!(accounts, &vec![format!("acct-of-{}", p.uid)]);
    }

    #[test]
    fn a_peer_whose_process_ended_is_not_placed() {
        let mount = cgroup::cgroup2_mount().unwrap();
        let path = std::env::temp_dir().join(format!("warden-peer-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // A child connects, then exits and is reaped before the accept.
        let status = std::process::Command::new("python3")
            .arg("-c")
            .arg("import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let (stream, _) = listener.accept().unwrap();
        let p = Peer::of_stream(&stream, &mount, |_| vec!["never".into()]).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&p.place, Place::Unknown { why } if why.contains("ended") || why.contains("unreadable")),
            "{:?}",
            p.place
        );
    }
}
