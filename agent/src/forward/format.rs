//! Output formats: each stored event becomes one line (no newline) in the
//! output's format.
//!
//! - `ocsf`: the stored OCSF 1.8 JSON, byte for byte (what the hash chain
//!   covers, so a collector can verify checkpoints against it).
//! - `ecs`: Elastic Common Schema 8 JSON derived from the OCSF event:
//!   `@timestamp`, `event.{id, sequence, kind, module, dataset, code,
//!   action, category, type, outcome, severity, reason}` (reason = the
//!   OCSF `status_code`), `error.message` (`status_detail`), `message`,
//!   `source`/`destination` (`ip`, `port`, `service` name as
//!   `destination.domain` is not claimed), `process`, `user.id`,
//!   `host.hostname`, `database` for statements; the whole
//!   `unmapped.warden` object under `warden`, and the OCSF class ids under
//!   `ocsf`. `event.id` is the uid (`chain_id:seq`).
//! - `cef`: `CEF:0|Warden|Warden|<version>|<type_uid>|<name>|<severity>|<ext>`
//!   with `rt` (ms), `externalId` (uid), `cn1` = seq, `cs1` = session,
//!   `cs2` = account, `cs3` = target, `cs4` = statement (masked, as stored),
//!   `src`/`spt`/`dst`/`dpt`, `spid`/`sproc`/`suid`, `act` (decision),
//!   `outcome`, `reason` (`status_code`), `msg`, `dvchost`. Header fields escape `\` and
//!   `|`; extension values escape `\`, `=` and line breaks (CEF rules).
//!   OCSF severity 0..6 maps to CEF 0, 1, 3, 5, 7, 9, 10.
//!
//! A stored event that is not JSON (it cannot happen with this store; a
//! damaged row could) is still forwarded: as ECS with only `event.id`,
//! `event.sequence` and `event.original`, as CEF with `msg` holding the raw
//! text. Nothing is dropped.

use serde_json::{Map, Value, json};

use crate::config::ForwardFormat;

/// Format the stored OCSF bytes of event `seq` (uid `uid`) as one line.
pub fn format_event(format: ForwardFormat, data: Vec<u8>, uid: &str, seq: u64) -> Vec<u8> {
    match format {
        ForwardFormat::Ocsf => data,
        ForwardFormat::Ecs => {
            let doc = match serde_json::from_slice::<Value>(&data) {
                Ok(v) => ecs(&v, uid, seq),
                Err(_) => json!({
                    "event": {
                        "id": uid,
                        "sequence": seq,
                        "original": String::from_utf8_lossy(&data),
                    }
                }),
            };
            // A Value always serialises.
            serde_json::to_vec(&doc).unwrap_or_default()
        }
        ForwardFormat::Cef => match serde_json::from_slice::<Value>(&data) {
            Ok(v) => cef(&v, uid, seq).into_bytes(),
            Err(_) => format!(
                "CEF:0|Warden|Warden|{}|0|undecodable event|5|externalId={} cn1Label=seq cn1={seq} msg={}",
                env!("CARGO_PKG_VERSION"),
                ext_escape(uid),
                ext_escape(&String::from_utf8_lossy(&data))
            )
            .into_bytes(),
        },
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn put(map: &mut Map<String, Value>, key: &str, v: Option<&Value>) {
    if let Some(v) = v {
        map.insert(key.to_owned(), v.clone());
    }
}

/// RFC 3339 UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    crate::audit::reader::format_time(ms)
}

fn ecs(v: &Value, uid: &str, seq: u64) -> Value {
    let class = s(v, &["class_uid"]).and_then(Value::as_u64).unwrap_or(0);
    let category = match class {
        4001 => vec!["network"],
        6005 => vec!["database"],
        5019 => vec!["configuration"],
        _ => vec!["process"],
    };
    let disposition = s(v, &["disposition"]).and_then(Value::as_str);
    let event_type = match (class, disposition) {
        (_, Some("Blocked")) => vec!["denied"],
        (4001 | 6005, Some("Allowed")) => vec!["allowed"],
        (5019, _) => vec!["change"],
        _ => vec!["info"],
    };
    let outcome = match s(v, &["status"]).and_then(Value::as_str) {
        Some("Success") => "success",
        Some("Failure") => "failure",
        _ => "unknown",
    };
    let mut event = Map::new();
    event.insert("id".into(), json!(uid));
    event.insert("sequence".into(), json!(seq));
    event.insert("kind".into(), json!("event"));
    event.insert("module".into(), json!("warden"));
    event.insert("dataset".into(), json!("warden.audit"));
    event.insert("category".into(), json!(category));
    event.insert("type".into(), json!(event_type));
    event.insert("outcome".into(), json!(outcome));
    if let Some(t) = s(v, &["type_uid"]) {
        event.insert("code".into(), json!(t.to_string()));
    }
    if let Some(a) = s(v, &["activity_name"]).and_then(Value::as_str) {
        event.insert("action".into(), json!(a.to_ascii_lowercase()));
    }
    put(&mut event, "severity", s(v, &["severity_id"]));
    put(&mut event, "reason", s(v, &["status_code"]));
    if let Some(d) = s(v, &["duration"]).and_then(Value::as_u64) {
        // ECS durations are nanoseconds; OCSF's are milliseconds.
        event.insert("duration".into(), json!(d.saturating_mul(1_000_000)));
    }
    for (ocsf_key, ecs_key) in [("start_time", "start"), ("end_time", "end")] {
        if let Some(t) = s(v, &[ocsf_key]).and_then(Value::as_i64) {
            event.insert(ecs_key.into(), json!(timestamp(t)));
        }
    }

    let mut doc = Map::new();
    if let Some(t) = s(v, &["time"]).and_then(Value::as_i64) {
        doc.insert("@timestamp".into(), json!(timestamp(t)));
    }
    doc.insert("event".into(), Value::Object(event));
    put(&mut doc, "message", s(v, &["message"]));
    if let Some(d) = s(v, &["status_detail"]) {
        doc.insert("error".into(), json!({ "message": d }));
    }
    for (ocsf, ecs_key) in [("src_endpoint", "source"), ("dst_endpoint", "destination")] {
        let mut m = Map::new();
        put(&mut m, "ip", s(v, &[ocsf, "ip"]));
        put(&mut m, "port", s(v, &[ocsf, "port"]));
        if let Some(h) = s(v, &[ocsf, "hostname"]) {
            m.insert("address".into(), h.clone());
        }
        if !m.is_empty() {
            doc.insert(ecs_key.into(), Value::Object(m));
        }
    }
    if let Some(t) = s(v, &["dst_endpoint", "svc_name"]) {
        doc.insert("service".into(), json!({ "target": { "name": t } }));
    }
    if let Some(p) = s(v, &["actor", "process"]) {
        let mut m = Map::new();
        put(&mut m, "pid", s(p, &["pid"]));
        put(&mut m, "name", s(p, &["name"]));
        put(&mut m, "command_line", s(p, &["cmd_line"]));
        put(&mut m, "executable", s(p, &["file", "path"]));
        if let Some(h) = s(p, &["file", "hashes"])
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|f| s(f, &["algorithm_id"]) == Some(&json!(3)))
            })
            .and_then(|f| s(f, &["value"]))
        {
            m.insert("hash".into(), json!({ "sha256": h }));
        }
        if !m.is_empty() {
            doc.insert("process".into(), Value::Object(m));
        }
        if let Some(u) = s(p, &["user", "uid"]) {
            doc.insert("user".into(), json!({ "id": u }));
        }
    }
    if let Some(h) = s(v, &["device", "hostname"]) {
        doc.insert("host".into(), json!({ "hostname": h }));
    }
    if class == 6005 {
        let mut db = Map::new();
        put(&mut db, "name", s(v, &["database", "name"]));
        put(&mut db, "statement", s(v, &["query_info", "query_string"]));
        if !db.is_empty() {
            doc.insert("database".into(), Value::Object(db));
        }
    }
    if let Some(w) = s(v, &["unmapped", "warden"]) {
        doc.insert("warden".into(), w.clone());
    }
    let mut o = Map::new();
    for k in ["class_uid", "category_uid", "activity_id", "type_uid"] {
        put(&mut o, k, s(v, &[k]));
    }
    put(&mut o, "version", s(v, &["metadata", "version"]));
    doc.insert("ocsf".into(), Value::Object(o));
    Value::Object(doc)
}

/// CEF severity (0..=10) for an OCSF `severity_id` (0..=6).
pub fn cef_severity(ocsf: u64) -> u8 {
    match ocsf {
        0 => 0,
        1 => 1,
        2 => 3,
        3 => 5,
        4 => 7,
        5 => 9,
        _ => 10,
    }
}

fn cef(v: &Value, uid: &str, seq: u64) -> String {
    let str_at = |path: &[&str]| -> Option<String> {
        s(v, path).map(|x| match x {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        })
    };
    let class_id = s(v, &["type_uid"])
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .to_string();
    let name = str_at(&["message"])
        .or_else(|| str_at(&["activity_name"]))
        .unwrap_or_else(|| "event".into());
    let sev = cef_severity(s(v, &["severity_id"]).and_then(Value::as_u64).unwrap_or(0));
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Some(t) = str_at(&["time"]) {
        ext.push(("rt", t));
    }
    ext.push(("externalId", uid.to_owned()));
    ext.push(("cn1Label", "seq".into()));
    ext.push(("cn1", seq.to_string()));
    let warden = |k: &str| str_at(&["unmapped", "warden", k]);
    let labelled = [
        ("cs1", "cs1Label", "session", warden("session")),
        ("cs2", "cs2Label", "account", warden("account")),
        ("cs3", "cs3Label", "target", warden("target")),
        (
            "cs4",
            "cs4Label",
            "statement",
            str_at(&["query_info", "query_string"]),
        ),
    ];
    for (key, label_key, label, value) in labelled {
        if let Some(value) = value {
            ext.push((label_key, label.to_owned()));
            ext.push((key, value));
        }
    }
    for (key, path) in [
        ("src", &["src_endpoint", "ip"][..]),
        ("spt", &["src_endpoint", "port"]),
        ("dst", &["dst_endpoint", "ip"]),
        ("dpt", &["dst_endpoint", "port"]),
        ("spid", &["actor", "process", "pid"]),
        ("sproc", &["actor", "process", "name"]),
        ("suid", &["actor", "process", "user", "uid"]),
        ("outcome", &["status"]),
        ("reason", &["status_code"]),
        ("msg", &["message"]),
        ("dvchost", &["device", "hostname"]),
    ] {
        if let Some(x) = str_at(path) {
            ext.push((key, x));
        }
    }
    if let Some(d) = warden("decision") {
        ext.push(("act", d));
    }
    let mut line = format!(
        "CEF:0|Warden|Warden|{}|{}|{}|{sev}|",
        header_escape(env!("CARGO_PKG_VERSION")),
        header_escape(&class_id),
        header_escape(&name),
    );
    for (i, (k, val)) in ext.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(k);
        line.push('=');
        line.push_str(&ext_escape(val));
    }
    line
}

/// CEF header field: `\` and `|` escaped, line breaks as spaces.
pub fn header_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// CEF extension value: `\`, `=` and line breaks escaped.
pub fn ext_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ConnActivity, Decision, StatementDecision, StatementPhase};
    use crate::audit::ocsf::tests::{sample, sample_statement};
    use crate::audit::ocsf::{encode_connection, encode_statement};

    fn refused() -> Vec<u8> {
        let mut ev = sample(ConnActivity::Refuse, Decision::Refused);
        ev.reason = Some("target_not_granted".into());
        encode_connection(&ev, 42, "c0ffee", "host-1").unwrap()
    }

    #[test]
    fn ocsf_is_the_stored_bytes() {
        let data = refused();
        assert_eq!(
            format_event(ForwardFormat::Ocsf, data.clone(), "c0ffee:42", 42),
            data
        );
    }

    #[test]
    fn ecs_maps_the_fields_collectors_search() {
        let line = format_event(ForwardFormat::Ecs, refused(), "c0ffee:42", 42);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["event"]["id"], "c0ffee:42");
        assert_eq!(v["event"]["sequence"], 42);
        assert_eq!(v["event"]["category"], json!(["network"]));
        assert_eq!(v["event"]["type"], json!(["denied"]));
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["action"], "refuse");
        assert_eq!(v["event"]["reason"], "target_not_granted");
        assert_eq!(v["@timestamp"], "2026-11-29T13:05:02.123Z");
        assert_eq!(v["source"]["ip"], "127.0.0.1");
        assert_eq!(v["source"]["port"], 40000);
        assert_eq!(v["destination"]["port"], 5432);
        assert_eq!(v["process"]["pid"], 1234);
        assert_eq!(v["process"]["executable"], "/usr/bin/curl");
        assert_eq!(v["user"]["id"], "1000");
        assert_eq!(v["host"]["hostname"], "host-1");
        assert_eq!(v["warden"]["account"], "orders-api");
        assert_eq!(v["ocsf"]["class_uid"], 4001);
    }

    #[test]
    fn ecs_statements_carry_the_database_and_the_masked_text() {
        let ev = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 3);
        let data = encode_statement(&ev, 9, "c0ffee", "h").unwrap();
        let v: Value =
            serde_json::from_slice(&format_event(ForwardFormat::Ecs, data, "c0ffee:9", 9)).unwrap();
        assert_eq!(v["event"]["category"], json!(["database"]));
        assert_eq!(v["database"]["name"], "orders");
        assert!(v["database"]["statement"].is_string());
    }

    #[test]
    fn cef_header_and_extension_are_escaped() {
        let line = String::from_utf8(format_event(ForwardFormat::Cef, refused(), "c0ffee:42", 42))
            .unwrap();
        assert!(line.starts_with("CEF:0|Warden|Warden|"), "{line}");
        let fields: Vec<&str> = line.splitn(8, '|').collect();
        assert_eq!(fields[4], "400105", "{line}");
        assert_eq!(fields[6], "5", "medium severity: {line}");
        let ext = fields[7];
        assert!(ext.contains("externalId=c0ffee:42"), "{ext}");
        assert!(ext.contains("cn1Label=seq cn1=42"), "{ext}");
        assert!(ext.contains("act=refused"), "{ext}");
        assert!(ext.contains("cs2Label=account cs2=orders-api"), "{ext}");
        assert!(ext.contains("spt=40000"), "{ext}");
        assert_eq!(header_escape("a|b\\c"), "a\\|b\\\\c");
        assert_eq!(ext_escape("k=v\nx\\"), "k\\=v\\nx\\\\");
    }

    #[test]
    fn undecodable_rows_are_still_forwarded() {
        let raw = b"not json".to_vec();
        let v: Value =
            serde_json::from_slice(&format_event(ForwardFormat::Ecs, raw.clone(), "c:1", 1))
                .unwrap();
        assert_eq!(v["event"]["original"], "not json");
        let cef = String::from_utf8(format_event(ForwardFormat::Cef, raw, "c:1", 1)).unwrap();
        assert!(cef.contains("msg=not json"), "{cef}");
    }
}
