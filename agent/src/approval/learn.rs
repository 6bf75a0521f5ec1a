//! `warden approvals approve --learn` (issue 19): approving a request that
//! a grant in `mode = "enforce"` with `on_new = "approve"` held because its
//! fingerprint is not in the grant's allow-list also adds that fingerprint
//! to the allow-list file, so the next request of the same shape passes
//! without asking.
//!
//! The file stays the operator's: the new `[[fingerprint]]` table is
//! appended to the text as it is on disk (comments, order and the
//! operator's edits kept), under a comment naming the request, the
//! approver and the time; the result must parse as an allow-list, and it
//! replaces the file atomically (a reader sees the old or the new file).
//! The approval's audit event names the fingerprint added; if it cannot be
//! recorded, the file is put back as it was. Only then does the running
//! grant list the fingerprint (no reload or restart needed; other edits of
//! the file still wait for `warden reload`): every allow-list runtime that
//! reads that file ([`register`]ed when built), so a reload between the
//! hold and the approval does not lose it.
//!
//! Who may learn is who may approve ([`super::Approvals::decide`]): the
//! same checks, so the workload can never widen its own allow-list.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use crate::audit::event::ApproverIdentity;
use crate::policy::allowlist::file::Entry;
use crate::policy::allowlist::{AllowlistFile, AllowlistFileError, Fingerprint, GrantAllowlist};

/// Why `--learn` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(
        "request {id} was not held because its shape is missing from an allow-list (a grant in mode = \"enforce\" with on_new = \"approve\"): there is nothing to learn; approve it without --learn"
    )]
    NotLearnable { id: String },
    #[error("--learn goes with approve, not deny")]
    NotApproving,
    #[error("grant {grant} names no allow-list file to add the fingerprint to")]
    NoFile { grant: String },
    #[error("the allow-list file cannot be changed, so nothing was: {0}")]
    File(#[from] AllowlistFileError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a held request would add to its grant's allow-list.
#[derive(Debug, Clone)]
pub struct LearnCandidate {
    /// The grant's allow-list runtime (the one that held the request).
    pub allowlist: Arc<GrantAllowlist>,
    pub fingerprint: Fingerprint,
    /// `postgres` or `http`.
    pub protocol: &'static str,
    /// The request as the audit trail shows it (masked).
    pub example: String,
}

impl LearnCandidate {
    /// A candidate when `allowlist` enforces with `on_new = "approve"`
    /// (the only grants whose holds `--learn` can end).
    pub fn of(
        allowlist: Option<&Arc<GrantAllowlist>>,
        fingerprint: Option<&Fingerprint>,
        protocol: &'static str,
        example: &str,
    ) -> Option<Self> {
        let allowlist = allowlist?;
        if allowlist.mode != crate::policy::allowlist::Mode::Enforce
            || allowlist.on_new != crate::policy::allowlist::OnNew::Approve
        {
            return None;
        }
        Some(LearnCandidate {
            allowlist: Arc::clone(allowlist),
            fingerprint: fingerprint?.clone(),
            protocol,
            example: example.to_owned(),
        })
    }
}

/// The file written, and how to put it back.
pub(super) struct Staged {
    path: PathBuf,
    /// The text before (`None`: the fingerprint was already listed, nothing
    /// was written).
    old: Option<String>,
    mode: u32,
    entry: Entry,
}

impl Staged {
    /// True when the file was changed.
    pub(super) fn written(&self) -> bool {
        self.old.is_some()
    }

    /// Puts the file back as it was (the approval could not be recorded).
    pub(super) fn revert(self) {
        if let Some(old) = &self.old
            && let Err(e) =
                crate::fsutil::replace_keeping_owner(&self.path, old.as_bytes(), self.mode)
        {
            tracing::error!(path = %self.path.display(), error = %e, "could not put the allow-list file back after an unrecorded approval");
        }
    }

    /// The running grants of the file list the fingerprint.
    pub(super) fn commit(self, c: &LearnCandidate) {
        c.allowlist.list_also(self.entry.clone());
        for live in live_of(&self.path) {
            if !Arc::ptr_eq(&live, &c.allowlist) {
                live.list_also(self.entry.clone());
            }
        }
    }
}

/// Allow-list runtimes built in this process (weakly held).
static LIVE: Mutex<Vec<Weak<GrantAllowlist>>> = Mutex::new(Vec::new());

/// Makes `a` one of the runtimes `approve --learn` updates.
pub fn register(a: &Arc<GrantAllowlist>) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(a));
}

/// The live runtimes that read `path`.
fn live_of(path: &std::path::Path) -> Vec<Arc<GrantAllowlist>> {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|a| a.file.as_deref() == Some(path))
        .collect()
}

/// Appends `c`'s fingerprint to its grant's allow-list file (see the
/// module docs). Nothing is written when it is already listed.
pub(super) fn write(
    c: &LearnCandidate,
    request_id: &str,
    approver: &ApproverIdentity,
    now_ms: i64,
) -> Result<Staged, LearnError> {
    let path = c.allowlist.file.clone().ok_or_else(|| LearnError::NoFile {
        grant: c.allowlist.grant.clone(),
    })?;
    let old = std::fs::read_to_string(&path).map_err(|source| AllowlistFileError::Read {
        path: path.clone(),
        source,
    })?;
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let current = AllowlistFile::parse(&old, &path)?;
    let entry = Entry {
        id: c.fingerprint.id.clone(),
        protocol: c.protocol.to_owned(),
        text: c.fingerprint.text.clone(),
        example: Some(c.example.clone()),
    };
    if current.contains(&entry.id) {
        return Ok(Staged {
            path,
            old: None,
            mode,
            entry,
        });
    }
    let text = appended(&old, &entry, request_id, approver, now_ms);
    let list = AllowlistFile::parse(&text, &path)?;
    if !list.contains(&c.fingerprint.id) {
        // The entry's id is computed from its protocol and text, as the
        // agent computed the request's: they cannot differ.
        return Err(AllowlistFileError::Invalid {
            path,
            line: text.lines().count(),
            message: format!(
                "the appended fingerprint {} is not listed",
                c.fingerprint.id
            ),
        }
        .into());
    }
    crate::fsutil::replace_keeping_owner(&path, text.as_bytes(), mode).map_err(|source| {
        LearnError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(Staged {
        path,
        old: Some(old),
        mode,
        entry,
    })
}

/// `old` with one `[[fingerprint]]` table appended under a comment.
fn appended(
    old: &str,
    entry: &Entry,
    request_id: &str,
    approver: &ApproverIdentity,
    now_ms: i64,
) -> String {
    #[derive(serde::Serialize)]
    struct One<'a> {
        fingerprint: [&'a Entry; 1],
    }
    // A table of strings always serialises.
    let table = toml::to_string_pretty(&One {
        fingerprint: [entry],
    })
    .unwrap_or_default();
    let who = approver
        .user
        .clone()
        .unwrap_or_else(|| format!("uid {}", approver.uid));
    let mut out = old.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# Added by `warden approvals approve --learn` of request {request_id} by {who} at {}.\n",
        crate::audit::reader::format_time(now_ms)
    ));
    out.push_str(&table);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::allowlist::{AllowlistSettings, Mode, OnNew, sql_fingerprint};

    fn candidate(dir: &Path, on_new: OnNew) -> (LearnCandidate, PathBuf) {
        let file = dir.join("list.toml");
        std::fs::write(
            &file,
            "# reviewed by ann\n[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"select $?\"\n",
        )
        .unwrap();
        let settings = AllowlistSettings {
            mode: Some(Mode::Enforce),
            allowlist: Some(file.clone()),
            on_new: Some(on_new),
        };
        let gate = Arc::new(
            GrantAllowlist::build(&settings, dir, "app", "pg")
                .unwrap()
                .unwrap(),
        );
        let fp = sql_fingerprint("DELETE FROM orders WHERE id = 7").unwrap();
        let c = LearnCandidate::of(
            Some(&gate),
            Some(&fp),
            "postgres",
            "DELETE FROM orders WHERE id = ?",
        );
        if on_new == OnNew::Refuse {
            assert!(c.is_none());
            return (
                LearnCandidate {
                    allowlist: gate,
                    fingerprint: fp,
                    protocol: "postgres",
                    example: String::new(),
                },
                file,
            );
        }
        (c.unwrap(), file)
    }

    fn ann() -> ApproverIdentity {
        ApproverIdentity {
            uid: 5001,
            user: Some("ann".into()),
            ..ApproverIdentity::default()
        }
    }

    #[test]
    fn appends_keeping_the_operators_text_then_lists_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (c, file) = candidate(dir.path(), OnNew::Approve);
        let id = c.fingerprint.id.clone();
        let listed = |c: &LearnCandidate| {
            c.allowlist
                .judge(Some(&c.fingerprint), "postgres", "", "allowed")
                .0
                == crate::policy::allowlist::ListVerdict::Listed
        };
        assert!(!listed(&c));
        let staged = write(&c, "k3x9m2pq", &ann(), 0).unwrap();
        assert!(staged.written());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# reviewed by ann\n[[fingerprint]]\n"),
            "{text}"
        );
        assert!(text.contains("request k3x9m2pq by ann"), "{text}");
        assert!(
            text.contains("text = \"delete from orders where id = $?\""),
            "{text}"
        );
        assert!(AllowlistFile::load(&file).unwrap().contains(&id));
        // Not in force until committed.
        assert!(!listed(&c));
        staged.commit(&c);
        assert!(listed(&c));
        // Learning it again writes nothing.
        let again = write(&c, "k3x9m2pr", &ann(), 0).unwrap();
        assert!(!again.written());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn a_runtime_built_since_the_hold_lists_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let (c, file) = candidate(dir.path(), OnNew::Approve);
        // A reload after the hold: a new runtime of the same file.
        let settings = AllowlistSettings {
            mode: Some(Mode::Enforce),
            allowlist: Some(file.clone()),
            on_new: Some(OnNew::Approve),
        };
        let reloaded = Arc::new(
            GrantAllowlist::build(&settings, dir.path(), "app", "pg")
                .unwrap()
                .unwrap(),
        );
        register(&reloaded);
        write(&c, "k3x9m2pq", &ann(), 0).unwrap().commit(&c);
        let (verdict, _) = reloaded.judge(Some(&c.fingerprint), "postgres", "", "allowed");
        assert_eq!(verdict, crate::policy::allowlist::ListVerdict::Listed);
    }

    #[test]
    fn an_unrecorded_approval_puts_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let (c, file) = candidate(dir.path(), OnNew::Approve);
        let before = std::fs::read_to_string(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let staged = write(&c, "k3x9m2pq", &ann(), 0).unwrap();
        assert_ne!(std::fs::read_to_string(&file).unwrap(), before);
        staged.revert();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_broken_file_is_left_alone_and_refuse_grants_have_no_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let (c, file) = candidate(dir.path(), OnNew::Refuse);
        std::fs::write(&file, "[[fingerprint]\n").unwrap();
        let e = write(&c, "k3x9m2pq", &ann(), 0).err().unwrap();
        assert!(e.to_string().contains("list.toml:1:"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "[[fingerprint]\n");
    }
}
