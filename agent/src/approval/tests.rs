//! Unit tests of the approval service against a real audit store.

use super::*;
use crate::audit::reader::{AuditReader, TailFilter, format_text};
use crate::audit::{WriterOptions, store::SyncMode};
use crate::config::approvals::Approvers;

fn opts() -> WriterOptions {
    WriterOptions {
        sync: SyncMode::Normal,
        batch_max: 64,
        host: "h".into(),
        checkpoint_every: 0,
        checkpoint_interval: Duration::ZERO,
    }
}

fn cfg(timeout: u64) -> ApprovalsSection {
    ApprovalsSection {
        approvers: Approvers {
            groups: vec![],
            uids: vec![5001, 1000],
        },
        approval_timeout_secs: timeout,
        ..ApprovalsSection::default()
    }
}

fn spec(stmt: &str) -> RequestSpec {
    RequestSpec {
        account: "orders-api".into(),
        target: "orders-pg".into(),
        protocol: "postgres".into(),
        session: Some(SessionId(7)),
        process: ProcessInfo {
            pid: Some(42),
            uid: Some(1000),
            ..ProcessInfo::default()
        },
        identity: None,
        statement: stmt.into(),
        fingerprint: fingerprint::shape_fingerprint(
            "postgres",
            crate::policy::sql::statement_shape(stmt).as_deref(),
            stmt,
        ),
        policy: Some("p".into()),
        rule: Some("deletes".into()),
        risk: "write".into(),
        account_uids: vec![1001],
    }
}

fn peer(uid: u32) -> Peer {
    Peer {
        uid,
        gid: uid,
        pid: None,
        gids: vec![uid],
        uids: vec![uid],
        place: peer::Place::Known {
            cgroups: vec!["/user.slice/approver".into()],
            cgroup_ids: vec![77, 7],
            accounts: vec![],
        },
    }
}

fn approve(reason: &str, grant_secs: Option<u64>) -> Decision {
    Decision {
        approve: true,
        reason: Some(reason.into()),
        grant_secs,
    }
}

async fn held(svc: &Arc<Approvals>, stmt: &str) -> Hold {
    match svc.request(spec(stmt)).await.unwrap() {
        Gate::Held(h) => h,
        Gate::Granted { .. } => panic!("expected a hold"),
    }
}

/// Stops the audit writer and returns the approval statuses it recorded.
async fn stop(
    audit: crate::audit::AuditHandle,
    task: crate::audit::WriterTask,
    path: &std::path::Path,
) -> Vec<String> {
    audit.shutdown().await;
    tokio::task::spawn_blocking(move || task.join())
        .await
        .unwrap()
        .unwrap();
    statuses(path)
}

fn statuses(path: &std::path::Path) -> Vec<String> {
    let r = AuditReader::open(path).unwrap();
    r.query(&TailFilter::default(), 0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.activity == "approval")
        .map(|e| {
            let line = format_text(&e);
            assert!(line.contains("account=orders-api"), "{line}");
            e.decision
        })
        .collect()
}

#[tokio::test]
async fn approve_deny_timeout_withdraw_and_refusals_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let (audit, task) = crate::audit::spawn_writer(&path, opts()).unwrap();
    let svc = Approvals::new(cfg(1), audit.clone(), "warden approvals".into());

    // Approved by another uid.
    let mut h = held(&svc, "DELETE FROM orders WHERE id = 1").await;
    assert_eq!(h.id.len(), ID_LEN);
    assert!(
        h.approve_line()
            .ends_with(&format!("approvals approve {}", h.id))
    );
    assert_eq!(svc.list().pending.len(), 1);
    // The requester's own uid (process uid 1000) is an approver but cannot
    // decide; an enrolled uid of the account neither; a stranger is no
    // approver.
    let e = svc
        .decide(&h.id, &peer(1000), approve("mine", None))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApprovalError::OwnRequest { uid: 1000, .. }),
        "{e}"
    );
    let e = svc
        .decide(&h.id, &peer(4000), approve("x", None))
        .await
        .unwrap_err();
    assert!(matches!(e, ApprovalError::NotApprover { uid: 4000 }), "{e}");
    // An approver uid whose process sits in (or below) a cgroup enrolled for
    // the account cannot decide; one that could not be located neither.
    let mut inside = peer(5001);
    inside.place = peer::Place::Known {
        cgroups: vec!["/system.slice/orders-api.service/shell".into()],
        cgroup_ids: vec![12, 11, 10],
        accounts: vec!["orders-api".into(), "other".into()],
    };
    let e = svc
        .decide(&h.id, &inside, approve("self-service", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApprovalError::EnrolledPeer { cgroup, account }
            if cgroup.ends_with("/shell") && account == "orders-api"),
        "{e}"
    );
    let mut unplaced = peer(5001);
    unplaced.place = peer::Place::Unknown {
        why: "process 9 ended before it could be located".into(),
    };
    let e = svc
        .decide(&h.id, &unplaced, approve("x", None))
        .await
        .unwrap_err();
    assert!(matches!(e, ApprovalError::UnplacedPeer { .. }), "{e}");
    let id = h.id.clone();
    let s2 = Arc::clone(&svc);
    let decided =
        tokio::spawn(async move { s2.decide(&id, &peer(5001), approve("ok", None)).await });
    let r = h.wait().await;
    assert!(r.approved(), "{r:?}");
    assert!(decided.await.unwrap().unwrap().approved());
    assert_eq!(svc.show(&h.id).unwrap().status, "approved");
    assert!(svc.list().pending.is_empty());

    // Denied with a reason.
    let mut h = held(&svc, "DELETE FROM orders WHERE id = 2").await;
    let d = Decision {
        approve: false,
        reason: Some("not today".into()),
        grant_secs: None,
    };
    svc.decide(&h.id, &peer(5001), d).await.unwrap();
    match h.wait().await {
        Resolution::Denied { reason, approver } => {
            assert_eq!(reason.as_deref(), Some("not today"));
            assert_eq!(approver.uid, 5001);
        }
        other => panic!("{other:?}"),
    }

    // Timed out (1 s).
    let mut h = held(&svc, "DELETE FROM orders WHERE id = 3").await;
    let t = std::time::Instant::now();
    assert_eq!(h.wait().await, Resolution::TimedOut);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(
        svc.decide(&h.id, &peer(5001), approve("late", None))
            .await
            .is_err()
    );

    // Withdrawn (cancel), and withdrawn by dropping the hold.
    let mut h = held(&svc, "DELETE FROM orders WHERE id = 4").await;
    assert!(svc.withdraw(&h.id, "cancel request").await);
    assert!(matches!(h.wait().await, Resolution::Withdrawn { .. }));
    let h = held(&svc, "DELETE FROM orders WHERE id = 5").await;
    let id = h.id.clone();
    drop(h);
    for _ in 0..100 {
        if svc.show(&id).is_some_and(|v| v.status == "withdrawn") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(svc.show(&id).unwrap().status, "withdrawn");

    assert_eq!(
        stop(audit, task, &path).await,
        vec![
            "requested",
            "decision_refused",
            "decision_refused",
            "decision_refused",
            "decision_refused",
            "approved",
            "requested",
            "denied",
            "requested",
            "timed_out",
            "requested",
            "withdrawn",
            "requested",
            "withdrawn",
        ]
    );
    let report = crate::audit::verify(&path, None).unwrap();
    assert!(report.is_intact(), "{report}");
    let out = dir.path().join("bundle");
    let rep = crate::audit::export(&path, 0, i64::MAX / 2, &out).unwrap();
    let lines = std::fs::read_to_string(out.join(crate::audit::export::APPROVALS_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 14, "{rep:?}");
    crate::audit::verify_export(&out).unwrap();
}

#[tokio::test]
async fn grants_cover_the_fingerprint_until_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let (audit, task) = crate::audit::spawn_writer(&path, opts()).unwrap();
    let mut c = cfg(5);
    c.require_reason = true;
    let svc = Approvals::new(c, audit.clone(), "warden approvals".into());

    let mut h = held(&svc, "DELETE FROM orders WHERE id = 1").await;
    let no_reason = Decision {
        approve: true,
        reason: None,
        grant_secs: Some(60),
    };
    assert!(matches!(
        svc.decide(&h.id, &peer(5001), no_reason).await,
        Err(ApprovalError::ReasonRequired)
    ));
    svc.decide(&h.id, &peer(5001), approve("batch job", Some(60)))
        .await
        .unwrap();
    let grant_id = match h.wait().await {
        Resolution::Approved {
            grant_id: Some(g), ..
        } => g,
        other => panic!("{other:?}"),
    };
    assert!(grant_id.starts_with("g-"));
    // Same fingerprint (other literal): through; another statement: held.
    match svc
        .request(spec("delete from orders where id = 99"))
        .await
        .unwrap()
    {
        Gate::Granted { grant_id: g } => assert_eq!(g, grant_id),
        Gate::Held(_) => panic!("the grant should cover it"),
    }
    let other = held(&svc, "DELETE FROM orders").await;
    svc.withdraw(&other.id, "test").await;
    let l = svc.list();
    assert_eq!(l.grants.len(), 1);
    assert_eq!(l.grants[0].uses, 1);
    // Only approvers revoke.
    assert!(svc.revoke(&grant_id, &peer(4000), None).await.is_err());
    svc.revoke(&grant_id, &peer(5001), Some("done".into()))
        .await
        .unwrap();
    assert!(svc.list().grants.is_empty());
    let h = held(&svc, "DELETE FROM orders WHERE id = 3").await;
    svc.withdraw(&h.id, "test").await;

    // A grant that expires.
    let mut h = held(&svc, "UPDATE orders SET x = 1").await;
    svc.decide(&h.id, &peer(5001), approve("short", Some(1)))
        .await
        .unwrap();
    assert!(h.wait().await.approved());
    assert!(matches!(
        svc.request(spec("UPDATE orders SET x = 2")).await.unwrap(),
        Gate::Granted { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let h = held(&svc, "UPDATE orders SET x = 3").await;
    svc.withdraw(&h.id, "test").await;

    let s = stop(audit, task, &path).await;
    assert_eq!(s.iter().filter(|x| *x == "grant_used").count(), 2, "{s:?}");
    assert_eq!(s.iter().filter(|x| *x == "revoked").count(), 1, "{s:?}");
    assert!(crate::audit::verify(&path, None).unwrap().is_intact());
}

#[test]
fn resolutions_describe_who_decided_and_why() {
    let alice = ApproverIdentity {
        uid: 1001,
        user: Some("alice".into()),
        ..Default::default()
    };
    let nameless = ApproverIdentity {
        uid: 1002,
        ..Default::default()
    };
    let cases = [
        (
            Resolution::Approved {
                approver: alice.clone(),
                reason: Some("ticket 7".into()),
                grant_id: Some("g-abc".into()),
            },
            "approval r1 approved by alice (grant g-abc): ticket 7",
        ),
        (
            Resolution::Denied {
                approver: nameless,
                reason: None,
            },
            "approval r1 denied by uid 1002",
        ),
        (Resolution::TimedOut, "approval r1 timed out after 30s"),
        (
            Resolution::Withdrawn {
                why: "the client closed its connection".into(),
            },
            "approval r1 withdrawn (the client closed its connection)",
        ),
        (
            Resolution::Failed {
                why: "audit down".into(),
            },
            "approval r1 failed: audit down",
        ),
    ];
    for (res, want) in cases {
        assert_eq!(res.describe("r1", 30), want);
    }
}

#[tokio::test]
async fn a_decider_holding_an_account_uid_or_below_the_requesters_cgroup_cannot_decide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let (audit, task) = crate::audit::spawn_writer(&path, opts()).unwrap();
    let svc = Approvals::new(cfg(5), audit.clone(), "warden approvals".into());
    let mut s = spec("DELETE FROM orders WHERE id = 9");
    s.process.cgroup_id = Some(11);
    s.process.cgroup_path = Some("/user.slice/session-3.scope".into());
    let Gate::Held(mut h) = svc.request(s).await.unwrap() else {
        panic!("expected a hold");
    };
    // Effective uid 5001 (an approver), but the real or saved uid is the
    // requester's (1000) or an enrolled uid of the account (1001).
    for own in [1000, 1001] {
        let mut setuid = peer(5001);
        setuid.uids = vec![5001, own];
        let e = svc
            .decide(&h.id, &setuid, approve("x", None))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ApprovalError::OwnRequest { uid, .. } if uid == own),
            "{e}"
        );
    }
    // In a cgroup below the requesting process's (id 11), enrolled or not.
    let mut below = peer(5001);
    below.place = peer::Place::Known {
        cgroups: vec!["/user.slice/session-3.scope/sudo".into()],
        cgroup_ids: vec![12, 11, 10],
        accounts: vec![],
    };
    let e = svc
        .decide(&h.id, &below, approve("x", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApprovalError::RequesterCgroup { requester, .. }
            if requester == "/user.slice/session-3.scope"),
        "{e}"
    );
    // Beside it: decides.
    assert!(
        svc.decide(&h.id, &peer(5001), approve("ok", None))
            .await
            .unwrap()
            .approved()
    );
    assert!(h.wait().await.approved());
    assert_eq!(
        stop(audit, task, &path).await,
        vec![
            "requested",
            "decision_refused",
            "decision_refused",
            "decision_refused",
            "approved"
        ]
    );
}

// --- `approve --learn` (issue 19) ---

#[tokio::test]
async fn approve_learn_adds_the_held_shape_only_for_allowlist_holds_and_by_an_approver() {
    use crate::policy::allowlist::{
        AllowlistFile, AllowlistSettings, GrantAllowlist, ListVerdict, Mode, OnNew, sql_fingerprint,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let (audit, task) = crate::audit::spawn_writer(&path, opts()).unwrap();
    let svc = Approvals::new(cfg(30), audit.clone(), "warden approvals".into());
    let list = dir.path().join("list.toml");
    std::fs::write(&list, "# reviewed\n").unwrap();
    let gate = Arc::new(
        GrantAllowlist::build(
            &AllowlistSettings {
                mode: Some(Mode::Enforce),
                allowlist: Some(list.clone()),
                on_new: Some(OnNew::Approve),
            },
            dir.path(),
            "orders-api",
            "orders-pg",
        )
        .unwrap()
        .unwrap(),
    );
    let stmt = "DELETE FROM orders WHERE id = 3";
    let fp = sql_fingerprint(stmt).unwrap();
    let listed = || gate.judge(Some(&fp), "postgres", "", "allowed").0 == ListVerdict::Listed;

    // Held by an approve rule (no candidate): --learn is refused, the
    // request stays pending.
    let mut plain = held(&svc, stmt).await;
    let e = svc
        .decide_learning(&plain.id, &peer(5001), approve("x", None), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApprovalError::Learn(learn::LearnError::NotLearnable { .. })
        ),
        "{e}"
    );
    assert_eq!(svc.list().pending.len(), 1);
    svc.decide(&plain.id, &peer(5001), approve("x", None))
        .await
        .unwrap();
    assert!(plain.wait().await.approved());

    // Held by the allow-list.
    let candidate = learn::LearnCandidate::of(
        Some(&gate),
        Some(&fp),
        "postgres",
        "DELETE FROM orders WHERE id = ?",
    );
    assert!(candidate.is_some());
    let mut h = match svc.request_learnable(spec(stmt), candidate).await.unwrap() {
        Gate::Held(h) => h,
        Gate::Granted { .. } => panic!("expected a hold"),
    };
    // The requester cannot learn it, nor deny with --learn.
    let own = svc
        .decide_learning(&h.id, &peer(1000), approve("mine", None), true)
        .await
        .unwrap_err();
    assert!(matches!(own, ApprovalError::OwnRequest { .. }), "{own}");
    let deny = Decision {
        approve: false,
        reason: Some("no".into()),
        grant_secs: None,
    };
    let e = svc
        .decide_learning(&h.id, &peer(5001), deny, true)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApprovalError::Learn(learn::LearnError::NotApproving)),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "# reviewed\n");
    assert!(!listed());

    // An approver learns it: approved, in the file, listed, on record.
    svc.decide_learning(&h.id, &peer(5001), approve("ticket 5", None), true)
        .await
        .unwrap();
    assert!(h.wait().await.approved());
    assert!(listed());
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(text.starts_with("# reviewed\n"), "{text}");
    assert!(AllowlistFile::load(&list).unwrap().contains(&fp.id));
    assert_eq!(
        svc.show(&h.id).unwrap().learned.as_deref(),
        Some(fp.id.as_str())
    );
    let statuses = stop(audit, task, &path).await;
    assert_eq!(
        statuses.iter().filter(|s| *s == "decision_refused").count(),
        3,
        "{statuses:?}"
    );
    let r = AuditReader::open(&path).unwrap();
    let learned: Vec<String> = r
        .query(&TailFilter::default(), 0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.activity == "approval")
        .filter_map(|e| {
            crate::audit::ocsf::decode_approval(&e.data)
                .ok()?
                .event
                .learned
        })
        .collect();
    assert_eq!(learned, vec![fp.id]);
}
