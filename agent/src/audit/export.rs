//! Evidence export (`warden audit export`) and its offline check
//! (`warden audit verify-export`).
//!
//! [`export`] writes one directory per request, for an auditor:
//!
//! | file | content |
//! | --- | --- |
//! | `events.jsonl` | connection events (OCSF Network Activity) and database statements (OCSF Datastore Activity), the exact stored bytes, one per line, in seq order |
//! | `config-changes.jsonl` | configuration loads/reloads (OCSF Device Config State Change), likewise |
//! | `checkpoints.jsonl` | checkpoint events (OCSF, carrying the signed body, signature and public key) in the range and every later one |
//! | `other-events.jsonl` | other chain events in the range (retention prunes) |
//! | `approvals.jsonl` | approval transitions (OCSF User Access Management: requested, approved, denied, timed out, withdrawn, grant used, revoked, refused decisions), the exact stored bytes, in seq order |
//! | `verification.txt` | chain id, exported seq range, gaps, the full `verify` report, key fingerprints |
//! | `summary.json` | counts of connection events per account, target, decision and (account, target, decision); under `statements`, counts of statements per account, target, decision, class and (account, target, decision), and of results |
//! | `manifest.json` | SHA-256 and size of every file above, chain id, range, creation time, Warden version, signing key |
//! | `manifest.sig` | hex Ed25519 signature (by the store's checkpoint key) over the exact bytes of `manifest.json` |
//!
//! The range is the contiguous seq range from the first to the last event
//! whose time is in `[from, to)`; every chain event in between is exported
//! (into the file of its kind), so the chain can be recomputed over the
//! bundle: `manifest.json` carries the stored hash of the event before the
//! range (`prev_hash`), and each checkpoint in the bundle signs the hash of
//! the event before it. Lines are the stored bytes, which never contain a
//! newline (compact JSON).
//!
//! [`verify_export`] checks, offline and in this order: the manifest's
//! signature (and that its key id is the fingerprint of its key), that the
//! directory holds exactly the listed files, every file's size and SHA-256,
//! then the contents: each line is an event of the file's kind whose
//! `metadata.uid` is `<chain_id>:<seq>`, seqs strictly increase, every
//! checkpoint's signature verifies under its embedded key, the chain
//! recomputed over the exported events reaches the head each in-range
//! checkpoint signed, and `summary.json` matches `events.jsonl`. The first
//! failure names its file. The signing key's id is reported: compare it with
//! the fingerprint you know for the host (`warden audit verify` prints it).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuditError;
use super::chain::{ChainKey, GENESIS, Hash, event_hash};
use super::checkpoint::{CheckpointSigner, ORIGIN_PREFIX, key_id};
use super::event::StatementPhase;
use super::ocsf::{
    CLASS_UID_APPLICATION_LIFECYCLE, EventKind, activity_from_id, activity_str, decode_checkpoint,
    probe_fast,
};
use super::reader::{AuditReader, format_time};
use super::store::{self, now_ms};

/// `format` of `manifest.json`.
pub const MANIFEST_FORMAT: &str = "warden-evidence-v1";
/// `format` of `summary.json`.
pub const SUMMARY_FORMAT: &str = "warden-summary-v1";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const APPROVALS_FILE: &str = "approvals.jsonl";
pub const CONFIG_FILE: &str = "config-changes.jsonl";
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub const OTHER_FILE: &str = "other-events.jsonl";
pub const VERIFICATION_FILE: &str = "verification.txt";
pub const SUMMARY_FILE: &str = "summary.json";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// What `manifest.json` says about approvals in this version.
pub const APPROVALS_NOTE: &str =
    "approval transitions (OCSF User Access Management 3005) are in approvals.jsonl";
/// Key of an absent account/target in `summary.json`'s maps.
pub const NONE_KEY: &str = "-";

/// The signed table of contents of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub warden_version: String,
    pub created_ms: i64,
    pub created: String,
    pub chain_id: String,
    /// Requested range, `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub from: String,
    pub to: String,
    /// Exported seq range (`None` when no event is in the time range).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hex stored hash of event `first_seq - 1` (64 zeros before seq 1),
    /// when the store still has it.
    pub prev_hash: Option<String>,
    pub counts: Counts,
    pub approvals: String,
    /// Id (fingerprint) and hex raw public key of the signing key.
    pub key_id: String,
    pub public_key: String,
    pub files: BTreeMap<String, FileEntry>,
}

/// Lines per file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub events: u64,
    pub config_changes: u64,
    pub checkpoints: u64,
    pub other_events: u64,
    pub approvals: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub format: String,
    pub connection_events: u64,
    pub by_account: BTreeMap<String, u64>,
    pub by_target: BTreeMap<String, u64>,
    pub by_decision: BTreeMap<String, u64>,
    pub by_activity: BTreeMap<String, u64>,
    pub by_account_target_decision: Vec<TripleCount>,
    /// Database statements (absent in bundles from before statements were
    /// recorded).
    #[serde(default)]
    pub statements: StatementSummary,
}

/// `summary.json`'s `statements`: one count per statement Warden decided
/// (its request event), and how many results were recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementSummary {
    /// Request events: statements decided.
    pub statements: u64,
    /// Result events: statements that were forwarded and answered.
    pub results: u64,
    pub by_account: BTreeMap<String, u64>,
    pub by_target: BTreeMap<String, u64>,
    /// `allowed`, `blocked`, `denied`, `approval_required`, `rejected`.
    pub by_decision: BTreeMap<String, u64>,
    /// `read`, `write`, `ddl`, `privileged`, `unknown`.
    pub by_class: BTreeMap<String, u64>,
    pub by_account_target_decision: Vec<TripleCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripleCount {
    pub account: Option<String>,
    pub target: Option<String>,
    pub decision: String,
    pub events: u64,
}

/// Counts per account, target, decision, and one more key (connection
/// activity or statement class).
#[derive(Default)]
struct Tally {
    n: u64,
    account: BTreeMap<String, u64>,
    target: BTreeMap<String, u64>,
    decision: BTreeMap<String, u64>,
    other: BTreeMap<String, u64>,
    triple: BTreeMap<(Option<String>, Option<String>, String), u64>,
}

impl Tally {
    fn add(&mut self, account: Option<&str>, target: Option<&str>, decision: &str, other: &str) {
        self.n += 1;
        *self
            .account
            .entry(account.unwrap_or(NONE_KEY).to_owned())
            .or_default() += 1;
        *self
            .target
            .entry(target.unwrap_or(NONE_KEY).to_owned())
            .or_default() += 1;
        *self.decision.entry(decision.to_owned()).or_default() += 1;
        *self.other.entry(other.to_owned()).or_default() += 1;
        *self
            .triple
            .entry((
                account.map(str::to_owned),
                target.map(str::to_owned),
                decision.to_owned(),
            ))
            .or_default() += 1;
    }

    fn triples(
        triple: BTreeMap<(Option<String>, Option<String>, String), u64>,
    ) -> Vec<TripleCount> {
        triple
            .into_iter()
            .map(|((account, target, decision), events)| TripleCount {
                account,
                target,
                decision,
                events,
            })
            .collect()
    }
}

#[derive(Default)]
struct SummaryBuilder {
    connections: Tally,
    statements: Tally,
    results: u64,
}

impl SummaryBuilder {
    /// Add the stored bytes of an event of `events.jsonl` (a connection or
    /// a statement event).
    fn add_event(&mut self, data: &[u8]) -> Result<(), String> {
        let p = probe_fast(data).map_err(|e| e.to_string())?;
        let w = &p.unmapped.warden;
        let decision = w.decision.as_deref().unwrap_or("unknown");
        match p.kind() {
            Some(EventKind::Connection) => {
                let activity = activity_from_id(p.activity_id).map_or("unknown", activity_str);
                self.connections.add(
                    w.account.as_deref(),
                    w.target.as_deref(),
                    decision,
                    activity,
                );
            }
            Some(EventKind::Statement) => match &w.statement {
                Some(s) if s.phase == StatementPhase::Result => self.results += 1,
                Some(s) => self.statements.add(
                    w.account.as_deref(),
                    w.target.as_deref(),
                    decision,
                    &s.class,
                ),
                None => return Err("statement event without unmapped.warden.statement".into()),
            },
            // HTTP requests are counted with statements, class "http".
            Some(EventKind::Api) => match &w.api {
                Some(a) if a.phase == StatementPhase::Result => self.results += 1,
                Some(_) => {
                    self.statements
                        .add(w.account.as_deref(), w.target.as_deref(), decision, "http")
                }
                None => return Err("API event without unmapped.warden.api".into()),
            },
            _ => return Err(format!("an event of class {} is not counted", p.class_uid)),
        }
        Ok(())
    }

    fn finish(self) -> Summary {
        let c = self.connections;
        let s = self.statements;
        Summary {
            format: SUMMARY_FORMAT.into(),
            connection_events: c.n,
            by_account: c.account,
            by_target: c.target,
            by_decision: c.decision,
            by_activity: c.other,
            by_account_target_decision: Tally::triples(c.triple),
            statements: StatementSummary {
                statements: s.n,
                results: self.results,
                by_account: s.account,
                by_target: s.target,
                by_decision: s.decision,
                by_class: s.other,
                by_account_target_decision: Tally::triples(s.triple),
            },
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub chain_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub counts: Counts,
    /// Seq ranges inside the exported range that the store does not have.
    pub gaps: Vec<(u64, u64)>,
    /// Whether `verify` found the whole chain intact when exporting.
    pub chain_intact: bool,
    /// The manifest's signing key.
    pub key_id: String,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "evidence bundle {}", self.dir.display())?;
        writeln!(f, "  chain:       {}", self.chain_id)?;
        writeln!(
            f,
            "  range:       {} .. {}",
            format_time(self.from_ms),
            format_time(self.to_ms)
        )?;
        match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => writeln!(f, "  seqs:        {a}..={b}")?,
            _ => writeln!(f, "  seqs:        none (no event in the range)")?,
        }
        let c = &self.counts;
        writeln!(
            f,
            "  exported:    {} connection and statement events, {} configuration changes, {} \
             checkpoints, {} other events, {} approvals",
            c.events, c.config_changes, c.checkpoints, c.other_events, c.approvals
        )?;
        writeln!(f, "  gaps:        {}", format_gaps(&self.gaps))?;
        writeln!(
            f,
            "  full chain:  {}",
            if self.chain_intact {
                "intact"
            } else {
                "DAMAGED (see verification.txt)"
            }
        )?;
        write!(f, "  signed by:   {}", self.key_id)
    }
}

fn format_gaps(gaps: &[(u64, u64)]) -> String {
    if gaps.is_empty() {
        return "none".into();
    }
    gaps.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bundle file being written, hashed on the way.
struct Out {
    name: &'static str,
    w: BufWriter<File>,
    hash: Sha256,
    size: u64,
    lines: u64,
}

impl Out {
    fn create(dir: &Path, name: &'static str) -> Result<Self, AuditError> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AuditError::Io {
                op: "create",
                path,
                source,
            })?;
        Ok(Self {
            name,
            w: BufWriter::new(file),
            hash: Sha256::new(),
            size: 0,
            lines: 0,
        })
    }

    fn write(&mut self, dir: &Path, bytes: &[u8]) -> Result<(), AuditError> {
        self.w.write_all(bytes).map_err(|source| AuditError::Io {
            op: "write",
            path: dir.join(self.name),
            source,
        })?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn line(&mut self, dir: &Path, bytes: &[u8]) -> Result<(), AuditError> {
        self.write(dir, bytes)?;
        self.write(dir, b"\n")?;
        self.lines += 1;
        Ok(())
    }

    fn finish(self, dir: &Path) -> Result<(String, FileEntry), AuditError> {
        let path = dir.join(self.name);
        let file = self.w.into_inner().map_err(|e| AuditError::Io {
            op: "write",
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| AuditError::Io {
            op: "sync",
            path,
            source,
        })?;
        Ok((
            self.name.to_owned(),
            FileEntry {
                sha256: hex::encode(self.hash.finalize()),
                size: self.size,
            },
        ))
    }
}

/// Create `dir` (0700) or accept it when it exists and is empty.
fn prepare_dir(dir: &Path) -> Result<(), AuditError> {
    let err = |detail: String| AuditError::Export {
        dir: dir.to_owned(),
        detail,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(err(
                    "the directory is not empty; refusing to overwrite".into()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AuditError::Io {
                op: "create directory",
                path: dir.to_owned(),
                source,
            }),
        Err(e) => Err(err(format!("cannot use it: {e}"))),
    }
}

/// Write the evidence bundle of the events with time in `[from_ms, to_ms)`
/// of the store at `store` into `out_dir` (created; an existing non-empty
/// directory is refused). Reads the store read-only (usable while the
/// daemon writes) and signs the manifest with the store's checkpoint key
/// (`checkpoint.key` next to the store: run as the daemon's user).
pub fn export(
    store: &Path,
    from_ms: i64,
    to_ms: i64,
    out_dir: &Path,
) -> Result<ExportReport, AuditError> {
    export_with_progress(store, from_ms, to_ms, out_dir, &|_, _| {}, &|_, _| {})
}

/// [`export`], reporting the full-chain check to `verifying` and the
/// writing of the range's events to `writing` (done, total).
pub fn export_with_progress(
    store: &Path,
    from_ms: i64,
    to_ms: i64,
    out_dir: &Path,
    verifying: super::Progress<'_>,
    writing: super::Progress<'_>,
) -> Result<ExportReport, AuditError> {
    let err = |detail: String| AuditError::Export {
        dir: out_dir.to_owned(),
        detail,
    };
    if from_ms >= to_ms {
        return Err(err(format!(
            "the range is empty: {} is not before {}",
            format_time(from_ms),
            format_time(to_ms)
        )));
    }
    let signer = CheckpointSigner::load_existing(store)?;
    let reader = AuditReader::open(store)?;
    if reader.schema_version() < 2 {
        return Err(AuditError::Schema {
            path: store.to_owned(),
            detail: "schema version 1 has no hash chain yet; start `warden run` once to migrate it"
                .into(),
        });
    }
    // The full-chain check, in its own snapshot.
    let report = super::verify_with_progress(store, None, verifying)?;
    prepare_dir(out_dir)?;

    let conn = reader.conn();
    let q = |op: &'static str| move |source| AuditError::Query { op, source };
    let snapshot = conn.unchecked_transaction().map_err(q("begin read"))?;
    let chain_id = reader.chain_id()?;
    let (first, last) = store::seq_range_in_time(conn, from_ms, to_ms)?;
    let prev_hash: Option<Vec<u8>> = match first {
        None => None,
        Some(1) => Some(GENESIS.to_vec()),
        Some(f) => store::hash_through(conn, f - 1)?,
    };

    let mut events = Out::create(out_dir, EVENTS_FILE)?;
    let mut configs = Out::create(out_dir, CONFIG_FILE)?;
    let mut checkpoints = Out::create(out_dir, CHECKPOINTS_FILE)?;
    let mut others = Out::create(out_dir, OTHER_FILE)?;
    let mut approvals = Out::create(out_dir, APPROVALS_FILE)?;
    let mut summary = SummaryBuilder::default();
    let mut gaps = Vec::new();
    if let (Some(first), Some(last)) = (first, last) {
        let mut expected = first;
        let in_range = last.saturating_sub(first) + 1;
        store::each_event_in(conn, first, last, |seq, data| {
            if (seq - first).is_multiple_of(4096) {
                writing(seq - first, in_range);
            }
            // A compact statement record leaves as its OCSF rendering;
            // verify-export recomputes the record from it.
            let data = super::record::render(data, seq, &chain_id).map_err(|e| {
                err(format!(
                    "event {seq}: {e}: the store is damaged (run `warden audit verify`)"
                ))
            })?;
            let data = data.as_ref();
            if seq > expected {
                gaps.push((expected, seq - 1));
            }
            expected = seq + 1;
            if data.contains(&b'\n') {
                return Err(err(format!(
                    "event {seq} contains a line break: the store is damaged (run `warden audit \
                     verify`)"
                )));
            }
            match probe_fast(data).ok().and_then(|p| p.kind()) {
                Some(EventKind::Connection | EventKind::Statement | EventKind::Api) => {
                    summary
                        .add_event(data)
                        .map_err(|e| err(format!("event {seq}: {e}")))?;
                    events.line(out_dir, data)?;
                }
                Some(EventKind::Config) => configs.line(out_dir, data)?,
                Some(EventKind::Approval) => approvals.line(out_dir, data)?,
                Some(EventKind::Checkpoint) => checkpoints.line(out_dir, data)?,
                Some(EventKind::Prune | EventKind::Kernel) | None => others.line(out_dir, data)?,
            }
            Ok(())
        })?;
        // Checkpoints after the range vouch for it too.
        store::each_checkpoint_event_after(conn, last, |data| {
            if !data.contains(&b'\n') {
                checkpoints.line(out_dir, data)?;
            }
            Ok(())
        })?;
    }
    let keys = store::stored_keys(conn).map_err(q("read keys"))?;
    drop(snapshot);

    let counts = Counts {
        events: events.lines,
        config_changes: configs.lines,
        checkpoints: checkpoints.lines,
        other_events: others.lines,
        approvals: approvals.lines,
    };
    let mut files = BTreeMap::new();
    for out in [events, configs, checkpoints, others, approvals] {
        let (name, entry) = out.finish(out_dir)?;
        files.insert(name, entry);
    }

    let summary = summary.finish();
    let mut out = Out::create(out_dir, SUMMARY_FILE)?;
    let mut text =
        serde_json::to_vec_pretty(&summary).map_err(|source| AuditError::Encode { source })?;
    text.push(b'\n');
    out.write(out_dir, &text)?;
    let (name, entry) = out.finish(out_dir)?;
    files.insert(name, entry);

    let mut v = String::new();
    let range = match (first, last) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none (no event in the range)".into(),
    };
    // Writing to a String cannot fail.
    use std::fmt::Write as _;
    let _ = writeln!(v, "Warden evidence bundle: verification");
    let _ = writeln!(v, "chain id:        {chain_id}");
    let _ = writeln!(
        v,
        "time range:      {} (inclusive) .. {} (exclusive)",
        format_time(from_ms),
        format_time(to_ms)
    );
    let _ = writeln!(v, "exported seqs:   {range}");
    let _ = writeln!(v, "gaps in range:   {}", format_gaps(&gaps));
    let _ = writeln!(
        v,
        "exported:        {} connection and statement events, {} configuration changes, {} \
         checkpoints, {} other events",
        counts.events, counts.config_changes, counts.checkpoints, counts.other_events
    );
    let _ = writeln!(
        v,
        "approvals:       {} approval transitions ({APPROVALS_NOTE})",
        counts.approvals
    );
    let _ = writeln!(
        v,
        "full chain:      {}",
        if report.is_intact() {
            "intact"
        } else {
            "DAMAGED"
        }
    );
    let _ = writeln!(v, "verify report (whole store, at export time):");
    for l in report.to_string().lines() {
        let _ = writeln!(v, "  {l}");
    }
    let _ = writeln!(
        v,
        "checkpoint keys (id = first 16 bytes of SHA-256 of the key):"
    );
    for (id, pk) in &keys {
        let _ = writeln!(v, "  {id}  ed25519 {}", hex::encode(pk));
    }
    let _ = writeln!(
        v,
        "manifest signed by: {}  ed25519 {}",
        signer.key_id(),
        hex::encode(signer.public_key())
    );
    let mut out = Out::create(out_dir, VERIFICATION_FILE)?;
    out.write(out_dir, v.as_bytes())?;
    let (name, entry) = out.finish(out_dir)?;
    files.insert(name, entry);

    let created_ms = now_ms();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        warden_version: env!("CARGO_PKG_VERSION").into(),
        created_ms,
        created: format_time(created_ms),
        chain_id: chain_id.clone(),
        from_ms,
        to_ms,
        from: format_time(from_ms),
        to: format_time(to_ms),
        first_seq: first,
        last_seq: last,
        prev_hash: prev_hash.map(hex::encode),
        counts,
        approvals: APPROVALS_NOTE.into(),
        key_id: signer.key_id().to_owned(),
        public_key: hex::encode(signer.public_key()),
        files,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|source| AuditError::Encode { source })?;
    bytes.push(b'\n');
    let signature = signer.sign_bytes(&bytes);
    // The manifest last: a bundle cut short has none and does not verify.
    let mut out = Out::create(out_dir, SIGNATURE_FILE)?;
    out.write(out_dir, format!("{}\n", hex::encode(signature)).as_bytes())?;
    out.finish(out_dir)?;
    let mut out = Out::create(out_dir, MANIFEST_FILE)?;
    out.write(out_dir, &bytes)?;
    out.finish(out_dir)?;
    if let Ok(d) = File::open(out_dir) {
        let _ = d.sync_all();
    }

    Ok(ExportReport {
        dir: out_dir.to_owned(),
        chain_id,
        from_ms,
        to_ms,
        first_seq: first,
        last_seq: last,
        counts,
        gaps,
        chain_intact: report.is_intact(),
        key_id: signer.key_id().to_owned(),
    })
}

/// What [`verify_export`] established about a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportVerification {
    pub chain_id: String,
    /// Fingerprint of the key that signed the manifest: compare it with
    /// the one you know for the host.
    pub key_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub counts: Counts,
    /// Files checked (manifest and signature included).
    pub files: usize,
    /// Ids of the keys that signed the bundle's checkpoints.
    pub checkpoint_key_ids: Vec<String>,
    /// Highest seq up to which the chain recomputed over the bundle
    /// reached a head signed by a checkpoint in the bundle.
    pub chain_verified_through: Option<u64>,
    /// Exported chain events after that seq: their hashes were recomputed
    /// but no checkpoint in the bundle signs them yet.
    pub unanchored_events: u64,
}

impl fmt::Display for ExportVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bundle of chain {}", self.chain_id)?;
        writeln!(
            f,
            "  range:       {} .. {}",
            format_time(self.from_ms),
            format_time(self.to_ms)
        )?;
        match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => writeln!(f, "  seqs:        {a}..={b}")?,
            _ => writeln!(f, "  seqs:        none")?,
        }
        let c = &self.counts;
        writeln!(
            f,
            "  contents:    {} connection and statement events, {} configuration changes, {} \
             checkpoints, {} other events, {} approvals",
            c.events, c.config_changes, c.checkpoints, c.other_events, c.approvals
        )?;
        writeln!(f, "  files:       {} (hashes and sizes match)", self.files)?;
        writeln!(f, "  signed by:   {}", self.key_id)?;
        writeln!(
            f,
            "  checkpoints: signed by {}",
            if self.checkpoint_key_ids.is_empty() {
                "none".to_owned()
            } else {
                self.checkpoint_key_ids.join(", ")
            }
        )?;
        match self.chain_verified_through {
            Some(s) => writeln!(
                f,
                "  chain:       verified against signed checkpoints through seq {s}"
            )?,
            None => writeln!(
                f,
                "  chain:       no checkpoint in the bundle covers its events"
            )?,
        }
        if self.unanchored_events > 0 {
            writeln!(
                f,
                "               {} events after that are not yet covered by a checkpoint in the bundle",
                self.unanchored_events
            )?;
        }
        write!(f, "bundle valid")
    }
}

fn bundle_err(dir: &Path, file: &str, detail: impl Into<String>) -> AuditError {
    AuditError::Bundle {
        dir: dir.to_owned(),
        file: file.to_owned(),
        detail: detail.into(),
    }
}

/// Check the evidence bundle in `dir` offline (see the module docs). `Ok`
/// only when everything holds; the first failure names its file.
pub fn verify_export(dir: &Path) -> Result<ExportVerification, AuditError> {
    let read = |name: &str| -> Result<Vec<u8>, AuditError> {
        std::fs::read(dir.join(name)).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::NotFound {
                "missing".to_owned()
            } else {
                format!("cannot read: {e}")
            };
            bundle_err(dir, name, what)
        })
    };
    // 1. The manifest and its signature.
    let manifest_bytes = read(MANIFEST_FILE)?;
    let sig_text = read(SIGNATURE_FILE)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| bundle_err(dir, MANIFEST_FILE, format!("not a bundle manifest: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            format!("format {:?} is not {MANIFEST_FORMAT:?}", manifest.format),
        ));
    }
    let mut pk = [0u8; 32];
    hex::decode_to_slice(&manifest.public_key, &mut pk)
        .map_err(|_| bundle_err(dir, MANIFEST_FILE, "public_key is not 64 hex digits"))?;
    if key_id(&pk) != manifest.key_id {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            "key_id is not the fingerprint of public_key",
        ));
    }
    let vk = VerifyingKey::from_bytes(&pk)
        .map_err(|_| bundle_err(dir, MANIFEST_FILE, "public_key is not an Ed25519 key"))?;
    let sig_hex = std::str::from_utf8(&sig_text)
        .map(str::trim)
        .map_err(|_| bundle_err(dir, SIGNATURE_FILE, "not hex text"))?;
    let sig = hex::decode(sig_hex)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| bundle_err(dir, SIGNATURE_FILE, "not a hex Ed25519 signature"))?;
    if vk.verify_strict(&manifest_bytes, &sig).is_err() {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            "does not match its signature in manifest.sig (the manifest or the signature was \
             changed)",
        ));
    }

    // 2. Exactly the listed files.
    let mut present = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| AuditError::Io {
        op: "list",
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| AuditError::Io {
            op: "list",
            path: dir.to_owned(),
            source,
        })?;
        present.push(entry.file_name().to_string_lossy().into_owned());
    }
    present.sort();
    for name in &present {
        if name != MANIFEST_FILE && name != SIGNATURE_FILE && !manifest.files.contains_key(name) {
            return Err(bundle_err(dir, name, "not listed in the manifest (added)"));
        }
    }
    for name in manifest.files.keys() {
        if !present.contains(name) {
            return Err(bundle_err(dir, name, "missing (listed in the manifest)"));
        }
    }
    for required in [
        EVENTS_FILE,
        CONFIG_FILE,
        CHECKPOINTS_FILE,
        OTHER_FILE,
        APPROVALS_FILE,
        SUMMARY_FILE,
        VERIFICATION_FILE,
    ] {
        if !manifest.files.contains_key(required) {
            return Err(bundle_err(dir, required, "not in the manifest"));
        }
    }

    // 3. Sizes and hashes.
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        let mut file =
            File::open(&path).map_err(|e| bundle_err(dir, name, format!("cannot read: {e}")))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| bundle_err(dir, name, format!("cannot read: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        if size != entry.size {
            return Err(bundle_err(
                dir,
                name,
                format!("is {size} bytes, the manifest says {}", entry.size),
            ));
        }
        if hex::encode(h.finalize()) != entry.sha256 {
            return Err(bundle_err(
                dir,
                name,
                "SHA-256 differs from the manifest: the file was modified",
            ));
        }
    }

    // 4. Contents.
    let mut check = ContentCheck::new(dir, &manifest)?;
    check.run()?;
    let summary: Summary = serde_json::from_slice(&read(SUMMARY_FILE)?)
        .map_err(|e| bundle_err(dir, SUMMARY_FILE, format!("not a summary: {e}")))?;
    if summary != std::mem::take(&mut check.summary).finish() {
        return Err(bundle_err(
            dir,
            SUMMARY_FILE,
            format!("counts differ from the events in {EVENTS_FILE}"),
        ));
    }
    let counts = Counts {
        events: check.lines[0],
        config_changes: check.lines[1],
        checkpoints: check.lines[2],
        other_events: check.lines[3],
        approvals: check.lines[4],
    };
    if counts != manifest.counts {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            format!(
                "counts {:?} differ from the files' lines {counts:?}",
                manifest.counts
            ),
        ));
    }
    Ok(ExportVerification {
        chain_id: manifest.chain_id.clone(),
        key_id: manifest.key_id.clone(),
        from_ms: manifest.from_ms,
        to_ms: manifest.to_ms,
        first_seq: manifest.first_seq,
        last_seq: manifest.last_seq,
        counts,
        files: manifest.files.len() + 2,
        checkpoint_key_ids: check.key_ids,
        chain_verified_through: check.verified_through,
        unanchored_events: check.unanchored,
    })
}

/// One line of a bundle file, probed.
struct Line {
    seq: u64,
    data: Vec<u8>,
}

/// Reads one `.jsonl` file of a bundle in order.
struct LineReader {
    name: &'static str,
    /// Which [`EventKind`] the file holds.
    kind: Option<EventKind>,
    r: BufReader<File>,
    last_seq: Option<u64>,
    peeked: Option<Line>,
    lines: u64,
}

/// The files whose lines are chain events, and the approvals file.
const LINE_FILES: [(&str, Option<EventKind>); 5] = [
    (EVENTS_FILE, Some(EventKind::Connection)),
    (CONFIG_FILE, Some(EventKind::Config)),
    (CHECKPOINTS_FILE, Some(EventKind::Checkpoint)),
    (OTHER_FILE, Some(EventKind::Prune)),
    (APPROVALS_FILE, Some(EventKind::Approval)),
];

struct ContentCheck<'a> {
    dir: &'a Path,
    manifest: &'a Manifest,
    chain: ChainKey,
    readers: Vec<LineReader>,
    summary: SummaryBuilder,
    lines: [u64; 5],
    key_ids: Vec<String>,
    verified_through: Option<u64>,
    unanchored: u64,
}

impl<'a> ContentCheck<'a> {
    fn new(dir: &'a Path, manifest: &'a Manifest) -> Result<Self, AuditError> {
        let chain = ChainKey::parse(&manifest.chain_id)
            .map_err(|e| bundle_err(dir, MANIFEST_FILE, e.to_string()))?;
        let mut readers = Vec::new();
        for (name, kind) in LINE_FILES {
            let file = File::open(dir.join(name))
                .map_err(|e| bundle_err(dir, name, format!("cannot read: {e}")))?;
            readers.push(LineReader {
                name,
                kind,
                r: BufReader::new(file),
                last_seq: None,
                peeked: None,
                lines: 0,
            });
        }
        Ok(Self {
            dir,
            manifest,
            chain,
            readers,
            summary: SummaryBuilder::default(),
            lines: [0; 5],
            key_ids: Vec::new(),
            verified_through: None,
            unanchored: 0,
        })
    }

    /// Read and check the next line of reader `i` into its peek slot.
    fn fill(&mut self, i: usize) -> Result<(), AuditError> {
        let dir = self.dir;
        let chain_id = &self.manifest.chain_id;
        let rd = &mut self.readers[i];
        if rd.peeked.is_some() {
            return Ok(());
        }
        let mut data = Vec::new();
        let n =
            rd.r.read_until(b'\n', &mut data)
                .map_err(|e| bundle_err(dir, rd.name, format!("cannot read: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        rd.lines += 1;
        let at = rd.lines;
        if data.pop() != Some(b'\n') {
            return Err(bundle_err(
                dir,
                rd.name,
                format!("line {at} is not terminated"),
            ));
        }
        let Some(kind) = rd.kind else {
            return Err(bundle_err(
                dir,
                rd.name,
                "this file holds no chain events, but it has lines",
            ));
        };
        let p =
            probe_fast(&data).map_err(|e| bundle_err(dir, rd.name, format!("line {at}: {e}")))?;
        let seq = p.unmapped.warden.seq;
        let uid_ok = p
            .metadata
            .uid
            .strip_prefix(chain_id.as_str())
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|n| n == seq.to_string());
        if !uid_ok {
            return Err(bundle_err(
                dir,
                rd.name,
                format!(
                    "line {at}: metadata.uid {:?} is not {chain_id}:{seq}",
                    p.metadata.uid
                ),
            ));
        }
        let in_place = match kind {
            // other.jsonl: prunes and kernel denials.
            EventKind::Prune => {
                (p.class_uid == CLASS_UID_APPLICATION_LIFECYCLE
                    && p.kind() != Some(EventKind::Checkpoint))
                    || p.kind() == Some(EventKind::Kernel)
            }
            // events.jsonl: connections and statements.
            EventKind::Connection | EventKind::Statement | EventKind::Api => {
                matches!(
                    p.kind(),
                    Some(EventKind::Connection | EventKind::Statement | EventKind::Api)
                )
            }
            _ => p.kind() == Some(kind),
        };
        if !in_place {
            return Err(bundle_err(
                dir,
                rd.name,
                format!(
                    "line {at} (seq {seq}) is an event of class {} that does not belong here",
                    p.class_uid
                ),
            ));
        }
        if rd.last_seq.is_some_and(|l| seq <= l) {
            return Err(bundle_err(
                dir,
                rd.name,
                format!(
                    "line {at}: seq {seq} does not follow seq {}",
                    rd.last_seq.unwrap_or(0)
                ),
            ));
        }
        let in_range = matches!(
            (self.manifest.first_seq, self.manifest.last_seq),
            (Some(a), Some(b)) if seq >= a && seq <= b
        );
        if !in_range && kind != EventKind::Checkpoint {
            return Err(bundle_err(
                dir,
                rd.name,
                format!("line {at}: seq {seq} is outside the exported range"),
            ));
        }
        if matches!(
            kind,
            EventKind::Connection | EventKind::Statement | EventKind::Api
        ) {
            self.summary
                .add_event(&data)
                .map_err(|e| bundle_err(dir, rd.name, format!("line {at}: {e}")))?;
        }
        // The chain covers what the store holds: for the rendering of a
        // compact statement record, that record (the line must be exactly
        // its rendering).
        let record = if p.kind() == Some(EventKind::Statement) {
            match super::record::canonical_of_line(&data, seq, chain_id) {
                Ok(std::borrow::Cow::Owned(record)) => Some(record),
                Ok(std::borrow::Cow::Borrowed(_)) => None,
                Err(e) => return Err(bundle_err(dir, rd.name, format!("line {at}: {e}"))),
            }
        } else {
            None
        };
        let data = record.unwrap_or(data);
        rd.last_seq = Some(seq);
        rd.peeked = Some(Line { seq, data });
        Ok(())
    }

    /// Merge the files by seq and recompute the chain.
    fn run(&mut self) -> Result<(), AuditError> {
        let dir = self.dir;
        let mut prev: Option<Hash> = match &self.manifest.prev_hash {
            Some(h) => {
                let mut raw = [0u8; 32];
                hex::decode_to_slice(h, &mut raw).map_err(|_| {
                    bundle_err(dir, MANIFEST_FILE, "prev_hash is not 64 hex digits")
                })?;
                Some(raw)
            }
            None => None,
        };
        let mut expected = self.manifest.first_seq;
        // Recomputed events since the last signed head that matched.
        let mut pending: u64 = 0;
        loop {
            for i in 0..self.readers.len() {
                self.fill(i)?;
            }
            let next = (0..self.readers.len())
                .filter_map(|i| self.readers[i].peeked.as_ref().map(|l| (l.seq, i)))
                .min();
            let Some((seq, i)) = next else { break };
            if self
                .readers
                .iter()
                .filter(|r| r.peeked.as_ref().is_some_and(|l| l.seq == seq))
                .count()
                > 1
            {
                return Err(bundle_err(
                    dir,
                    self.readers[i].name,
                    format!("seq {seq} appears in more than one file"),
                ));
            }
            let Some(line) = self.readers[i].peeked.take() else {
                break;
            };
            let name = self.readers[i].name;
            self.lines[i] += 1;
            let in_range = matches!(
                (self.manifest.first_seq, self.manifest.last_seq),
                (Some(a), Some(b)) if seq >= a && seq <= b
            );
            // A gap (the store's, reported in verification.txt) stops the
            // recomputation until the next checkpoint: what was recomputed
            // since the last signed head can no longer be vouched for.
            if expected != Some(seq) {
                prev = None;
                self.unanchored += pending;
                pending = 0;
            }
            expected = Some(seq + 1);
            if self.readers[i].kind == Some(EventKind::Checkpoint) {
                let d = decode_checkpoint(&line.data)
                    .map_err(|e| bundle_err(dir, name, format!("seq {seq}: {e}")))?;
                let cp = d.checkpoint;
                if cp.body().origin != format!("{ORIGIN_PREFIX}{}", self.manifest.chain_id) {
                    return Err(bundle_err(
                        dir,
                        name,
                        format!("seq {seq}: a checkpoint of {:?}", cp.body().origin),
                    ));
                }
                let key = cp
                    .embedded_key()
                    .map_err(|e| bundle_err(dir, name, format!("seq {seq}: {e}")))?
                    .ok_or_else(|| bundle_err(dir, name, format!("seq {seq}: no public key")))?;
                if !cp.signature_valid(&key) {
                    return Err(bundle_err(
                        dir,
                        name,
                        format!("seq {seq}: checkpoint signature does not verify"),
                    ));
                }
                if !self.key_ids.iter().any(|k| k == cp.key_id()) {
                    self.key_ids.push(cp.key_id().to_owned());
                }
                if cp.size().saturating_add(1) != seq {
                    return Err(bundle_err(
                        dir,
                        name,
                        format!(
                            "seq {seq}: a checkpoint of seq {} must be event {}",
                            cp.size(),
                            cp.size().saturating_add(1)
                        ),
                    ));
                }
                match prev {
                    Some(h) if h != *cp.head_hash() => {
                        return Err(bundle_err(
                            dir,
                            name,
                            format!(
                                "seq {seq}: the chain recomputed over the exported events does \
                                 not reach the head this checkpoint signed for seq {}",
                                cp.size()
                            ),
                        ));
                    }
                    Some(_) => {
                        // Everything recomputed up to here is vouched for.
                        self.verified_through = Some(cp.size());
                        pending = 0;
                    }
                    // Resume from the signed head.
                    None => {}
                }
                prev = Some(*cp.head_hash());
            }
            match prev {
                Some(h) => {
                    prev = Some(event_hash(&self.chain, seq, &h, &line.data));
                    if in_range {
                        pending += 1;
                    }
                }
                None if in_range => self.unanchored += 1,
                None => {}
            }
        }
        self.unanchored += pending;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{ConfigAction, ConfigChange, ConnActivity, Decision};
    use crate::audit::store::WriterOptions;
    use crate::audit::testutil::{ev, opts};
    use std::time::Duration;

    /// After the real clock (checkpoint events carry the real time).
    const T0: i64 = 4_102_444_800_000;

    /// Config load (seq 1), e1..=e12 at T0 + i s with a checkpoint every 5
    /// events, a reload, the shutdown checkpoint: seqs 1 config, 2..=5
    /// e1..=e4, 6 checkpoint of 5, 7..=11 e5..=e9, 12 checkpoint of 11,
    /// 13..=15 e10..=e12, 16 reload, 17 checkpoint of 16.
    async fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.db");
        let o = WriterOptions {
            checkpoint_every: 5,
            checkpoint_interval: Duration::ZERO,
            ..opts(0)
        };
        let (h, task) = crate::audit::spawn_writer(&path, o).unwrap();
        let change = |time_ms, action| ConfigChange {
            time_ms,
            path: "/etc/warden/warden.toml".into(),
            sha256: "ab".repeat(32),
            action,
            detail: None,
            previous_sha256: None,
            outcome: Default::default(),
            reason: None,
        };
        h.record(change(T0, ConfigAction::Load)).await.unwrap();
        for i in 1..=12u64 {
            let mut e = ev(i);
            e.time_ms = T0 + i as i64 * 1000;
            if i % 4 == 0 {
                e.activity = ConnActivity::Refuse;
                e.decision = Decision::Refused;
                e.reason = Some("target_not_granted".into());
            }
            h.record(e).await.unwrap();
        }
        h.record(change(T0 + 13_000, ConfigAction::Reload))
            .await
            .unwrap();
        h.shutdown().await;
        task.join().unwrap();
        (dir, path)
    }

    fn lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn seqs_of(dir: &Path, name: &str) -> Vec<u64> {
        lines(dir, name)
            .iter()
            .map(|v| v["metadata"]["sequence"].as_u64().unwrap())
            .collect()
    }

    fn bundle_file(e: AuditError) -> String {
        match e {
            AuditError::Bundle { file, .. } => file,
            other => panic!("not a bundle error: {other}"),
        }
    }

    #[tokio::test]
    async fn round_trip_verifies_and_holds_the_range() {
        let (dir, path) = store().await;
        let out = dir.path().join("bundle");
        // e3..=e8: seqs 4..=10, with the checkpoint of 5 inside.
        let r = export(&path, T0 + 3000, T0 + 9000, &out).unwrap();
        assert_eq!((r.first_seq, r.last_seq), (Some(4), Some(10)));
        assert_eq!(
            r.counts,
            Counts {
                events: 6,
                config_changes: 0,
                checkpoints: 3,
                other_events: 0,
                approvals: 0
            }
        );
        assert!(r.gaps.is_empty() && r.chain_intact);
        assert_eq!(seqs_of(&out, EVENTS_FILE), vec![4, 5, 7, 8, 9, 10]);
        assert_eq!(seqs_of(&out, CHECKPOINTS_FILE), vec![6, 12, 17]);
        assert_eq!(std::fs::read(out.join(APPROVALS_FILE)).unwrap(), b"");
        // The exact stored bytes, one per line.
        let c = crate::audit::testutil::raw(&path);
        let stored = crate::audit::testutil::data(&c, 7);
        let text = std::fs::read(out.join(EVENTS_FILE)).unwrap();
        let line = text.split(|b| *b == b'\n').nth(2).unwrap();
        assert_eq!(line, &stored[..]);

        let v = verify_export(&out).unwrap();
        assert_eq!(v.chain_id, r.chain_id);
        assert_eq!(v.key_id, r.key_id);
        assert_eq!(v.counts, r.counts);
        assert_eq!(v.files, 9);
        assert_eq!(v.checkpoint_key_ids, vec![r.key_id.clone()]);
        // Recomputed from prev_hash through the checkpoint of 5; 6..=10
        // are not followed by a checkpoint in the bundle.
        assert_eq!(
            (v.chain_verified_through, v.unanchored_events),
            (Some(5), 5)
        );
        assert!(v.to_string().ends_with("bundle valid"), "{v}");

        // Manifest, summary and verification text.
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!((m.from_ms, m.to_ms), (T0 + 3000, T0 + 9000));
        assert_eq!(m.warden_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.approvals, APPROVALS_NOTE);
        assert_eq!(
            m.prev_hash.as_deref(),
            Some(hex::encode(crate::audit::testutil::hash(&c, 3)).as_str())
        );
        assert_eq!(m.files.len(), 7);
        let s: Summary =
            serde_json::from_slice(&std::fs::read(out.join(SUMMARY_FILE)).unwrap()).unwrap();
        assert_eq!(s.connection_events, 6);
        // e3..=e8: accounts acct-(i % 3), e4 and e8 refused.
        assert_eq!(
            s.by_account,
            BTreeMap::from([
                ("acct-0".to_owned(), 2),
                ("acct-1".to_owned(), 2),
                ("acct-2".to_owned(), 2)
            ])
        );
        assert_eq!(
            s.by_decision,
            BTreeMap::from([("allowed".to_owned(), 4), ("refused".to_owned(), 2)])
        );
        assert_eq!(s.by_target, BTreeMap::from([("orders-db".to_owned(), 6)]));
        assert_eq!(
            s.by_account_target_decision[0],
            TripleCount {
                account: Some("acct-0".into()),
                target: Some("orders-db".into()),
                decision: "allowed".into(),
                events: 2,
            }
        );
        let text = std::fs::read_to_string(out.join(VERIFICATION_FILE)).unwrap();
        assert!(
            text.contains(&format!("chain id:        {}", r.chain_id)),
            "{text}"
        );
        assert!(text.contains("exported seqs:   4..=10"), "{text}");
        assert!(text.contains("gaps in range:   none"), "{text}");
        assert!(text.contains("full chain:      intact"), "{text}");
        assert!(text.contains(&r.key_id), "{text}");
    }

    #[tokio::test]
    async fn a_range_followed_by_a_checkpoint_is_fully_anchored() {
        let (dir, path) = store().await;
        // Everything: configuration changes too, from genesis.
        let out = dir.path().join("all");
        let r = export(&path, T0, T0 + 14_000, &out).unwrap();
        assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(16)));
        assert_eq!(seqs_of(&out, CONFIG_FILE), vec![1, 16]);
        let v = verify_export(&out).unwrap();
        assert_eq!(
            (v.chain_verified_through, v.unanchored_events),
            (Some(16), 0)
        );
        // e3..=e9: seqs 4..=11, and the checkpoint of 11 is event 12.
        let out = dir.path().join("some");
        export(&path, T0 + 3000, T0 + 10_000, &out).unwrap();
        let v = verify_export(&out).unwrap();
        assert_eq!(
            (v.chain_verified_through, v.unanchored_events),
            (Some(11), 0)
        );
        // No event in the range: an empty, valid bundle.
        let out = dir.path().join("empty");
        let r = export(&path, T0 - 10_000, T0 - 5000, &out).unwrap();
        assert_eq!((r.first_seq, r.counts.events), (None, 0));
        let v = verify_export(&out).unwrap();
        assert_eq!(v.chain_verified_through, None);
    }

    #[tokio::test]
    async fn output_directory_must_be_new_or_empty() {
        let (dir, path) = store().await;
        let out = dir.path().join("b");
        std::fs::create_dir(&out).unwrap();
        export(&path, T0, T0 + 5000, &out).unwrap();
        let err = export(&path, T0, T0 + 5000, &out).unwrap_err();
        assert!(matches!(err, AuditError::Export { .. }), "{err}");
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = export(&path, T0, T0, &dir.path().join("c")).unwrap_err();
        assert!(err.to_string().contains("range is empty"), "{err}");
        assert!(!dir.path().join("c").exists());
        // No key, no signature.
        std::fs::remove_file(dir.path().join("state/checkpoint.key")).unwrap();
        let err = export(&path, T0, T0 + 5000, &dir.path().join("d")).unwrap_err();
        assert!(matches!(err, AuditError::Key { .. }), "{err}");
    }

    /// A fresh bundle of the store, for one tampering.
    async fn bundle() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let (dir, path) = store().await;
        let out = dir.path().join("bundle");
        export(&path, T0, T0 + 14_000, &out).unwrap();
        verify_export(&out).unwrap();
        (dir, path, out)
    }

    fn flip_byte(path: &Path, at: usize) {
        let mut b = std::fs::read(path).unwrap();
        b[at] ^= 0x01;
        std::fs::write(path, b).unwrap();
    }

    #[tokio::test]
    async fn any_changed_missing_or_added_file_is_named() {
        for name in [
            EVENTS_FILE,
            SUMMARY_FILE,
            CONFIG_FILE,
            CHECKPOINTS_FILE,
            VERIFICATION_FILE,
        ] {
            let (_d, _p, out) = bundle().await;
            flip_byte(&out.join(name), 40);
            let err = verify_export(&out).unwrap_err();
            assert!(err.to_string().contains("SHA-256 differs"), "{err}");
            assert_eq!(bundle_file(err), name);
        }
        // The manifest: its signature no longer matches.
        let (_d, _p, out) = bundle().await;
        let m = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
        let at = m.find("\"to_ms\": ").unwrap() + 10;
        flip_byte(&out.join(MANIFEST_FILE), at);
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        assert_eq!(bundle_file(err), MANIFEST_FILE);
        // The signature itself: another valid signature encoding fails to
        // verify the manifest; something that is no signature is named.
        let (_d, _p, out) = bundle().await;
        let sig = std::fs::read_to_string(out.join(SIGNATURE_FILE)).unwrap();
        let other = if sig.starts_with('0') { "1" } else { "0" };
        std::fs::write(out.join(SIGNATURE_FILE), format!("{other}{}", &sig[1..])).unwrap();
        assert_eq!(bundle_file(verify_export(&out).unwrap_err()), MANIFEST_FILE);
        std::fs::write(out.join(SIGNATURE_FILE), "not hex\n").unwrap();
        assert_eq!(
            bundle_file(verify_export(&out).unwrap_err()),
            SIGNATURE_FILE
        );
        // A byte appended.
        let (_d, _p, out) = bundle().await;
        let mut b = std::fs::read(out.join(EVENTS_FILE)).unwrap();
        b.push(b'\n');
        std::fs::write(out.join(EVENTS_FILE), b).unwrap();
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
        assert_eq!(bundle_file(err), EVENTS_FILE);
        // A file deleted.
        for name in [CONFIG_FILE, MANIFEST_FILE, SIGNATURE_FILE] {
            let (_d, _p, out) = bundle().await;
            std::fs::remove_file(out.join(name)).unwrap();
            let err = verify_export(&out).unwrap_err();
            assert!(err.to_string().contains("missing"), "{err}");
            assert_eq!(bundle_file(err), name);
        }
        // A file added.
        let (_d, _p, out) = bundle().await;
        std::fs::write(out.join("notes.txt"), "hello").unwrap();
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("not listed"), "{err}");
        assert_eq!(bundle_file(err), "notes.txt");
    }

    /// Replace `name` with `contents` and re-sign the manifest with the
    /// store's own key: what only the key holder could do.
    fn resign(out: &Path, store: &Path, name: &str, contents: &[u8]) {
        std::fs::write(out.join(name), contents).unwrap();
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
        m.files.insert(
            name.to_owned(),
            FileEntry {
                sha256: hex::encode(Sha256::digest(contents)),
                size: contents.len() as u64,
            },
        );
        let mut bytes = serde_json::to_vec_pretty(&m).unwrap();
        bytes.push(b'\n');
        let signer = CheckpointSigner::load_existing(store).unwrap();
        std::fs::write(out.join(MANIFEST_FILE), &bytes).unwrap();
        std::fs::write(
            out.join(SIGNATURE_FILE),
            format!("{}\n", hex::encode(signer.sign_bytes(&bytes))),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn contents_are_checked_beyond_the_hashes() {
        // An event rewritten (and the manifest re-signed): the chain no
        // longer reaches the next signed checkpoint.
        let (_d, path, out) = bundle().await;
        let text = std::fs::read_to_string(out.join(EVENTS_FILE)).unwrap();
        let forged = text.replacen("\"acct-1\"", "\"acct-2\"", 1);
        resign(&out, &path, EVENTS_FILE, forged.as_bytes());
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("does not reach the head"), "{err}");
        assert_eq!(bundle_file(err), CHECKPOINTS_FILE);

        // A summary that does not add up.
        let (_d, path, out) = bundle().await;
        let text = std::fs::read_to_string(out.join(SUMMARY_FILE)).unwrap();
        let forged = text.replacen("\"refused\": 3", "\"refused\": 2", 1);
        assert_ne!(forged, text);
        resign(&out, &path, SUMMARY_FILE, forged.as_bytes());
        let err = verify_export(&out).unwrap_err();
        assert_eq!(bundle_file(err), SUMMARY_FILE);

        // Events out of order.
        let (_d, path, out) = bundle().await;
        let text = std::fs::read_to_string(out.join(EVENTS_FILE)).unwrap();
        let mut l: Vec<&str> = text.lines().collect();
        l.swap(0, 1);
        resign(
            &out,
            &path,
            EVENTS_FILE,
            format!("{}\n", l.join("\n")).as_bytes(),
        );
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("does not follow"), "{err}");
        assert_eq!(bundle_file(err), EVENTS_FILE);

        // An event of another chain.
        let (_d, path, out) = bundle().await;
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
        let text = std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap();
        let forged = text.replacen(&format!("{}:1\"", m.chain_id), "0123:1\"", 1);
        resign(&out, &path, CONFIG_FILE, forged.as_bytes());
        let err = verify_export(&out).unwrap_err();
        assert!(err.to_string().contains("metadata.uid"), "{err}");
        assert_eq!(bundle_file(err), CONFIG_FILE);

        // A line in approvals.jsonl that is no approval event.
        let (_d, path, out) = bundle().await;
        resign(&out, &path, APPROVALS_FILE, b"{}\n");
        assert_eq!(
            bundle_file(verify_export(&out).unwrap_err()),
            APPROVALS_FILE
        );
    }

    #[tokio::test]
    async fn a_pruned_store_exports_from_its_kept_checkpoint() {
        let (dir, path) = store().await;
        // Prune through the checkpoint of 5 (events 1..=5).
        let (h, task) =
            crate::audit::spawn_writer_with(&path, opts(0), Some(crate::audit::Retention::days(1)))
                .unwrap();
        let r = h.prune_at(T0 + 5_500 + 86_400_000).await.unwrap();
        assert_eq!(r.removed, Some((1, 5)));
        h.shutdown().await;
        task.join().unwrap();
        let out = dir.path().join("pruned");
        // From an hour ago (checkpoints carry the real clock) on: seq 6,
        // the kept checkpoint, is the first event left; 18 is the prune,
        // 19 the checkpoint signed when the writer stopped.
        let r = export(&path, now_ms() - 3_600_000, T0 + 10_000, &out).unwrap();
        assert_eq!((r.first_seq, r.last_seq), (Some(6), Some(19)));
        assert_eq!(seqs_of(&out, OTHER_FILE), vec![18]);
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
        let c = crate::audit::testutil::raw(&path);
        let head: Vec<u8> = c
            .query_row(
                "SELECT head_hash FROM checkpoints WHERE size = 5",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            m.prev_hash,
            Some(hex::encode(head)),
            "the kept checkpoint's head"
        );
        let v = verify_export(&out).unwrap();
        assert_eq!(
            (v.chain_verified_through, v.unanchored_events),
            (Some(18), 1)
        );
        assert!(
            std::fs::read_to_string(out.join(VERIFICATION_FILE))
                .unwrap()
                .contains("pruned:      events 1..=5")
        );
    }

    #[tokio::test]
    async fn statements_are_exported_with_events_and_counted_in_the_summary() {
        use crate::audit::event::{StatementDecision, StatementEvent};
        use crate::audit::ocsf::tests::{sample, sample_statement};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit.db");
        let (h, task) = crate::audit::spawn_writer(&path, opts(0)).unwrap();
        let at = |mut e: StatementEvent, i: i64| {
            e.time_ms = T0 + i * 1000;
            e
        };
        let mut open = sample(ConnActivity::Open, Decision::Allowed);
        open.time_ms = T0;
        h.record(open).await.unwrap();
        let allowed = |n| sample_statement(StatementPhase::Request, StatementDecision::Allowed, n);
        let result = |n| sample_statement(StatementPhase::Result, StatementDecision::Allowed, n);
        h.record(at(allowed(1), 1)).await.unwrap();
        h.record(at(result(1), 2)).await.unwrap();
        let mut ddl = allowed(2);
        ddl.class = "ddl".into();
        ddl.account = "migrations".into();
        h.record(at(ddl, 3)).await.unwrap();
        let blocked = sample_statement(StatementPhase::Request, StatementDecision::Blocked, 3);
        h.record(at(blocked, 4)).await.unwrap();
        let denied = sample_statement(StatementPhase::Request, StatementDecision::Denied, 4);
        h.record(at(denied, 5)).await.unwrap();
        h.shutdown().await;
        task.join().unwrap();

        let out = dir.path().join("bundle");
        let r = export(&path, T0, T0 + 10_000, &out).unwrap();
        assert_eq!(r.counts.events, 6, "the open and five statement events");
        assert_eq!(seqs_of(&out, EVENTS_FILE), vec![1, 2, 3, 4, 5, 6]);
        let classes: Vec<u64> = lines(&out, EVENTS_FILE)
            .iter()
            .map(|v| v["class_uid"].as_u64().unwrap())
            .collect();
        assert_eq!(classes, vec![4001, 6005, 6005, 6005, 6005, 6005]);
        let s: Summary =
            serde_json::from_slice(&std::fs::read(out.join(SUMMARY_FILE)).unwrap()).unwrap();
        assert_eq!(s.connection_events, 1);
        let st = &s.statements;
        assert_eq!((st.statements, st.results), (4, 1));
        assert_eq!(
            st.by_decision,
            BTreeMap::from([
                ("allowed".to_owned(), 2),
                ("blocked".to_owned(), 1),
                ("denied".to_owned(), 1)
            ])
        );
        assert_eq!(
            st.by_class,
            BTreeMap::from([
                ("ddl".to_owned(), 1),
                ("read".to_owned(), 1),
                ("write".to_owned(), 2)
            ])
        );
        assert_eq!(
            st.by_account,
            BTreeMap::from([("migrations".to_owned(), 1), ("orders-api".to_owned(), 3)])
        );
        assert_eq!(st.by_target, BTreeMap::from([("orders-db".to_owned(), 4)]));
        assert_eq!(st.by_account_target_decision.len(), 4);
        assert_eq!(
            st.by_account_target_decision[1],
            TripleCount {
                account: Some("orders-api".into()),
                target: Some("orders-db".into()),
                decision: "allowed".into(),
                events: 1,
            }
        );
        let v = verify_export(&out).unwrap();
        assert_eq!(v.counts, r.counts);

        // A summary that hides a blocked statement does not verify.
        let out2 = dir.path().join("bundle2");
        export(&path, T0, T0 + 10_000, &out2).unwrap();
        let text = std::fs::read_to_string(out2.join(SUMMARY_FILE)).unwrap();
        let mut forged: Summary = serde_json::from_str(&text).unwrap();
        forged.statements.by_decision.remove("blocked");
        let forged = serde_json::to_vec_pretty(&forged).unwrap();
        std::fs::write(out2.join(SUMMARY_FILE), &forged).unwrap();
        // Re-sign so only the content check can catch it.
        let mut m: Manifest =
            serde_json::from_slice(&std::fs::read(out2.join(MANIFEST_FILE)).unwrap()).unwrap();
        let entry = m.files.get_mut(SUMMARY_FILE).unwrap();
        entry.sha256 = hex::encode(Sha256::digest(&forged));
        entry.size = forged.len() as u64;
        let mut bytes = serde_json::to_vec_pretty(&m).unwrap();
        bytes.push(b'\n');
        let signer = CheckpointSigner::load_existing(&path).unwrap();
        std::fs::write(out2.join(MANIFEST_FILE), &bytes).unwrap();
        std::fs::write(
            out2.join(SIGNATURE_FILE),
            format!("{}\n", hex::encode(signer.sign_bytes(&bytes))),
        )
        .unwrap();
        let err = verify_export(&out2).unwrap_err();
        assert_eq!(bundle_file(err), SUMMARY_FILE);
    }
}
