//! Datastore Activity (6005): database statements, encoded, templated and decoded.
//!
//! Statement mapping (one event when Warden decided, the *request* phase,
//! and one when the upstream answered, the *result* phase; both carry the
//! same `statement_seq`):
//! - class 6005 Datastore Activity, category 6 Application Activity,
//!   `activity_id` 4 Query for both phases, `type_uid` 600504; the phase is
//!   `unmapped.warden.statement.phase` (`request`/`result`);
//! - allowed: severity 1 Informational, action Allowed, disposition
//!   Allowed; every refusal (blocked, denied, approval_required, rejected):
//!   severity 3 Medium, action Denied, disposition Blocked (action and
//!   disposition as for connections, security-control profile); `status`
//!   Success when allowed and no error came back, else Failure, with the
//!   SQLSTATE as `status_code` and the (masked) error, or for a refusal the
//!   reason, as `status_detail`; `message` = e.g. "write statement blocked";
//! - `metadata` as for connections, `correlation_uid` = session;
//! - `src_endpoint` = `hostname` (the host, when known: the workload runs
//!   there) and `name` = the account; the client's address is on the
//!   connection events of the same `correlation_uid`; `dst_endpoint` =
//!   `svc_name` target; `actor.process` as for connections;
//! - `database` = `name` (the upstream database), `type_id` 1 Relational;
//!   `table.name` when the statement touches exactly one table; `type_id`
//!   1 Database; `query_info` = `query_string` (the statement, masked by
//!   the caller), `uid` = `"<session>:<statement_seq>"`; `duration` (ms)
//!   in the result phase;
//! - `unmapped.warden` = `account`, `target`, `decision` (a
//!   `StatementDecision`), `reason`, `session`, `protocol`, the process
//!   facts and `identity` as for connections, and `statement` = `phase`,
//!   `statement_seq`, `via`, `class`, `tables`, `functions`, `policy`,
//!   `rule`, `upstream_user`, and in the result phase `rows`,
//!   `values_masked`, `duration_us`, `command_tag`, `sqlstate`, `error`,
//!   `result` (`columns`, `sample`: masked rows, where SQL NULL is JSON
//!   `null`, the only nulls Warden writes); `unmapped.warden.seq` = seq;
//! - store columns: `class_uid` 6005, `activity` "statement" (request) or
//!   "result", `decision` = the statement decision, `account`, `target`,
//!   `session`, `reason`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The class as its events name it.
pub(super) const DATASTORE_ACTIVITY: OcsfClass = OcsfClass {
    uid: CLASS_UID_DATASTORE_ACTIVITY,
    name: "Datastore Activity",
    category_uid: CATEGORY_UID_APPLICATION,
    category_name: "Application Activity",
};

/// OCSF Datastore Activity class (database statements).
pub const CLASS_UID_DATASTORE_ACTIVITY: u32 = 6005;
/// OCSF `activity_id` Query of Datastore Activity (both phases of a
/// statement).
pub const ACTIVITY_ID_QUERY: u8 = 4;
/// Store `activity` column of a statement's request event.
pub const STATEMENT_ACTIVITY: &str = "statement";
/// Store `activity` column of a statement's result event.
pub const RESULT_ACTIVITY: &str = "result";

/// The store's `activity` column of a statement event of `phase`.
pub fn statement_activity_str(phase: StatementPhase) -> &'static str {
    match phase {
        StatementPhase::Request => STATEMENT_ACTIVITY,
        StatementPhase::Result => RESULT_ACTIVITY,
    }
}

/// The members of a Datastore Activity event before `metadata`.
#[derive(Serialize)]
pub(super) struct StmtHead<'a> {
    #[serde(flatten)]
    pub(super) head: ClassHead<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status_detail: Option<&'a str>,
    #[serde(flatten)]
    pub(super) verdict: VerdictSer,
    pub(super) message: &'a str,
}

/// The members of a Datastore Activity event between `metadata` and
/// `unmapped`.
#[derive(Serialize)]
pub(super) struct StmtMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<DeviceSer<'a>>,
    pub(super) src_endpoint: SrcEndpointSer<'a>,
    pub(super) dst_endpoint: SvcEndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<ActorSer<'a>>,
    pub(super) database: DatabaseSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) table: Option<NameSer<'a>>,
    pub(super) query_info: QueryInfoSer<'a>,
    pub(super) type_id: u8,
    #[serde(rename = "type")]
    pub(super) type_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct SrcEndpointSer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hostname: Option<&'a str>,
    pub(super) name: &'a str,
}

#[derive(Serialize)]
pub(super) struct SvcEndpointSer<'a> {
    pub(super) svc_name: &'a str,
}

#[derive(Serialize)]
pub(super) struct DatabaseSer<'a> {
    pub(super) name: &'a str,
    pub(super) type_id: u8,
    #[serde(rename = "type")]
    pub(super) type_name: &'static str,
}

#[derive(Serialize)]
pub(super) struct NameSer<'a> {
    pub(super) name: &'a str,
}

#[derive(Serialize)]
pub(super) struct QueryInfoSer<'a> {
    pub(super) query_string: &'a str,
    pub(super) uid: &'a str,
}

/// `unmapped.warden` of a statement event, without `seq`: the columns'
/// sources (account, target, decision, reason, session) where connection
/// events have them, then the process facts, then `statement`.
#[derive(Serialize)]
pub(super) struct StmtExtSer<'a> {
    pub(super) account: &'a str,
    pub(super) target: &'a str,
    pub(super) decision: StatementDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    pub(super) session: &'a str,
    pub(super) protocol: &'a str,
    #[serde(flatten)]
    pub(super) caller: CallerSer<'a, StmtIdentitySer<'a>>,
    pub(super) statement: StmtDocSer<'a>,
    // --- allow-lists (issue 19) ---
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) allowlist: Option<&'a crate::policy::allowlist::AllowlistFacts>,
}

/// The identity token's claims in a statement request event: a
/// [`TokenIdentity`] without the minted attestation, which belongs to the
/// connection (its open event carries it) and would be repeated, unchanged,
/// in every statement of the session.
#[derive(Serialize)]
pub(super) struct StmtIdentitySer<'a> {
    pub(super) source: &'a str,
    pub(super) iss: &'a str,
    pub(super) sub: &'a str,
    pub(super) aud: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) jti: Option<&'a str>,
    pub(super) exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) kid: Option<&'a str>,
    pub(super) alg: &'a str,
}

impl<'a> StmtIdentitySer<'a> {
    pub(super) fn of(t: &'a TokenIdentity) -> Self {
        Self {
            source: &t.source,
            iss: &t.iss,
            sub: &t.sub,
            aud: &t.aud,
            jti: t.jti.as_deref(),
            exp: t.exp,
            kid: t.kid.as_deref(),
            alg: &t.alg,
        }
    }
}

/// `unmapped.warden.statement`. No key here may be named like a member of
/// `unmapped.warden` that the fast probe reads (account, target, decision,
/// reason, session, seq).
#[derive(Serialize)]
pub(super) struct StmtDocSer<'a> {
    pub(super) phase: StatementPhase,
    pub(super) statement_seq: u64,
    pub(super) via: &'a str,
    pub(super) class: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) tables: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) functions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rule: Option<&'a str>,
    pub(super) upstream_user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) values_masked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) command_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sqlstate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<&'a ResultSummary>,
    /// Version of the compact canonical record this rendering was made
    /// from (see [`crate::audit::record`]); absent when the stored bytes are this
    /// JSON itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) record: Option<u8>,
}

/// `message` of a statement event, e.g. "write statement blocked" or
/// "read statement result: SELECT 3".
pub(super) fn statement_message(ev: &StatementEvent) -> String {
    match ev.phase {
        StatementPhase::Request => format!("{} statement {}", ev.class, ev.decision.as_str()),
        StatementPhase::Result => match (&ev.command_tag, &ev.sqlstate) {
            (_, Some(state)) => format!("{} statement failed (SQLSTATE {state})", ev.class),
            (Some(tag), None) => format!("{} statement result: {tag}", ev.class),
            (None, None) => format!("{} statement result", ev.class),
        },
    }
}

/// Encode a database statement as OCSF 1.8 Datastore Activity JSON with
/// the seq left open (see the module docs and [`SeqTemplate`]). `session`
/// is `ev.session.to_string()`.
pub fn statement_template(
    ev: &StatementEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    statement_template_of(ev, session, chain_id, host, None)
}

/// [`statement_template`] of a statement rendered from its compact
/// canonical record (`record`: the record's version, written into
/// `unmapped.warden.statement.record` so that `verify-export` knows to
/// recompute the chain over the record rather than over the JSON).
pub(crate) fn statement_template_of(
    ev: &StatementEvent,
    session: &str,
    chain_id: &str,
    host: &str,
    record: Option<u8>,
) -> Result<SeqTemplate, AuditError> {
    let allowed = ev.decision == StatementDecision::Allowed;
    let failed = !allowed || ev.sqlstate.is_some() || ev.error.is_some();
    let message = statement_message(ev);
    let query_uid = format!("{session}:{}", ev.statement_seq);
    // Who called is recorded with the request; the result is tied to it
    // (and to the connection's open event, which has every process fact)
    // by session and statement_seq.
    let request = ev.phase == StatementPhase::Request;
    let p = &ev.process;
    let no_process = ProcessInfo::default();
    let p = if request { p } else { &no_process };
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &StmtHead {
            head: ClassHead::new(
                &DATASTORE_ACTIVITY,
                (ACTIVITY_ID_QUERY, "Query"),
                "Datastore Activity: Query",
                ev.time_ms,
                severity(allowed),
                status(!failed),
            ),
            status_code: ev.sqlstate.as_deref(),
            status_detail: ev.error.as_deref().or(if allowed {
                None
            } else {
                ev.reason.as_deref()
            }),
            verdict: verdict(allowed),
            message: &message,
        },
        true,
    )?;
    b.raw(",");
    b.metadata(chain_id, Some(session))?;
    b.members(
        &StmtMiddle {
            device: device_ser(host),
            src_endpoint: SrcEndpointSer {
                hostname: (!host.is_empty()).then_some(host),
                name: &ev.account,
            },
            dst_endpoint: SvcEndpointSer {
                svc_name: &ev.target,
            },
            actor: actor_ser(p),
            database: DatabaseSer {
                name: &ev.database,
                type_id: 1,
                type_name: "Relational",
            },
            table: match ev.tables.as_slice() {
                [one] => Some(NameSer { name: one }),
                _ => None,
            },
            query_info: QueryInfoSer {
                query_string: &ev.statement,
                uid: &query_uid,
            },
            type_id: 1,
            type_name: "Database",
            duration: ev.duration_us.map(|us| us / 1000),
        },
        false,
    )?;
    b.unmapped_and_close(&StmtExtSer {
        account: &ev.account,
        target: &ev.target,
        decision: ev.decision,
        reason: ev.reason.as_deref(),
        session,
        protocol: &ev.protocol,
        caller: caller_ser(
            p,
            ev.identity
                .as_ref()
                .filter(|_| request)
                .map(StmtIdentitySer::of),
        ),
        statement: StmtDocSer {
            phase: ev.phase,
            statement_seq: ev.statement_seq,
            via: &ev.via,
            class: &ev.class,
            tables: &ev.tables,
            functions: &ev.functions,
            policy: ev.policy.as_deref(),
            rule: ev.rule.as_deref(),
            upstream_user: &ev.upstream_user,
            rows: ev.rows,
            values_masked: ev.values_masked,
            duration_us: ev.duration_us,
            command_tag: ev.command_tag.as_deref(),
            sqlstate: ev.sqlstate.as_deref(),
            error: ev.error.as_deref(),
            result: ev.result.as_ref(),
            record,
        },
        allowlist: ev.allowlist.as_ref(),
    })
}

/// Encode `ev` as event `seq` (see [`statement_template`]).
pub fn encode_statement(
    ev: &StatementEvent,
    seq: u64,
    chain_id: &str,
    host: &str,
) -> Result<Vec<u8>, AuditError> {
    Ok(statement_template(ev, &ev.session.to_string(), chain_id, host)?.fill(seq))
}

/// OCSF Datastore Activity event, for decoding.
#[derive(Debug, Deserialize)]
pub(super) struct DatastoreActivity {
    pub(super) activity_id: u8,
    pub(super) class_uid: u32,
    pub(super) time: i64,
    pub(super) metadata: Metadata,
    #[serde(default)]
    pub(super) device: Option<Device>,
    #[serde(default)]
    pub(super) actor: Option<Actor>,
    pub(super) database: DatabaseDoc,
    pub(super) query_info: QueryInfoDoc,
    pub(super) unmapped: StmtUnmapped,
}

#[derive(Debug, Deserialize)]
pub(super) struct DatabaseDoc {
    pub(super) name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct QueryInfoDoc {
    pub(super) query_string: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct StmtUnmapped {
    pub(super) warden: StmtExt,
}

#[derive(Debug, Deserialize)]
pub(super) struct StmtExt {
    // --- allow-lists (issue 19) ---
    #[serde(default)]
    pub(super) allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
    pub(super) account: String,
    pub(super) target: String,
    pub(super) decision: StatementDecision,
    #[serde(default)]
    pub(super) reason: Option<String>,
    pub(super) session: String,
    pub(super) protocol: String,
    #[serde(default)]
    pub(super) cgroup_id: Option<u64>,
    #[serde(default)]
    pub(super) cgroup_path: Option<String>,
    #[serde(default)]
    pub(super) tgid: Option<u32>,
    #[serde(default)]
    pub(super) gid: Option<u32>,
    #[serde(default)]
    pub(super) unit: Option<String>,
    #[serde(default)]
    pub(super) process_start_boot_ns: Option<u64>,
    #[serde(default)]
    pub(super) pid_reused: bool,
    #[serde(default)]
    pub(super) identity: Option<TokenIdentity>,
    pub(super) statement: StmtDoc,
    pub(super) seq: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct StmtDoc {
    pub(super) phase: StatementPhase,
    pub(super) statement_seq: u64,
    pub(super) via: String,
    pub(super) class: String,
    #[serde(default)]
    pub(super) tables: Vec<String>,
    #[serde(default)]
    pub(super) functions: Vec<String>,
    #[serde(default)]
    pub(super) policy: Option<String>,
    #[serde(default)]
    pub(super) rule: Option<String>,
    pub(super) upstream_user: String,
    #[serde(default)]
    pub(super) rows: Option<u64>,
    #[serde(default)]
    pub(super) values_masked: Option<u64>,
    #[serde(default)]
    pub(super) duration_us: Option<u64>,
    #[serde(default)]
    pub(super) command_tag: Option<String>,
    #[serde(default)]
    pub(super) sqlstate: Option<String>,
    #[serde(default)]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) result: Option<ResultSummary>,
    #[serde(default)]
    pub(super) record: Option<u8>,
}

/// A statement event decoded back from stored OCSF bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedStatement {
    pub event: StatementEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
    /// The JSON is a rendering of a compact canonical record of this
    /// version (see [`crate::audit::record`]); `None`: the JSON was stored as is.
    pub record: Option<u8>,
}

/// Decode stored Datastore Activity bytes back into the event model (the
/// inverse of [`encode_statement`]).
pub fn decode_statement(data: &[u8]) -> Result<DecodedStatement, AuditError> {
    let doc: DatastoreActivity = serde_json::from_slice(data)
        .map_err(|e| decode_err(format!("not a statement event: {e}")))?;
    if doc.class_uid != CLASS_UID_DATASTORE_ACTIVITY || doc.activity_id != ACTIVITY_ID_QUERY {
        return Err(decode_err(format!(
            "class_uid {} activity_id {} is not a statement",
            doc.class_uid, doc.activity_id
        )));
    }
    let w = doc.unmapped.warden;
    let session = session_of(&w.session)?;
    let process = decode_process(
        doc.actor,
        ProcessInfo {
            tgid: w.tgid,
            gid: w.gid,
            cgroup_id: w.cgroup_id,
            cgroup_path: w.cgroup_path,
            unit: w.unit,
            start_boot_ns: w.process_start_boot_ns,
            pid_reused: w.pid_reused,
            ..ProcessInfo::default()
        },
    )?;
    let s = w.statement;
    Ok(DecodedStatement {
        event: StatementEvent {
            time_ms: doc.time,
            phase: s.phase,
            decision: w.decision,
            session,
            statement_seq: s.statement_seq,
            account: w.account,
            target: w.target,
            protocol: w.protocol,
            database: doc.database.name,
            upstream_user: s.upstream_user,
            process,
            identity: w.identity,
            via: s.via,
            statement: doc.query_info.query_string,
            class: s.class,
            tables: s.tables,
            functions: s.functions,
            policy: s.policy,
            rule: s.rule,
            reason: w.reason,
            rows: s.rows,
            values_masked: s.values_masked,
            duration_us: s.duration_us,
            command_tag: s.command_tag,
            sqlstate: s.sqlstate,
            error: s.error,
            result: s.result,
            allowlist: w.allowlist,
        },
        seq: w.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
        record: s.record,
    })
}
