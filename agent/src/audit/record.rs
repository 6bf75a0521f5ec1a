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
//! `str` = length + UTF-8 bytes; `opt` = one byte 0 (absent) or 1 then the
//! value. Decoding is strict (shortest varints, known enum values, 0/1 tags,
//! UTF-8, nothing left over), so every record has exactly one byte form:
//! decode then encode gives the same bytes, which is what lets
//! `verify-export` recompute the chain from the rendered JSON of a bundle.

use std::borrow::Cow;

use super::AuditError;
use super::event::{
    ProcessInfo, ResultSummary, SessionId, StatementDecision, StatementEvent, StatementPhase,
};
use super::ocsf::{decode_statement as decode_statement_json, statement_template_of};
use crate::policy::allowlist::{AllowlistFacts, ListVerdict, Mode};

/// Version of the record layout written by this build.
pub const RECORD_VERSION: u8 = 1;
/// First bytes of a version-1 statement record.
const MAGIC: [u8; 4] = [0xFF, b'W', b'S', RECORD_VERSION];

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
        match n {
            None => w.push(0),
            Some(n) => {
                w.push(1);
                varint(&mut w, n);
            }
        }
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
    match &ev.allowlist {
        None => w.push(0),
        Some(a) => {
            w.push(1);
            opt_string(&mut w, a.fingerprint.as_deref());
            opt_byte(&mut w, a.mode.map(mode_id));
            opt_byte(&mut w, a.verdict.map(verdict_id));
        }
    }
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
    let phase = match r.byte()? {
        0 => StatementPhase::Request,
        1 => StatementPhase::Result,
        other => return Err(err(format!("unknown phase {other}"))),
    };
    let decision = match r.byte()? {
        0 => StatementDecision::Allowed,
        1 => StatementDecision::Blocked,
        2 => StatementDecision::Denied,
        3 => StatementDecision::ApprovalRequired,
        4 => StatementDecision::Rejected,
        other => return Err(err(format!("unknown decision {other}"))),
    };
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
        // Not a statement: its bytes are what was stored.
        Err(_) => return Ok(Cow::Borrowed(line)),
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
}
