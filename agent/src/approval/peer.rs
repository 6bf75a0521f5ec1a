//! Who is on the other end of the approvals socket: uid, gid and pid from
//! SO_PEERCRED, the user name, and every group the process holds (from
//! `/proc/<pid>/status`, else the user's group list), and whether that makes
//! it an approver under `[approvals] approvers`.

use nix::unistd::{Gid, Group, Uid, User};

use crate::audit::event::ApproverIdentity;
use crate::config::approvals::Approvers;

/// A peer's credentials with its group ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
}

impl Peer {
    /// Completes SO_PEERCRED facts with the process's groups.
    pub fn from_cred(uid: u32, gid: u32, pid: Option<u32>) -> Peer {
        let mut gids = pid
            .and_then(proc_groups)
            .unwrap_or_else(|| user_groups(uid, gid));
        if !gids.contains(&gid) {
            gids.insert(0, gid);
        }
        Peer {
            uid,
            gid,
            pid,
            gids,
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
}
