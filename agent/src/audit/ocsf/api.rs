//! API Activity (6003): HTTP requests, encoded, templated and decoded.
//!
//! API Activity mapping (one event when Warden decided, the *request* phase,
//! committed before the request is forwarded, and one when the response went
//! back, the *result* phase; both carry the same `request_seq`):
//! - class 6003 API Activity, category 6; `activity_id` from the method:
//!   1 Create (POST), 2 Read (GET, HEAD, OPTIONS), 3 Update (PUT, PATCH),
//!   4 Delete (DELETE), 99 Other; `type_uid = 600300 + activity_id`;
//! - severity, status, action and disposition as for statements; the HTTP
//!   status the client got is `status_code` in the result phase;
//! - `api.operation` = method, `api.request.uid` = `"<session>:<seq>"`,
//!   `api.response.code` (result); `http_request` = `http_method`, `url`
//!   (`path`, the normalised path; `query_string`, masked); `http_response`
//!   = `code`; `src_endpoint.name` = account, `dst_endpoint.svc_name` =
//!   target; `actor.process` as for connections; `duration` (ms);
//! - `unmapped.warden` = account, target, decision, reason, session,
//!   process facts, identity, and `api` = phase, request_seq, policy, rule,
//!   bytes_in, bytes_out, duration_us, values_masked, allow-listed request
//!   and response headers (values masked), error;
//! - store columns: `class_uid` 6003, `activity` "api_request" / "api_result".

#[allow(clippy::wildcard_imports)]
use super::*;

/// The class as its events name it.
pub(super) const API_ACTIVITY: OcsfClass = OcsfClass {
    uid: CLASS_UID_API_ACTIVITY,
    name: "API Activity",
    category_uid: CATEGORY_UID_APPLICATION,
    category_name: "Application Activity",
};

/// OCSF class of HTTP requests.
pub const CLASS_UID_API_ACTIVITY: u32 = 6003;
/// Store `activity` of an API event's request phase.
pub const API_REQUEST_ACTIVITY: &str = "api_request";
/// Store `activity` of an API event's result phase.
pub const API_RESULT_ACTIVITY: &str = "api_result";

/// The store `activity` of an API event phase.
pub fn api_activity_str(phase: StatementPhase) -> &'static str {
    match phase {
        StatementPhase::Request => API_REQUEST_ACTIVITY,
        StatementPhase::Result => API_RESULT_ACTIVITY,
    }
}

/// OCSF API Activity `activity_id` and name of an HTTP method.
pub fn api_activity(method: &str) -> (u8, &'static str) {
    match method {
        "POST" => (1, "Create"),
        "GET" | "HEAD" | "OPTIONS" => (2, "Read"),
        "PUT" | "PATCH" => (3, "Update"),
        "DELETE" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

#[derive(Serialize)]
pub(super) struct ApiMiddle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<DeviceSer<'a>>,
    pub(super) src_endpoint: SrcEndpointSer<'a>,
    pub(super) dst_endpoint: SvcEndpointSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor: Option<ActorSer<'a>>,
    pub(super) api: ApiSer<'a>,
    pub(super) http_request: HttpRequestSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) http_response: Option<HttpResponseSer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct ApiSer<'a> {
    pub(super) operation: &'a str,
    pub(super) request: ApiRequestSer<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response: Option<HttpResponseSer>,
}

#[derive(Serialize)]
pub(super) struct ApiRequestSer<'a> {
    pub(super) uid: &'a str,
}

#[derive(Serialize)]
pub(super) struct HttpRequestSer<'a> {
    pub(super) http_method: &'a str,
    pub(super) url: UrlSer<'a>,
}

#[derive(Serialize)]
pub(super) struct UrlSer<'a> {
    pub(super) path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) query_string: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct HttpResponseSer {
    pub(super) code: u16,
}

#[derive(Serialize)]
pub(super) struct ApiExtSer<'a> {
    pub(super) account: &'a str,
    pub(super) target: &'a str,
    pub(super) decision: StatementDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    pub(super) session: &'a str,
    pub(super) protocol: &'static str,
    #[serde(flatten)]
    pub(super) caller: CallerSer<'a, &'a TokenIdentity>,
    pub(super) api: ApiDocSer<'a>,
    // --- allow-lists (issue 19) ---
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) allowlist: Option<&'a crate::policy::allowlist::AllowlistFacts>,
}

/// `unmapped.warden.api`. No key here may be named like a member of
/// `unmapped.warden` that the fast probe reads.
#[derive(Serialize)]
pub(super) struct ApiDocSer<'a> {
    pub(super) phase: StatementPhase,
    pub(super) request_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rule: Option<&'a str>,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) values_masked: Option<u64>,
    #[serde(skip_serializing_if = "<[(String, String)]>::is_empty")]
    pub(super) request_headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "<[(String, String)]>::is_empty")]
    pub(super) response_headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<&'a str>,
    /// Version of the compact record this rendering was made from (see
    /// [`crate::audit::record::encode_api`]); absent when the JSON was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) record: Option<u8>,
}

/// Encode an HTTP request event as OCSF 1.8 API Activity JSON with the seq
/// left open. `session` is `ev.session.to_string()`.
pub fn api_template(
    ev: &crate::audit::event::ApiEvent,
    session: &str,
    chain_id: &str,
    host: &str,
) -> Result<SeqTemplate, AuditError> {
    api_template_of(ev, session, chain_id, host, None)
}

/// [`api_template`] of an HTTP request rendered from its compact record
/// (`record`: the record's version, written into
/// `unmapped.warden.api.record` so that `verify-export` recomputes the
/// chain over the record).
pub(crate) fn api_template_of(
    ev: &crate::audit::event::ApiEvent,
    session: &str,
    chain_id: &str,
    host: &str,
    record: Option<u8>,
) -> Result<SeqTemplate, AuditError> {
    let allowed = ev.decision == StatementDecision::Allowed;
    let failed = !allowed || ev.error.is_some() || ev.status.is_some_and(|s| s >= 500);
    let (activity_id, activity_name) = api_activity(&ev.method);
    let message = match ev.phase {
        StatementPhase::Request => format!("{} {} {}", ev.method, ev.path, ev.decision.as_str()),
        StatementPhase::Result => format!(
            "{} {} answered {}",
            ev.method,
            ev.path,
            ev.status.map_or("-".to_owned(), |s| s.to_string())
        ),
    };
    let status_code = ev.status.map(|s| s.to_string());
    let request_uid = format!("{session}:{}", ev.request_seq);
    let mut b = TemplateBuilder::new();
    b.raw("{");
    b.members(
        &StmtHead {
            head: ClassHead::new(
                &API_ACTIVITY,
                (activity_id, activity_name),
                match activity_id {
                    1 => "API Activity: Create",
                    2 => "API Activity: Read",
                    3 => "API Activity: Update",
                    4 => "API Activity: Delete",
                    _ => "API Activity: Other",
                },
                ev.time_ms,
                severity(allowed),
                status(!failed),
            ),
            status_code: status_code.as_deref(),
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
        &ApiMiddle {
            device: device_ser(host),
            src_endpoint: SrcEndpointSer {
                hostname: (!host.is_empty()).then_some(host),
                name: &ev.account,
            },
            dst_endpoint: SvcEndpointSer {
                svc_name: &ev.target,
            },
            actor: actor_ser(&ev.process),
            api: ApiSer {
                operation: &ev.method,
                request: ApiRequestSer { uid: &request_uid },
                response: ev.status.map(|code| HttpResponseSer { code }),
            },
            http_request: HttpRequestSer {
                http_method: &ev.method,
                url: UrlSer {
                    path: &ev.path,
                    query_string: ev.query.as_deref(),
                },
            },
            http_response: ev.status.map(|code| HttpResponseSer { code }),
            duration: ev.duration_us.map(|us| us / 1000),
        },
        false,
    )?;
    let p = &ev.process;
    b.unmapped_and_close(&ApiExtSer {
        account: &ev.account,
        target: &ev.target,
        decision: ev.decision,
        reason: ev.reason.as_deref(),
        session,
        protocol: "http",
        caller: caller_ser(p, ev.identity.as_ref()).without_start(),
        api: ApiDocSer {
            phase: ev.phase,
            request_seq: ev.request_seq,
            policy: ev.policy.as_deref(),
            rule: ev.rule.as_deref(),
            bytes_in: ev.bytes_in,
            bytes_out: ev.bytes_out,
            duration_us: ev.duration_us,
            values_masked: ev.values_masked,
            request_headers: &ev.request_headers,
            response_headers: &ev.response_headers,
            error: ev.error.as_deref(),
            record,
        },
        allowlist: ev.allowlist.as_ref(),
    })
}

// --- reading API Activity back (issue 17: compact HTTP records) ---

#[derive(Debug, Deserialize)]
pub(super) struct ApiActivity {
    pub(super) class_uid: u32,
    pub(super) time: i64,
    pub(super) metadata: Metadata,
    #[serde(default)]
    pub(super) device: Option<Device>,
    #[serde(default)]
    pub(super) actor: Option<Actor>,
    pub(super) api: ApiDoc,
    pub(super) http_request: HttpRequestDoc,
    #[serde(default)]
    pub(super) http_response: Option<HttpResponseDoc>,
    pub(super) unmapped: ApiUnmapped,
}

#[derive(Debug, Deserialize)]
pub(super) struct ApiDoc {
    pub(super) operation: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct HttpRequestDoc {
    pub(super) url: UrlDoc,
}

#[derive(Debug, Deserialize)]
pub(super) struct UrlDoc {
    pub(super) path: String,
    #[serde(default)]
    pub(super) query_string: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HttpResponseDoc {
    pub(super) code: u16,
}

#[derive(Debug, Deserialize)]
pub(super) struct ApiUnmapped {
    pub(super) warden: ApiExt,
}

#[derive(Debug, Deserialize)]
pub(super) struct ApiExt {
    #[serde(default)]
    pub(super) allowlist: Option<crate::policy::allowlist::AllowlistFacts>,
    pub(super) account: String,
    pub(super) target: String,
    pub(super) decision: StatementDecision,
    #[serde(default)]
    pub(super) reason: Option<String>,
    pub(super) session: String,
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
    pub(super) identity: Option<TokenIdentity>,
    pub(super) api: ApiExtDoc,
    pub(super) seq: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct ApiExtDoc {
    pub(super) phase: StatementPhase,
    pub(super) request_seq: u64,
    #[serde(default)]
    pub(super) policy: Option<String>,
    #[serde(default)]
    pub(super) rule: Option<String>,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    #[serde(default)]
    pub(super) duration_us: Option<u64>,
    #[serde(default)]
    pub(super) values_masked: Option<u64>,
    #[serde(default)]
    pub(super) request_headers: Vec<(String, String)>,
    #[serde(default)]
    pub(super) response_headers: Vec<(String, String)>,
    #[serde(default)]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) record: Option<u8>,
}

/// An HTTP request event decoded back from its OCSF JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedApi {
    pub event: crate::audit::event::ApiEvent,
    pub seq: u64,
    /// `metadata.uid`, i.e. `"<chain_id>:<seq>"`.
    pub uid: String,
    /// `device.hostname`, when it was recorded.
    pub host: Option<String>,
    /// The JSON is a rendering of a compact record of this version;
    /// `None`: the JSON was stored as is.
    pub record: Option<u8>,
}

/// Decode API Activity JSON back into the event model (the inverse of
/// [`api_template`]; `verify-export` uses it to find a rendered record).
pub fn decode_api(data: &[u8]) -> Result<DecodedApi, AuditError> {
    let doc: ApiActivity =
        serde_json::from_slice(data).map_err(|e| decode_err(format!("not an API event: {e}")))?;
    if doc.class_uid != CLASS_UID_API_ACTIVITY {
        return Err(decode_err(format!(
            "class_uid {} is not API Activity",
            doc.class_uid
        )));
    }
    let w = doc.unmapped.warden;
    let session = session_of(&w.session)?;
    // The API JSON has no process start or pid reuse (see api_template).
    let process = ProcessInfo {
        tgid: w.tgid,
        gid: w.gid,
        cgroup_id: w.cgroup_id,
        cgroup_path: w.cgroup_path,
        unit: w.unit,
        ..ProcessInfo::default()
    };
    let process = decode_process(doc.actor, process)?;
    let a = w.api;
    Ok(DecodedApi {
        event: crate::audit::event::ApiEvent {
            time_ms: doc.time,
            phase: a.phase,
            decision: w.decision,
            session,
            request_seq: a.request_seq,
            account: w.account,
            target: w.target,
            process,
            identity: w.identity,
            method: doc.api.operation,
            path: doc.http_request.url.path,
            query: doc.http_request.url.query_string,
            request_headers: a.request_headers,
            policy: a.policy,
            rule: a.rule,
            reason: w.reason,
            status: doc.http_response.map(|r| r.code),
            bytes_in: a.bytes_in,
            bytes_out: a.bytes_out,
            duration_us: a.duration_us,
            values_masked: a.values_masked,
            response_headers: a.response_headers,
            error: a.error,
            allowlist: w.allowlist,
        },
        seq: w.seq,
        uid: doc.metadata.uid,
        host: doc.device.map(|d| d.hostname),
        record: a.record,
    })
}

/// `unmapped.warden.api` as the verifier and readers need it.
#[derive(Debug, Deserialize)]
pub(crate) struct ProbeApi {
    pub phase: StatementPhase,
}
