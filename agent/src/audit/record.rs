//! The compact canonical record of a database statement: what the store
//! keeps (and hash-chains) for each statement event instead of its OCSF
//! JSON.
//!
//! A statement event was ~2 KB of OCSF JSON, most of it constant OCSF
//! vocabulary and the caller's process facts repeated from the
//! connection's open event. The record keeps the same facts in a
//! versioned binary layout and leaves the caller out: the statement names
//! its session, whose open event carries the process, the user and the
//! identity claims. OCSF (and through it ECS and CEF) is rendered from the
//! record where events leave the store: `audit tail`, `replay`, export,
//! forwarders ([`render`]).
//!
//! Layout (version 1), every integer an unsigned LEB128 varint in its
//! shortest form unless said otherwise:
//!
//! ```text
//! 0xFF 'W' 'S' 0x01      magic (0xFF never starts JSON) and version
//! time_ms                zigzag varint
//! phase, decision        one byte each (enum index)
//! session, statement_seq
//! account target protocol database upstream_user via statement class   (str)
//! tables functions       (count, str...)
//! policy rule reason     (opt str)
//! rows values_masked duration_us                                        (opt int)
//! command_tag sqlstate error                                            (opt str)
//! result                 (opt: columns (count, str...), rows (count, each: count, opt str...))
//! allowlist              (opt: fingerprint (opt str), mode (opt byte), verdict (opt byte))
//! host                   (str)
//! ```
//!
//! HTTP requests (OCSF API Activity, issue 17 lever 6) have their own
//! record, `0xFF 'W' 'A' 0x01` (see [`encode_api`]). Unlike a statement's,
//! it keeps the caller of a request phase (the process facts and the
//! identity the OCSF JSON held), so its rendering is the JSON that was
//! stored before, plus `unmapped.warden.api.record`.
//!
//! `str` = length + UTF-8 bytes; `opt` = one byte 0 (absent) or 1 then the
//! value. Decoding is strict (shortest varints, known enum values, 0/1 tags,
//! UTF-8, nothing left over), so every record has exactly one byte form:
//! decode then encode gives the same bytes, which is what lets
//! `verify-export` recompute the chain from the rendered JSON of a bundle.

use std::borrow::Cow;

use super::AuditError;
use super::event::{
    ApiEvent, ProcessInfo, ResultSummary, SessionId, StatementDecision, StatementEvent,
    StatementPhase, TokenIdentity,
};
use super::ocsf::{
    api_template_of, decode_api as decode_api_json, decode_statement as decode_statement_json,
    statement_template_of,
};
use crate::policy::allowlist::{AllowlistFacts, ListVerdict, Mode};

/// Version of the record layout written by this build.
pub const RECORD_VERSION: u8 = 1;
/// First bytes of a version-1 statement record.
const MAGIC: [u8; 4] = [0xFF, b'W', b'S', RECORD_VERSION];

/// First bytes of a version-1 HTTP request (API Activity) record.
const MAGIC_API: [u8; 4] = [0xFF, b'W', b'A', RECORD_VERSION];

/// The stored bytes are a compact record (not OCSF JSON).
pub fn is_record(data: &[u8]) -> bool {
    data.first() == Some(&MAGIC[0])
}

/// Encode the facts of `ev` that a statement record keeps (everything but
/// the caller's process and identity, which its session's open event
/// holds); `host` is the writer's host name (may be empty).
pub fn encode_statement(ev: &StatementEvent, host: &str) -> Vec<u8> {
    let mut w = Vec::with_capacity(128 + ev.statement.len());
    w.extend_from_slice(&MAGIC);
    varint(&mut w, zigzag(ev.time_ms));
    w.push(phase_id(ev.phase));
    w.push(decision_id(ev.decision));
    varint(&mut w, ev.session.0);
    varint(&mut w, ev.statement_seq);
    for s in [
        &ev.account,
        &ev.target,
        &ev.protocol,
        &ev.database,
        &ev.upstream_user,
        &ev.via,
        &ev.statement,
        &ev.class,
    ] {
        string(&mut w, s);
    }
    strings(&mut w, &ev.tables);
    strings(&mut w, &ev.functions);
    for s in [&ev.policy, &ev.rule, &ev.reason] {
        opt_string(&mut w, s.as_deref());
    }
    for n in [ev.rows, ev.values_masked, ev.duration_us] {
        opt_int(&mut w, n);
    }
    for s in [&ev.command_tag, &ev.sqlstate, &ev.error] {
        opt_string(&mut w, s.as_deref());
    }
    match &ev.result {
        None => w.push(0),
        Some(r) => {
            w.push(1);
            strings(&mut w, &r.columns);
            varint(&mut w, r.sample.len() as u64);
            for row in &r.sample {
                varint(&mut w, row.len() as u64);
                for v in row {
                    opt_string(&mut w, v.as_deref());
                }
            }
        }
    }
    write_allowlist(&mut w, ev.allowlist.as_ref());
    string(&mut w, host);
    w
}

// --- allow-lists (issue 19) ---
fn mode_id(m: Mode) -> u8 {
    match m {
        Mode::Learn => 0,
        Mode::Enforce => 1,
    }
}

fn verdict_id(v: ListVerdict) -> u8 {
    match v {
        ListVerdict::Learned => 0,
        ListVerdict::Listed => 1,
        ListVerdict::NotListed => 2,
    }
}

fn write_allowlist(w: &mut Vec<u8>, a: Option<&AllowlistFacts>) {
    match a {
        None => w.push(0),
        Some(a) => {
            w.push(1);
            opt_string(w, a.fingerprint.as_deref());
            opt_byte(w, a.mode.map(mode_id));
            opt_byte(w, a.verdict.map(verdict_id));
        }
    }
}

fn opt_byte(w: &mut Vec<u8>, b: Option<u8>) {
    match b {
        None => w.push(0),
        Some(b) => {
            w.push(1);
            w.push(b);
        }
    }
}

fn read_allowlist(r: &mut Reader<'_>) -> Result<Option<AllowlistFacts>, AuditError> {
    if !r.flag()? {
        return Ok(None);
    }
    let fingerprint = r.opt_string()?;
    let mode = if r.flag()? {
        Some(match r.byte()? {
            0 => Mode::Learn,
            1 => Mode::Enforce,
            other => return Err(err(format!("unknown allow-list mode {other}"))),
        })
    } else {
        None
    };
    let verdict = if r.flag()? {
        Some(match r.byte()? {
            0 => ListVerdict::Learned,
            1 => ListVerdict::Listed,
            2 => ListVerdict::NotListed,
            other => return Err(err(format!("unknown allow-list verdict {other}"))),
        })
    } else {
        None
    };
    Ok(Some(AllowlistFacts {
        fingerprint,
        mode,
        verdict,
    }))
}

/// A statement record read back: the event (process and identity empty)
/// and the host it was recorded on (empty when none was configured).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    pub event: StatementEvent,
    pub host: String,
}

/// Decode a statement record (strictly; see the module docs).
pub fn decode_statement(data: &[u8]) -> Result<DecodedRecord, AuditError> {
    let mut r = Reader { data, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(err("not a version-1 statement record"));
    }
    let time_ms = unzigzag(r.varint()?);
    let phase = read_phase(&mut r)?;
    let decision = read_decision(&mut r)?;
    let session = SessionId(r.varint()?);
    let statement_seq = r.varint()?;
    let account = r.string()?;
    let target = r.string()?;
    let protocol = r.string()?;
    let database = r.string()?;
    let upstream_user = r.string()?;
    let via = r.string()?;
    let statement = r.string()?;
    let class = r.string()?;
    let tables = r.strings()?;
    let functions = r.strings()?;
    let policy = r.opt_string()?;
    let rule = r.opt_string()?;
    let reason = r.opt_string()?;
    let rows = r.opt_varint()?;
    let values_masked = r.opt_varint()?;
    let duration_us = r.opt_varint()?;
    let command_tag = r.opt_string()?;
    let sqlstate = r.opt_string()?;
    let error = r.opt_string()?;
    let result = if r.flag()? {
        let columns = r.strings()?;
        let n = r.count()?;
        let mut sample = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let cols = r.count()?;
            let mut row = Vec::with_capacity(cols.min(64));
            for _ in 0..cols {
                row.push(r.opt_string()?);
            }
            sample.push(row);
        }
        Some(ResultSummary { columns, sample })
    } else {
        None
    };
    let allowlist = read_allowlist(&mut r)?;
    let host = r.string()?;
    if r.at != data.len() {
        return Err(err("bytes left after the record"));
    }
    Ok(DecodedRecord {
        event: StatementEvent {
            time_ms,
            phase,
            decision,
            session,
            statement_seq,
            account,
            target,
            protocol,
            database,
            upstream_user,
            process: ProcessInfo::default(),
            identity: None,
            via,
            statement,
            class,
            tables,
            functions,
            policy,
            rule,
            reason,
            rows,
            values_masked,
            duration_us,
            command_tag,
            sqlstate,
            error,
            result,
            allowlist,
        },
        host,
    })
}

/// The OCSF JSON of stored event bytes: a record is rendered as event `seq`
/// of chain `chain_id`; anything else (OCSF JSON stored as is) is returned
/// unchanged.
pub fn render<'a>(data: &'a [u8], seq: u64, chain_id: &str) -> Result<Cow<'a, [u8]>, AuditError> {
    if !is_record(data) {
        return Ok(Cow::Borrowed(data));
    }
    if data.get(1..3) == Some(&MAGIC_API[1..3]) {
        return render_api(data, seq, chain_id).map(Cow::Owned);
    }
    let d = decode_statement(data)?;
    let session = d.event.session.to_string();
    let t = statement_template_of(&d.event, &session, chain_id, &d.host, Some(RECORD_VERSION))?;
    Ok(Cow::Owned(t.fill(seq)))
}

/// [`render`] for readers that show what they can: a record that does not
/// decode is shown as its stored bytes (verify reports the damage).
pub fn render_lossy<'a>(data: &'a [u8], seq: u64, chain_id: &str) -> Cow<'a, [u8]> {
    render(data, seq, chain_id).unwrap_or(Cow::Borrowed(data))
}

/// The bytes the chain covers for one line of an evidence bundle: the line
/// itself, or, for the rendering of a record, the record it was rendered
/// from. Such a line must be exactly that rendering (as event `seq` of
/// `chain_id`), else this fails.
pub fn canonical_of_line<'a>(
    line: &'a [u8],
    seq: u64,
    chain_id: &str,
) -> Result<Cow<'a, [u8]>, AuditError> {
    // Cheap pre-check: only renderings carry the marker.
    if memchr::memmem::find(line, b"\"record\":").is_none() {
        return Ok(Cow::Borrowed(line));
    }
    let d = match decode_statement_json(line) {
        Ok(d) => d,
        // Not a statement: an HTTP request rendered from its record, or
        // bytes that are what was stored.
        Err(_) => return canonical_of_api_line(line, seq, chain_id),
    };
    match d.record {
        None => Ok(Cow::Borrowed(line)),
        Some(RECORD_VERSION) => {
            let record = encode_statement(&d.event, d.host.as_deref().unwrap_or_default());
            let again = render(&record, seq, chain_id)?;
            if again.as_ref() != line {
                return Err(err(
                    "the statement is not the rendering of the record it names (edited)",
                ));
            }
            Ok(Cow::Owned(record))
        }
        Some(v) => Err(err(format!("unknown statement record version {v}"))),
    }
}

// --- HTTP requests (issue 17 lever 6: compact API Activity records) ---

/// An HTTP request record read back: the event and the host it was
/// recorded on (empty when none was configured).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedApiRecord {
    pub event: ApiEvent,
    pub host: String,
}

/// The caller facts an API Activity rendering can carry (and so a record
/// keeps): `actor.process` only when it has a pid, name, file or user, the
/// hash only with the file; the process start and pid reuse are not part
/// of an API event.
fn api_process(p: &ProcessInfo) -> ProcessInfo {
    let actor = p.pid.is_some() || p.comm.is_some() || p.exe.is_some() || p.uid.is_some();
    ProcessInfo {
        pid: p.pid,
        tgid: p.tgid,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm.clone(),
        exe: p.exe.clone(),
        cgroup_id: p.cgroup_id,
        cgroup_path: p.cgroup_path.clone(),
        exe_sha256: p.exe_sha256.clone().filter(|_| p.exe.is_some()),
        cmdline: p.cmdline.clone().filter(|_| actor),
        start_boot_ns: None,
        pid_reused: false,
        unit: p.unit.clone(),
    }
}

fn opt_int(w: &mut Vec<u8>, n: Option<u64>) {
    match n {
        None => w.push(0),
        Some(n) => {
            w.push(1);
            varint(w, n);
        }
    }
}

fn pairs(w: &mut Vec<u8>, v: &[(String, String)]) {
    varint(w, v.len() as u64);
    for (k, val) in v {
        string(w, k);
        string(w, val);
    }
}

/// Encode an HTTP request event (either phase) as its compact record;
/// `host` is the writer's host name (may be empty). Everything its OCSF
/// JSON holds is kept (see [`api_process`] for the caller), nothing else.
pub fn encode_api(ev: &ApiEvent, host: &str) -> Vec<u8> {
    let mut w = Vec::with_capacity(160 + ev.path.len());
    w.extend_from_slice(&MAGIC_API);
    varint(&mut w, zigzag(ev.time_ms));
    w.push(phase_id(ev.phase));
    w.push(decision_id(ev.decision));
    varint(&mut w, ev.session.0);
    varint(&mut w, ev.request_seq);
    for s in [&ev.account, &ev.target, &ev.method, &ev.path] {
        string(&mut w, s);
    }
    opt_string(&mut w, ev.query.as_deref());
    pairs(&mut w, &ev.request_headers);
    for s in [&ev.policy, &ev.rule, &ev.reason] {
        opt_string(&mut w, s.as_deref());
    }
    opt_int(&mut w, ev.status.map(u64::from));
    varint(&mut w, ev.bytes_in);
    varint(&mut w, ev.bytes_out);
    opt_int(&mut w, ev.duration_us);
    opt_int(&mut w, ev.values_masked);
    pairs(&mut w, &ev.response_headers);
    opt_string(&mut w, ev.error.as_deref());
    write_allowlist(&mut w, ev.allowlist.as_ref());
    let p = api_process(&ev.process);
    for n in [p.pid, p.tgid, p.uid, p.gid] {
        opt_int(&mut w, n.map(u64::from));
    }
    opt_int(&mut w, p.cgroup_id);
    for s in [
        &p.comm,
        &p.exe,
        &p.cgroup_path,
        &p.exe_sha256,
        &p.cmdline,
        &p.unit,
    ] {
        opt_string(&mut w, s.as_deref());
    }
    match &ev.identity {
        None => w.push(0),
        Some(id) => {
            w.push(1);
            for s in [&id.source, &id.iss, &id.sub] {
                string(&mut w, s);
            }
            strings(&mut w, &id.aud);
            opt_string(&mut w, id.jti.as_deref());
            varint(&mut w, zigzag(id.exp));
            opt_string(&mut w, id.kid.as_deref());
            string(&mut w, &id.alg);
            opt_string(&mut w, id.attestation.as_deref());
        }
    }
    string(&mut w, host);
    w
}

impl Reader<'_> {
    fn pairs(&mut self) -> Result<Vec<(String, String)>, AuditError> {
        let n = self.count()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, AuditError> {
        self.opt_varint()?
            .map(|v| u32::try_from(v).map_err(|_| err("value beyond 32 bits")))
            .transpose()
    }
}

/// Decode an HTTP request record (strictly: its bytes must be exactly what
/// [`encode_api`] makes of the decoded event).
pub fn decode_api(data: &[u8]) -> Result<DecodedApiRecord, AuditError> {
    let mut r = Reader { data, at: 0 };
    if r.take(MAGIC_API.len())? != MAGIC_API {
        return Err(err("not a version-1 HTTP request record"));
    }
    let time_ms = unzigzag(r.varint()?);
    let phase = read_phase(&mut r)?;
    let decision = read_decision(&mut r)?;
    let session = SessionId(r.varint()?);
    let request_seq = r.varint()?;
    let account = r.string()?;
    let target = r.string()?;
    let method = r.string()?;
    let path = r.string()?;
    let query = r.opt_string()?;
    let request_headers = r.pairs()?;
    let policy = r.opt_string()?;
    let rule = r.opt_string()?;
    let reason = r.opt_string()?;
    let status = r
        .opt_varint()?
        .map(|v| u16::try_from(v).map_err(|_| err("HTTP status beyond 16 bits")))
        .transpose()?;
    let bytes_in = r.varint()?;
    let bytes_out = r.varint()?;
    let duration_us = r.opt_varint()?;
    let values_masked = r.opt_varint()?;
    let response_headers = r.pairs()?;
    let error = r.opt_string()?;
    let allowlist = read_allowlist(&mut r)?;
    let pid = r.opt_u32()?;
    let tgid = r.opt_u32()?;
    let uid = r.opt_u32()?;
    let gid = r.opt_u32()?;
    let cgroup_id = r.opt_varint()?;
    let process = ProcessInfo {
        pid,
        tgid,
        uid,
        gid,
        cgroup_id,
        comm: r.opt_string()?,
        exe: r.opt_string()?,
        cgroup_path: r.opt_string()?,
        exe_sha256: r.opt_string()?,
        cmdline: r.opt_string()?,
        unit: r.opt_string()?,
        start_boot_ns: None,
        pid_reused: false,
    };
    let identity = if r.flag()? {
        Some(TokenIdentity {
            source: r.string()?,
            iss: r.string()?,
            sub: r.string()?,
            aud: r.strings()?,
            jti: r.opt_string()?,
            exp: unzigzag(r.varint()?),
            kid: r.opt_string()?,
            alg: r.string()?,
            attestation: r.opt_string()?,
        })
    } else {
        None
    };
    let host = r.string()?;
    if r.at != data.len() {
        return Err(err("bytes left after the record"));
    }
    let d = DecodedApiRecord {
        event: ApiEvent {
            time_ms,
            phase,
            decision,
            session,
            request_seq,
            account,
            target,
            process,
            identity,
            method,
            path,
            query,
            request_headers,
            policy,
            rule,
            reason,
            status,
            bytes_in,
            bytes_out,
            duration_us,
            values_masked,
            response_headers,
            error,
            allowlist,
        },
        host,
    };
    // One byte form: caller facts a rendering cannot carry are refused.
    if encode_api(&d.event, &d.host) != data {
        return Err(err("HTTP request record not in its canonical form"));
    }
    Ok(d)
}

/// The OCSF JSON of an HTTP request record, as event `seq` of `chain_id`.
fn render_api(data: &[u8], seq: u64, chain_id: &str) -> Result<Vec<u8>, AuditError> {
    let d = decode_api(data)?;
    let session = d.event.session.to_string();
    let t = api_template_of(&d.event, &session, chain_id, &d.host, Some(RECORD_VERSION))?;
    Ok(t.fill(seq))
}

/// [`canonical_of_line`] for a line that is not a statement.
fn canonical_of_api_line<'a>(
    line: &'a [u8],
    seq: u64,
    chain_id: &str,
) -> Result<Cow<'a, [u8]>, AuditError> {
    let d = match decode_api_json(line) {
        Ok(d) => d,
        // Not an HTTP request either: its bytes are what was stored.
        Err(_) => return Ok(Cow::Borrowed(line)),
    };
    match d.record {
        None => Ok(Cow::Borrowed(line)),
        Some(RECORD_VERSION) => {
            let record = encode_api(&d.event, d.host.as_deref().unwrap_or_default());
            let again = render(&record, seq, chain_id)?;
            if again.as_ref() != line {
                return Err(err(
                    "the HTTP request is not the rendering of the record it names (edited)",
                ));
            }
            Ok(Cow::Owned(record))
        }
        Some(v) => Err(err(format!("unknown HTTP request record version {v}"))),
    }
}

fn read_phase(r: &mut Reader<'_>) -> Result<StatementPhase, AuditError> {
    match r.byte()? {
        0 => Ok(StatementPhase::Request),
        1 => Ok(StatementPhase::Result),
        other => Err(err(format!("unknown phase {other}"))),
    }
}

fn read_decision(r: &mut Reader<'_>) -> Result<StatementDecision, AuditError> {
    match r.byte()? {
        0 => Ok(StatementDecision::Allowed),
        1 => Ok(StatementDecision::Blocked),
        2 => Ok(StatementDecision::Denied),
        3 => Ok(StatementDecision::ApprovalRequired),
        4 => Ok(StatementDecision::Rejected),
        other => Err(err(format!("unknown decision {other}"))),
    }
}

fn err(detail: impl Into<String>) -> AuditError {
    AuditError::Decode {
        detail: format!("statement record: {}", detail.into()),
    }
}

fn phase_id(p: StatementPhase) -> u8 {
    match p {
        StatementPhase::Request => 0,
        StatementPhase::Result => 1,
    }
}

fn decision_id(d: StatementDecision) -> u8 {
    match d {
        StatementDecision::Allowed => 0,
        StatementDecision::Blocked => 1,
        StatementDecision::Denied => 2,
        StatementDecision::ApprovalRequired => 3,
        StatementDecision::Rejected => 4,
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn string(w: &mut Vec<u8>, s: &str) {
    varint(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn strings(w: &mut Vec<u8>, v: &[String]) {
    varint(w, v.len() as u64);
    for s in v {
        string(w, s);
    }
}

fn opt_string(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => w.push(0),
        Some(s) => {
            w.push(1);
            string(w, s);
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AuditError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| err("truncated"))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, AuditError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, AuditError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(err(format!("tag {other} is neither 0 nor 1"))),
        }
    }

    fn varint(&mut self) -> Result<u64, AuditError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(err("varint overflows 64 bits"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(err("varint not in its shortest form"));
                }
                return Ok(v);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    fn count(&mut self) -> Result<usize, AuditError> {
        let n = usize::try_from(self.varint()?).map_err(|_| err("count too large"))?;
        // Every element takes at least one byte: a count beyond what is
        // left is damage, not a reason to allocate.
        if n > self.data.len() - self.at {
            return Err(err("count beyond the record"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, AuditError> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| err("string is not UTF-8"))
    }

    fn strings(&mut self) -> Result<Vec<String>, AuditError> {
        let n = self.count()?;
        (0..n).map(|_| self.string()).collect()
    }

    fn opt_string(&mut self) -> Result<Option<String>, AuditError> {
        if self.flag()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_varint(&mut self) -> Result<Option<u64>, AuditError> {
        if self.flag()? {
            self.varint().map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ocsf::{decode_statement as json_decode, tests::sample_statement};

    fn both_phases() -> Vec<StatementEvent> {
        let req = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 3);
        let mut res = sample_statement(StatementPhase::Result, StatementDecision::Allowed, 3);
        res.process = ProcessInfo::default();
        res.identity = None;
        let mut odd = req.clone();
        odd.time_ms = -5;
        odd.session = SessionId(u64::MAX);
        odd.statement = "SELECT 'é\n\"x\"'".into();
        odd.result = Some(ResultSummary {
            columns: vec!["a".into(), "b".into()],
            sample: vec![vec![None, Some("1".into())], vec![]],
        });
        odd.rows = Some(0);
        vec![req, res, odd]
    }

    #[test]
    fn records_round_trip_without_the_caller() {
        for ev in both_phases() {
            let bytes = encode_statement(&ev, "db1");
            assert!(is_record(&bytes));
            let d = decode_statement(&bytes).unwrap();
            let mut want = ev.clone();
            want.process = ProcessInfo::default();
            want.identity = None;
            assert_eq!(d.event, want);
            assert_eq!(d.host, "db1");
            assert_eq!(encode_statement(&d.event, &d.host), bytes, "one byte form");
        }
    }

    #[test]
    fn a_pgbench_statement_is_small() {
        let mut ev = sample_statement(StatementPhase::Request, StatementDecision::Allowed, 3);
        ev.statement = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;".into();
        let req = encode_statement(&ev, "host");
        let json =
            crate::audit::ocsf::encode_statement(&ev, 12345, &"ab".repeat(16), "host").unwrap();
        assert!(
            req.len() * 5 < json.len(),
            "{} vs {}",
            req.len(),
            json.len()
        );
        assert!(req.len() < 300, "{}", req.len());
    }

    #[test]
    fn damaged_records_are_refused() {
        let bytes = encode_statement(&both_phases()[0], "h");
        for cut in 0..bytes.len() {
            assert!(decode_statement(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_statement(&longer).is_err());
        let mut bad_phase = bytes.clone();
        // time_ms of the sample fits in a few varint bytes; find the phase
        // byte right after it.
        let mut r = Reader {
            data: &bytes,
            at: MAGIC.len(),
        };
        r.varint().unwrap();
        bad_phase[r.at] = 7;
        assert!(decode_statement(&bad_phase).is_err());
        let mut overlong = MAGIC.to_vec();
        overlong.extend_from_slice(&[0x80, 0x00]);
        assert!(decode_statement(&overlong).is_err());
    }

    #[test]
    fn rendering_is_ocsf_and_leads_back_to_the_record() {
        let chain = "cd".repeat(16);
        for ev in both_phases() {
            let bytes = encode_statement(&ev, "db1");
            let json = render(&bytes, 77, &chain).unwrap().into_owned();
            let d = json_decode(&json).unwrap();
            assert_eq!(d.seq, 77);
            assert_eq!(d.uid, format!("{chain}:77"));
            assert_eq!(d.record, Some(RECORD_VERSION));
            assert_eq!(d.event, decode_statement(&bytes).unwrap().event);
            assert_eq!(canonical_of_line(&json, 77, &chain).unwrap(), bytes);
            // Edited rendering: refused, even where the record would not
            // change (the message is derived).
            let edited = String::from_utf8(json.clone()).unwrap().replacen(
                "\"message\":\"",
                "\"message\":\"x",
                1,
            );
            assert!(canonical_of_line(edited.as_bytes(), 77, &chain).is_err());
            // Under another seq the rendering differs.
            assert!(canonical_of_line(&json, 78, &chain).is_err());
        }
        // JSON stored as is passes through.
        let ev = &both_phases()[0];
        let stored = crate::audit::ocsf::encode_statement(ev, 3, &chain, "h").unwrap();
        assert_eq!(render(&stored, 3, &chain).unwrap(), stored);
        assert_eq!(canonical_of_line(&stored, 3, &chain).unwrap(), stored);
    }

    // --- HTTP requests (issue 17) ---

    fn sample_api(phase: StatementPhase) -> ApiEvent {
        use crate::audit::event::{ConnActivity, Decision};
        let conn = crate::audit::ocsf::tests::sample(ConnActivity::Open, Decision::Allowed);
        let request = phase == StatementPhase::Request;
        ApiEvent {
            time_ms: conn.time_ms,
            phase,
            decision: StatementDecision::Allowed,
            session: conn.session,
            request_seq: 3,
            account: "orders-api".into(),
            target: "orders-http".into(),
            process: if request {
                conn.process
            } else {
                ProcessInfo::default()
            },
            identity: conn.identity.filter(|_| request),
            method: "GET".into(),
            path: "/orders/42".into(),
            query: Some("q=***".into()),
            request_headers: vec![("accept".into(), "*/*".into())],
            policy: Some("orders-policy".into()),
            rule: Some("rules[0]".into()),
            reason: None,
            status: (!request).then_some(200),
            bytes_in: 78,
            bytes_out: if request { 0 } else { 312 },
            duration_us: (!request).then_some(1_500),
            values_masked: (!request).then_some(2),
            response_headers: if request {
                Vec::new()
            } else {
                vec![("content-type".into(), "application/json".into())]
            },
            error: None,
            allowlist: None,
        }
    }

    /// What the OCSF JSON of `ev` keeps of it (the process start and pid
    /// reuse are not part of an API event).
    fn as_json_keeps(ev: &ApiEvent) -> ApiEvent {
        let mut want = ev.clone();
        want.process.start_boot_ns = None;
        want.process.pid_reused = false;
        want
    }

    #[test]
    fn http_records_round_trip_with_the_caller() {
        for ev in [
            sample_api(StatementPhase::Request),
            sample_api(StatementPhase::Result),
        ] {
            let bytes = encode_api(&ev, "web1");
            assert!(is_record(&bytes));
            let d = decode_api(&bytes).unwrap();
            assert_eq!(d.event, as_json_keeps(&ev));
            assert_eq!(d.host, "web1");
            assert_eq!(encode_api(&d.event, &d.host), bytes, "one byte form");
            for cut in 0..bytes.len() {
                assert!(decode_api(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn an_http_record_renders_the_json_that_was_stored_before() {
        let chain = "cd".repeat(16);
        for ev in [
            sample_api(StatementPhase::Request),
            sample_api(StatementPhase::Result),
        ] {
            let bytes = encode_api(&ev, "web1");
            let json = render(&bytes, 77, &chain).unwrap().into_owned();
            let mut got: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                got["unmapped"]["warden"]["api"]["record"],
                u64::from(RECORD_VERSION)
            );
            got["unmapped"]["warden"]["api"]
                .as_object_mut()
                .unwrap()
                .remove("record");
            let session = ev.session.to_string();
            let old = crate::audit::ocsf::api_template(&ev, &session, &chain, "web1")
                .unwrap()
                .fill(77);
            let old: serde_json::Value = serde_json::from_slice(&old).unwrap();
            assert_eq!(got, old);
            if ev.phase == StatementPhase::Request {
                assert!(got["actor"]["process"]["pid"].is_number(), "{got:#}");
                assert!(
                    bytes.len() * 3 < json.len(),
                    "{} vs {}",
                    bytes.len(),
                    json.len()
                );
            } else {
                assert!(
                    bytes.len() * 8 < json.len(),
                    "{} vs {}",
                    bytes.len(),
                    json.len()
                );
            }
            // verify-export: the rendering leads back to the record, an
            // edited one does not.
            assert_eq!(canonical_of_line(&json, 77, &chain).unwrap(), bytes);
            let edited =
                String::from_utf8(json.clone())
                    .unwrap()
                    .replacen("/orders/42", "/orders/43", 1);
            assert!(canonical_of_line(edited.as_bytes(), 77, &chain).is_err());
            assert!(canonical_of_line(&json, 78, &chain).is_err());
        }
        // API JSON stored as is (schema 5 stores) passes through.
        let ev = sample_api(StatementPhase::Request);
        let stored = crate::audit::ocsf::api_template(&ev, "00000000000004d2", &chain, "h")
            .unwrap()
            .fill(3);
        assert_eq!(render(&stored, 3, &chain).unwrap(), stored);
        assert_eq!(canonical_of_line(&stored, 3, &chain).unwrap(), stored);
    }

    #[test]
    fn caller_facts_no_rendering_can_carry_are_not_a_second_byte_form() {
        let mut ev = sample_api(StatementPhase::Result);
        ev.process.cmdline = Some("curl x".into());
        ev.process.exe_sha256 = Some("ab".repeat(32));
        let bytes = encode_api(&ev, "");
        // Encoded without them...
        assert_eq!(
            decode_api(&bytes).unwrap().event.process,
            ProcessInfo::default()
        );
        // ...and a record holding them anyway is refused. The cmdline is
        // the fifth of the six optional process strings, before `unit`,
        // the identity flag and the host.
        let mut w = Vec::new();
        opt_string(&mut w, Some("curl x"));
        let tail = [0u8, 0, 0, 0]; // cmdline none, unit none, identity none, host ""
        assert!(bytes.ends_with(&tail));
        let mut forged_bytes = bytes[..bytes.len() - tail.len()].to_vec();
        forged_bytes.extend_from_slice(&w);
        forged_bytes.extend_from_slice(&tail[1..]);
        assert!(decode_api(&forged_bytes).is_err());
    }
}
