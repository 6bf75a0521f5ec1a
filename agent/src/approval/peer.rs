//! Who is on the other end of the approvals socket, learnt when the
//! connection is accepted: uid, gid and pid from SO_PEERCRED, a pidfd of the
//! process (SO_PEERPIDFD), every group it holds and the cgroup it sits in
//! (from `/proc/<pid>`, read while the pidfd shows that very process alive,
//! so the pid cannot have been reused), the accounts that cgroup (or one of
//! its ancestors) or the uid is enrolled for, and whether that makes it an
//! approver under `[approvals] approvers`.
//!
//! The groups come from `/proc` rather than SO_PEERGROUPS: no crate in the
//! tree offers that option without `unsafe`, which the agent forbids; with
//! the pidfd check they are the groups of the process that connected.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::{Gid, Group, Uid, User};

use crate::audit::event::ApproverIdentity;
use crate::config::approvals::Approvers;
use crate::ebpf::cgroup;

/// Where a peer's process sat when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Its cgroup2 path (relative to the mount), and the accounts enrolled
    /// for that cgroup, one of its ancestors, or the peer's uid.
    Known {
        cgroup: String,
        accounts: Vec<String>,
    },
    /// Could not be learnt: such a peer decides nothing.
    Unknown { why: String },
}

/// A peer's credentials with its group ids and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
    pub place: Place,
}

impl Peer {
    /// The peer of an accepted Unix stream, learnt at once (before its
    /// request is read). `enrolled` names the accounts enrolled for any of
    /// the given cgroup ids (the peer's cgroup and its ancestors) or for
    /// the uid.
    pub fn of_stream<S: AsFd>(
        stream: &S,
        cgroup_mount: &Path,
        enrolled: impl FnOnce(&[u64], u32) -> Vec<String>,
    ) -> std::io::Result<Peer> {
        let cred = getsockopt(stream, sockopt::PeerCredentials)?;
        let uid = cred.uid();
        let gid = cred.gid();
        let pid = u32::try_from(cred.pid()).ok().filter(|p| *p != 0);
        // ENOPROTOOPT before Linux 6.5: the /proc facts are then read
        // without proof that the pid was not reused.
        let pidfd = getsockopt(stream, sockopt::PeerPidfd).ok();
        let gids = pid
            .and_then(proc_groups)
            .unwrap_or_else(|| user_groups(uid, gid));
        let place = match pid {
            None => Place::Unknown {
                why: "the kernel reported no pid".into(),
            },
            Some(pid) => match locate(pid, cgroup_mount) {
                Err(why) => Place::Unknown { why },
                Ok(_) if pidfd.as_ref().is_some_and(|fd| !pidfd_names(fd, pid)) => Place::Unknown {
                    why: format!("process {pid} ended before it could be located"),
                },
                Ok((cgroup, ids)) => Place::Known {
                    accounts: enrolled(&ids, uid),
                    cgroup,
                },
            },
        };
        Ok(Peer::with_groups(uid, gid, pid, gids, place))
    }

    fn with_groups(uid: u32, gid: u32, pid: Option<u32>, mut gids: Vec<u32>, place: Place) -> Peer {
        if !gids.contains(&gid) {
            gids.insert(0, gid);
        }
        Peer {
            uid,
            gid,
            pid,
            gids,
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

/// The cgroup2 path of `pid` and the cgroup ids of it and every ancestor
/// up to the root, leaf first.
fn locate(pid: u32, mount: &Path) -> Result<(String, Vec<u64>), String> {
    let path = cgroup::process_cgroup_path(pid)
        .map_err(|e| format!("the cgroup of process {pid} is unreadable: {e}"))?;
    let mut ids = Vec::new();
    let mut cur = path.as_str();
    loop {
        match cgroup::cgroup_id(&cgroup::cgroup_dir(mount, cur)) {
            Ok(id) => ids.push(id),
            Err(e) if ids.is_empty() => {
                return Err(format!("cgroup {path} of process {pid}: {e}"));
            }
            Err(_) => {}
        }
        match cur.rfind('/') {
            Some(0) if cur.len() > 1 => cur = "/",
            Some(i) if i > 0 => cur = &cur[..i],
            _ => break,
        }
    }
    Ok((path, ids))
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

/// Every gid in `/proc/<pid>/status` (`Gid:` effective and `Groups:`).
fn proc_groups(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_groups(&status)
}

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
    fn a_connected_peer_is_located_in_its_cgroup_with_its_ancestors() {
        let mount = cgroup::cgroup2_mount().unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut asked = Vec::new();
        let p = Peer::of_stream(&a, &mount, |ids, uid| {
            asked.extend_from_slice(ids);
            vec![format!("acct-of-{uid}")]
        })
        .unwrap();
        drop(b);
        let me = std::process::id();
        assert_eq!(p.pid, Some(me));
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        let own = cgroup::process_cgroup_path(me).unwrap();
        let own_id = cgroup::cgroup_id(&cgroup::cgroup_dir(&mount, &own)).unwrap();
        let root_id = cgroup::cgroup_id(&mount).unwrap();
        assert_eq!(asked.first(), Some(&own_id), "leaf first");
        assert_eq!(asked.last(), Some(&root_id), "up to the root");
        assert_eq!(
            p.place,
            Place::Known {
                cgroup: own,
                accounts: vec![format!("acct-of-{}", p.uid)],
            }
        );
    }
}
