//! Kernel denials: what Warden's BPF LSM programs refused an enrolled
//! workload (`bpf()`, leaving its cgroup, `SO_MARK`, raw sockets, ptrace of
//! or signals to the agent, Warden's files), one event each, or one summary
//! event with a count when they come faster than the agent records them.
//!
//! - OCSF: Process Activity (class 1007, category System Activity),
//!   activity Other, `action` Denied, `disposition` Blocked; the actor is
//!   the denied process; Warden's own fields under `unmapped.warden.kernel`.
//! - store columns: `class_uid` 1007, `activity` "denied", `decision`
//!   "refused", `account` (the enrolled account, when known), no target or
//!   session, `reason` = the denial's kind (`bpf`, `cgroup_write`, ...).

use serde::{Deserialize, Serialize};

use super::{
    ACTIVITY_ID_OTHER, AuditError, DeviceSer, SeqTemplate, TemplateBuilder, decode_err, device_ser,
};

/// OCSF Process Activity class.
pub const CLASS_UID_PROCESS_ACTIVITY: u32 = 1007;
/// OCSF System Activity category.
const CATEGORY_UID_SYSTEM: u32 = 1;
/// Store `activity` column of kernel denials.
pub const KERNEL_ACTIVITY: &str = "denied";
/// Store `decision` column of kernel denials.
pub const KERNEL_DECISION: &str = "refused";

/// One denial (or `count` of them folded into one event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDenial {
    /// When the kernel denied it (the first of a summary), ms since the epoch.
    pub time_ms: i64,
    /// `bpf`, `cgroup_write`, `clone_into_cgroup`, `so_mark`, `raw_socket`,
    /// `ptrace`, `protected_file`, `signal`, `protected_change`, or
    /// `suppressed` for a summary of denials not recorded one by one.
    pub kind: String,
    /// What exactly (the bpf command, the socket family and type, the file,
    /// the target cgroup...), no secrets.
    pub detail: String,
    /// The enrolled account the process belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// `cgroup` or `uid`: how the process is enrolled, and the enrolled id.
    pub enrolled_by: String,
    pub enrolled_id: u64,
    /// Denials this event stands for (1, or more for a summary).
    pub count: u64,
}

#[derive(Serialize)]
struct Head<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    time: i64,
    severity_id: u8,
    severity: &'static str,
    action_id: u8,
    action: &'static str,
    disposition_id: u8,
    disposition: &'static str,
    status_id: u8,
    status: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Middle<'a> {
    actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSer<'a>>,
}

#[derive(Serialize)]
struct Actor<'a> {
    process: ActorProcess<'a>,
    user: ActorUser,
}

#[derive(Serialize)]
struct ActorProcess<'a> {
    pid: u32,
    name: &'a str,
}

#[derive(Serialize)]
struct ActorUser {
    uid: String,
}

#[derive(Serialize)]
struct Ext<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    decision: &'static str,
    reason: &'a str,
    kernel: &'a KernelDenial,
}

/// The event bytes of `ev` with the seq left open.
pub fn kernel_template(
    ev: &KernelDenial,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    let message = if ev.count > 1 || ev.kind == "suppressed" {
        format!("{} kernel denials to enrolled workloads", ev.count)
    } else {
        format!(
            "{} denied to enrolled process {} ({}, uid {}): {}",
            ev.kind, ev.pid, ev.comm, ev.uid, ev.detail
        )
    };
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &Head {
            activity_id: ACTIVITY_ID_OTHER,
            activity_name: "Other",
            category_uid: CATEGORY_UID_SYSTEM,
            category_name: "System Activity",
            class_uid: CLASS_UID_PROCESS_ACTIVITY,
            class_name: "Process Activity",
            type_uid: CLASS_UID_PROCESS_ACTIVITY * 100 + u32::from(ACTIVITY_ID_OTHER),
            type_name: "Process Activity: Other",
            time: ev.time_ms,
            severity_id: 4,
            severity: "High",
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            status_id: 2,
            status: "Failure",
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, None)?;
    b.members(
        &Middle {
            actor: Actor {
                process: ActorProcess {
                    pid: ev.tgid,
                    name: &ev.comm,
                },
                user: ActorUser {
                    uid: ev.uid.to_string(),
                },
            },
            device: device_ser(host),
        },
        false,
    )?;
    b.unmapped_and_close(&Ext {
        account: ev.account.as_deref(),
        decision: KERNEL_DECISION,
        reason: &ev.kind,
        kernel: ev,
    })
}

#[derive(Deserialize)]
struct Doc {
    class_uid: u32,
    unmapped: DocUnmapped,
}

#[derive(Deserialize)]
struct DocUnmapped {
    warden: DocWarden,
}

#[derive(Deserialize)]
struct DocWarden {
    kernel: KernelDenial,
}

/// The denial stored in `data`.
pub fn decode_kernel(data: &[u8]) -> Result<KernelDenial, AuditError> {
    let doc: Doc = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not a kernel denial: {e}")))?;
    if doc.class_uid != CLASS_UID_PROCESS_ACTIVITY {
        return Err(decode_err(format!(
            "class_uid {} is not a kernel denial",
            doc.class_uid
        )));
    }
    Ok(doc.unmapped.warden.kernel)
}

/// The part of a `warden audit tail` line after the time, seq, activity
/// and decision.
pub fn kernel_text(ev: &KernelDenial) -> String {
    let mut s = format!(
        " kind={} account={} pid={} uid={} comm={} cgroup={} enrolled_by={}",
        ev.kind,
        ev.account.as_deref().unwrap_or("-"),
        ev.tgid,
        ev.uid,
        ev.comm,
        ev.cgroup_path
            .clone()
            .unwrap_or_else(|| ev.cgroup_id.to_string()),
        ev.enrolled_by,
    );
    if ev.count != 1 {
        s.push_str(&format!(" count={}", ev.count));
    }
    if !ev.detail.is_empty() {
        s.push_str(&format!(" detail={:?}", ev.detail));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Denials go through the store like every event: `audit verify`
    /// accepts them (columns derived from the hashed data), `audit tail`
    /// prints them, `--account` finds them.
    #[tokio::test]
    async fn stored_denials_verify_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let (h, task) = crate::audit::spawn_writer(&path, crate::audit::testutil::opts(0)).unwrap();
        let mut ev = sample();
        h.record(ev.clone()).await.unwrap();
        ev.kind = "suppressed".into();
        ev.count = 42;
        ev.account = None;
        h.record(ev).await.unwrap();
        h.shutdown().await;
        tokio::task::spawn_blocking(move || task.join())
            .await
            .unwrap()
            .unwrap();
        let report = crate::audit::verify(&path, None).unwrap();
        assert!(report.is_intact(), "{report:?}");
        let r = crate::audit::AuditReader::open(&path).unwrap();
        let all = r.query(&Default::default(), 0, 100).unwrap();
        let texts: Vec<String> = all.iter().map(crate::audit::format_text).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("denied refused kind=bpf account=orders pid=7")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t.contains("count=42")), "{texts:?}");
        let only = crate::audit::TailFilter {
            account: Some("orders".into()),
            ..Default::default()
        };
        assert_eq!(r.query(&only, 0, 100).unwrap().len(), 1);
    }

    fn sample() -> KernelDenial {
        KernelDenial {
            time_ms: 1_700_000_000_000,
            kind: "bpf".into(),
            detail: "bpf(BPF_MAP_DELETE_ELEM)".into(),
            account: Some("orders".into()),
            pid: 7,
            tgid: 7,
            uid: 0,
            comm: "evil".into(),
            cgroup_id: 42,
            cgroup_path: Some("/x".into()),
            enrolled_by: "cgroup".into(),
            enrolled_id: 42,
            count: 1,
        }
    }

    #[test]
    fn round_trips_through_the_template() {
        let ev = sample();
        let data = kernel_template(&ev, "c", "h").unwrap().fill(3);
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(v["class_uid"], 1007);
        assert_eq!(v["metadata"]["uid"], "c:3");
        assert_eq!(v["unmapped"]["warden"]["seq"], 3);
        assert_eq!(v["unmapped"]["warden"]["reason"], "bpf");
        assert_eq!(decode_kernel(&data).unwrap(), ev);
        assert!(kernel_text(&ev).contains("kind=bpf account=orders pid=7"));
    }
}
