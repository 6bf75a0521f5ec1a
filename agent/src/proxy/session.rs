//! The protocol-neutral part of enforcement, shared by every protocol
//! handler (PostgreSQL, HTTP; MySQL next).
//!
//! What a handler gets from here instead of writing it again:
//! - the grant-runtime builder: [`GrantTable`] (one entry per `[[grant]]`
//!   on a target the handler serves, with the policy [`Config::load`]
//!   compiled) and [`Maskers`] (every `[masking.NAME]` as the load compiled
//!   it, its HMAC key read once), failing with one [`SetupError`];
//! - [`ApprovalContext`]: the approval service and the uids that can never
//!   approve an account's requests;
//! - [`decision_of`]: the one mapping from a policy [`Action`] to the
//!   decision written into request events;
//! - [`caller_facts`]: who called goes with request events only;
//! - the approval hold ([`ask`], [`wait`]): one loop that waits for a
//!   decision while reading (and buffering) what the client sends, so a
//!   client that leaves withdraws its request.
//!
//! A handler keeps what is protocol-specific: framing, what a "request" is,
//! how a refusal is spoken (PostgreSQL 42501/57014, HTTP 403).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::approval::{Approvals, Gate, Hold, RequestSpec, Resolution};
use crate::audit::event::{ProcessInfo, StatementDecision, StatementPhase, TokenIdentity};
use crate::config::{Config, Grant};
use crate::masking::Masker;
use crate::policy::Action;

/// Why a protocol runtime could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("target {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: super::postgres::stream::TlsSetupError,
    },
    #[error("target {target}: local CA: {source}")]
    Ca {
        target: String,
        #[source]
        source: super::http::ca::CaError,
    },
    #[error("masking {name}: {problems}")]
    Masking { name: String, problems: String },
    #[error("grant {grant}: {source}")]
    Allowlist {
        grant: String,
        #[source]
        source: crate::policy::allowlist::AllowlistFileError,
    },
    #[error("masking {name}: {source}")]
    HmacKey {
        name: String,
        #[source]
        source: crate::masking::MaskingError,
    },
}

impl SetupError {
    /// A masking whose HMAC key is unusable, its problems joined (the
    /// policies and the rest of each masking were compiled, and their
    /// problems reported, by [`Config::load`]).
    pub fn masking<P: std::fmt::Display>(name: &str, problems: &[P]) -> Self {
        Self::Masking {
            name: name.to_owned(),
            problems: joined(problems),
        }
    }
}

fn joined<P: std::fmt::Display>(problems: &[P]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every `[masking.NAME]` of a configuration as [`Config::load`] compiled
/// it, given its HMAC key (read once per configuration, through
/// [`crate::masking::read_hmac_key`]).
#[derive(Default)]
pub struct Maskers(HashMap<String, Arc<Masker>>);

impl Maskers {
    /// The configuration's compiled maskings, each keyed from its
    /// `hmac_key_file` (read now); nothing is compiled again.
    pub fn build(config: &Config) -> Result<Self, SetupError> {
        let mut maskers = HashMap::new();
        for (name, compiled) in config.compiled.maskings() {
            let key_file = config
                .maskings
                .get(name)
                .and_then(|m| m.hmac_key_file.as_ref());
            let m = match key_file {
                Some(path) => {
                    let key = crate::masking::read_hmac_key(path).map_err(|source| {
                        SetupError::HmacKey {
                            name: name.clone(),
                            source,
                        }
                    })?;
                    Arc::new(
                        compiled
                            .unkeyed
                            .keyed(key)
                            .map_err(|p| SetupError::masking(name, &p))?,
                    )
                }
                None => Arc::clone(&compiled.unkeyed),
            };
            maskers.insert(name.clone(), m);
        }
        Ok(Self(maskers))
    }

    /// The grant's masking, if it names one.
    pub fn of(&self, g: &Grant) -> Option<Arc<Masker>> {
        g.masking
            .as_ref()
            .and_then(|m| self.0.get(m))
            .map(Arc::clone)
    }
}

/// The grants of the targets one handler serves, each compiled once:
/// (account, target) → what the handler made of it.
pub struct GrantTable<G>(HashMap<(String, String), Arc<G>>);

impl<G> GrantTable<G> {
    /// Every grant whose target `serves` accepts, made by `make` (`None`:
    /// skipped, e.g. a grant without the policy validation guarantees).
    pub fn build(
        config: &Config,
        serves: impl Fn(&str) -> bool,
        mut make: impl FnMut(&Grant) -> Result<Option<G>, SetupError>,
    ) -> Result<Self, SetupError> {
        let mut grants = HashMap::new();
        for g in config.grants.iter().filter(|g| serves(&g.target)) {
            if let Some(made) = make(g)? {
                grants.insert((g.account.clone(), g.target.clone()), Arc::new(made));
            }
        }
        Ok(Self(grants))
    }

    /// The grant of `account` on `target`, if any.
    pub fn get(&self, account: &str, target: &str) -> Option<Arc<G>> {
        self.0
            .get(&(account.to_owned(), target.to_owned()))
            .cloned()
    }
}

/// Every built-in masking detector, compiled once for the process: masks
/// command lines, and statement text on grants without a masking.
pub fn builtin_masker() -> Arc<Masker> {
    static M: OnceLock<Arc<Masker>> = OnceLock::new();
    Arc::clone(M.get_or_init(|| Arc::new(Masker::all_builtin())))
}

/// Where requests of `approve` rules are held, and who may never decide
/// them.
#[derive(Default, Clone)]
pub struct ApprovalContext {
    /// Without it, requests of `approve` rules stay refused.
    pub approvals: Option<Arc<Approvals>>,
    /// Enrolled uids per account: they can never approve its requests.
    account_uids: Arc<HashMap<String, Vec<u32>>>,
}

impl ApprovalContext {
    pub fn new(config: &Config) -> Self {
        Self {
            approvals: None,
            account_uids: Arc::new(config.account_uids()),
        }
    }

    /// The enrolled uids of `account`.
    pub fn uids_of(&self, account: &str) -> Vec<u32> {
        self.account_uids.get(account).cloned().unwrap_or_default()
    }
}

/// The decision a request event records for a policy action.
pub fn decision_of(action: Action) -> StatementDecision {
    match action {
        Action::Allow => StatementDecision::Allowed,
        Action::Block => StatementDecision::Blocked,
        Action::Approve => StatementDecision::ApprovalRequired,
        Action::Deny => StatementDecision::Denied,
    }
}

/// Who called goes with the request event only; the result is tied to it
/// by session and sequence number.
pub fn caller_facts(
    phase: StatementPhase,
    process: &ProcessInfo,
    identity: Option<&TokenIdentity>,
) -> (ProcessInfo, Option<TokenIdentity>) {
    match phase {
        StatementPhase::Request => (process.clone(), identity.cloned()),
        StatementPhase::Result => (ProcessInfo::default(), None),
    }
}

/// The approval request a session's request is held on (its id), so a
/// cancel (PostgreSQL's CancelRequest) can withdraw it.
#[derive(Debug, Default)]
pub struct HoldSlot(Mutex<Option<String>>);

impl HoldSlot {
    pub fn set(&self, id: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What asking the approval service gave.
pub enum Asked {
    /// A standing grant covers the request: it goes on (why, for the record).
    Granted(String),
    /// The request could not be recorded: it stays refused (why).
    Unrecorded(String),
    /// Held for a decision; wait on it with [`wait`].
    Held(Hold),
}

/// Asks the approval service about a request of an `approve` rule.
pub async fn ask(approvals: &Arc<Approvals>, spec: RequestSpec) -> Asked {
    ask_learnable(approvals, spec, None).await
}

/// [`ask`], for a request an allow-list may have held: `learn` is what
/// `approve --learn` adds to it (issue 19).
pub async fn ask_learnable(
    approvals: &Arc<Approvals>,
    spec: RequestSpec,
    learn: Option<crate::approval::learn::LearnCandidate>,
) -> Asked {
    match approvals.request_learnable(spec, learn).await {
        Ok(Gate::Granted { grant_id }) => Asked::Granted(format!("approved by grant {grant_id}")),
        Ok(Gate::Held(h)) => Asked::Held(h),
        Err(e) => {
            tracing::error!(error = %e, "approval request could not be recorded");
            Asked::Unrecorded("the approval request could not be recorded".into())
        }
    }
}

/// The client of a held request, read while the request waits so that its
/// leaving is noticed.
pub trait HeldClient {
    /// Bytes read and not yet handled.
    fn buffered(&self) -> usize;
    /// Reads more of what the client sends; `false` when it has gone
    /// (closed, or the read failed).
    fn read_more(&mut self) -> impl std::future::Future<Output = bool>;
}

/// How a held request ended.
pub struct Waited {
    pub id: String,
    pub resolution: Resolution,
    /// What the record says of it (approved by whom, denied, timed out…).
    pub why: String,
    /// The client went away while waiting (the request was withdrawn).
    pub gone: bool,
}

/// Waits until the held request is decided, withdrawn or timed out. What
/// the client sends meanwhile is buffered, up to `cap` bytes (then Warden
/// stops reading); a client that leaves withdraws the request. `slot`
/// names the request while it waits.
pub async fn wait(
    approvals: &Approvals,
    mut hold: Hold,
    client: &mut impl HeldClient,
    cap: usize,
    slot: Option<&HoldSlot>,
) -> Waited {
    let id = hold.id.clone();
    if let Some(s) = slot {
        s.set(Some(id.clone()));
    }
    let mut gone = false;
    let resolution = {
        let wait = hold.wait();
        tokio::pin!(wait);
        loop {
            if gone || client.buffered() >= cap {
                break (&mut wait).await;
            }
            tokio::select! {
                r = &mut wait => break r,
                alive = client.read_more() => if !alive {
                    gone = true;
                    approvals.withdraw(&id, "the client closed its connection").await;
                },
            }
        }
    };
    if let Some(s) = slot {
        s.set(None);
    }
    let why = resolution.describe(&id, approvals.config().approval_timeout_secs);
    Waited {
        id,
        resolution,
        why,
        gone,
    }
}

// --- allow-lists (issue 19) ---

/// The allow-list runtime of a grant (`None` without a `mode`), its file
/// read once per configuration load.
pub fn grant_allowlist(
    config: &Config,
    g: &Grant,
) -> Result<Option<Arc<crate::policy::allowlist::GrantAllowlist>>, SetupError> {
    let Some(settings) = config.allowlist_of(&g.account, &g.target) else {
        return Ok(None);
    };
    crate::policy::allowlist::GrantAllowlist::build(
        settings,
        &config.agent.state_dir,
        &g.account,
        &g.target,
    )
    .map(|o| {
        o.map(|a| {
            let a = Arc::new(a);
            // `approve --learn` lists what it adds in every runtime of the file.
            crate::approval::learn::register(&a);
            a
        })
    })
    .map_err(|source| SetupError::Allowlist {
        grant: format!("{}/{}", g.account, g.target),
        source,
    })
}

/// A grant's allow-list on one request, whatever the protocol: the facts
/// for its audit event and what to do (pass, refuse, hold).
pub fn judge_allowlist(
    gate: &crate::policy::allowlist::GrantAllowlist,
    fingerprint: Option<&crate::policy::allowlist::Fingerprint>,
    protocol: &str,
    example: &str,
    decision: StatementDecision,
) -> (
    crate::policy::allowlist::AllowlistFacts,
    crate::policy::allowlist::Judged,
) {
    let (verdict, judged) = gate.judge(fingerprint, protocol, example, decision.as_str());
    (
        crate::policy::allowlist::AllowlistFacts {
            fingerprint: fingerprint.map(|f| f.id.clone()),
            mode: Some(gate.mode),
            verdict: Some(verdict),
        },
        judged,
    )
}
