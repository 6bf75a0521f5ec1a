//! Reading a stored event's kind and Warden facts without decoding the
//! whole document ([`probe`], and a fast path for the layout Warden writes),
//! and [`class_of`].

#[allow(clippy::wildcard_imports)]
use super::*;

/// What a stored event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Network Activity (4001): open, close, refuse.
    Connection,
    /// Device Config State Change (5019): a configuration load or reload.
    Config,
    /// Application Lifecycle (6002) "Checkpoint".
    Checkpoint,
    /// Application Lifecycle (6002) "Prune".
    Prune,
    /// Datastore Activity (6005): a database statement's request or result.
    Statement,
    /// User Access Management (3005): an approval transition.
    Approval,
    /// API Activity (6003): an HTTP request's decision or result.
    Api,
    /// Process Activity (1007): a BPF LSM denial ([`KernelDenial`]).
    Kernel,
}

impl EventKind {
    /// The kind of an event of OCSF class `class_uid` whose store
    /// `activity` column is `activity`.
    pub fn from_columns(class_uid: u32, activity: &str) -> Option<Self> {
        match (class_uid, activity) {
            (CLASS_UID_NETWORK_ACTIVITY, _) => Some(EventKind::Connection),
            (CLASS_UID_DEVICE_CONFIG_STATE_CHANGE, _) => Some(EventKind::Config),
            (CLASS_UID_APPLICATION_LIFECYCLE, CHECKPOINT_ACTIVITY) => Some(EventKind::Checkpoint),
            (CLASS_UID_APPLICATION_LIFECYCLE, PRUNE_ACTIVITY) => Some(EventKind::Prune),
            (CLASS_UID_DATASTORE_ACTIVITY, _) => Some(EventKind::Statement),
            (CLASS_UID_USER_ACCESS_MANAGEMENT, _) => Some(EventKind::Approval),
            (CLASS_UID_API_ACTIVITY, _) => Some(EventKind::Api),
            (CLASS_UID_PROCESS_ACTIVITY, _) => Some(EventKind::Kernel),
            _ => None,
        }
    }
}

/// The fields of a stored event that the store's columns are derived from,
/// read without building the whole document (strings borrowed where they
/// need no unescaping). Used where every event is looked at (verify,
/// export).
#[derive(Debug, Deserialize)]
pub(crate) struct Probe<'a> {
    pub class_uid: u32,
    pub activity_id: u8,
    #[serde(borrow)]
    pub activity_name: Cow<'a, str>,
    pub time: i64,
    #[serde(borrow)]
    pub metadata: ProbeMeta<'a>,
    #[serde(borrow)]
    pub unmapped: ProbeUnmapped<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeMeta<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeUnmapped<'a> {
    #[serde(borrow)]
    pub warden: ProbeWarden<'a>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeWarden<'a> {
    #[serde(borrow, default)]
    pub account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub target: Option<Cow<'a, str>>,
    /// `allowed`/`refused` for connections, a [`StatementDecision`] for
    /// statements.
    #[serde(borrow, default)]
    pub decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub session: Option<Cow<'a, str>>,
    #[serde(default)]
    pub config: Option<ProbeConfig>,
    #[serde(borrow, default)]
    pub prune: Option<ProbePrune<'a>>,
    #[serde(borrow, default)]
    pub statement: Option<ProbeStatement<'a>>,
    #[serde(default)]
    pub api: Option<ProbeApi>,
    pub seq: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeStatement<'a> {
    pub phase: StatementPhase,
    #[serde(borrow)]
    pub class: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbeConfig {
    pub action: ConfigAction,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProbePrune<'a> {
    pub through_seq: u64,
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
}

impl Probe<'_> {
    /// What the event is, from its own content.
    pub fn kind(&self) -> Option<EventKind> {
        match (self.class_uid, self.activity_name.as_ref()) {
            (CLASS_UID_NETWORK_ACTIVITY, _) => Some(EventKind::Connection),
            (CLASS_UID_DEVICE_CONFIG_STATE_CHANGE, _) => Some(EventKind::Config),
            (CLASS_UID_APPLICATION_LIFECYCLE, "Checkpoint") => Some(EventKind::Checkpoint),
            (CLASS_UID_APPLICATION_LIFECYCLE, PRUNE_ACTIVITY_NAME) => Some(EventKind::Prune),
            (CLASS_UID_DATASTORE_ACTIVITY, _) => Some(EventKind::Statement),
            (CLASS_UID_USER_ACCESS_MANAGEMENT, _) => Some(EventKind::Approval),
            (CLASS_UID_API_ACTIVITY, _) => Some(EventKind::Api),
            (CLASS_UID_PROCESS_ACTIVITY, _) => Some(EventKind::Kernel),
            _ => None,
        }
    }
}

/// Read the [`Probe`] fields of stored event bytes.
pub(crate) fn probe(data: &[u8]) -> Result<Probe<'_>, AuditError> {
    serde_json::from_slice(data).map_err(|e| decode_err(format!("not a Warden OCSF event: {e}")))
}

/// [`probe`], reading events in this module's own encoding without parsing
/// the whole document: the top-level fields before any free text (fixed
/// order) are found by their keys, and only `unmapped.warden` (the last
/// member) goes through serde. Falls back to [`probe`] whenever the bytes
/// are not laid out that way.
///
/// In bytes this encoder wrote, a key with its quotes (`"time":`) cannot
/// occur inside a string value (quotes in values are escaped) and each key
/// searched for occurs once at top level before any other use, so the
/// first match is the member. Used where every event is read (verify,
/// export) after the event's hash was checked.
pub(crate) fn probe_fast(data: &[u8]) -> Result<Probe<'_>, AuditError> {
    match probe_layout(data) {
        Some(p) => Ok(p),
        None => probe(data),
    }
}

/// Keys the fast reader looks for, with their searchers built once.
pub(super) struct Keys {
    pub(super) activity_name: memmem::Finder<'static>,
    pub(super) class_uid: memmem::Finder<'static>,
    pub(super) time: memmem::Finder<'static>,
    pub(super) uid: memmem::Finder<'static>,
    pub(super) unmapped: memmem::FinderRev<'static>,
    pub(super) account: memmem::Finder<'static>,
    pub(super) target: memmem::Finder<'static>,
    pub(super) decision: memmem::Finder<'static>,
    pub(super) reason: memmem::Finder<'static>,
    pub(super) session: memmem::Finder<'static>,
    pub(super) phase: memmem::Finder<'static>,
    pub(super) class: memmem::Finder<'static>,
    pub(super) seq: memmem::FinderRev<'static>,
}

pub(super) static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    activity_name: memmem::Finder::new(b"\"activity_name\":\""),
    class_uid: memmem::Finder::new(b"\"class_uid\":"),
    time: memmem::Finder::new(b"\"time\":"),
    uid: memmem::Finder::new(b"\"uid\":\""),
    unmapped: memmem::FinderRev::new(UNMAPPED),
    account: memmem::Finder::new(b"\"account\":\""),
    target: memmem::Finder::new(b"\"target\":\""),
    decision: memmem::Finder::new(b"\"decision\":\""),
    reason: memmem::Finder::new(b"\"reason\":\""),
    session: memmem::Finder::new(b"\"session\":\""),
    phase: memmem::Finder::new(b"\"phase\":\""),
    class: memmem::Finder::new(b"\"class\":\""),
    seq: memmem::FinderRev::new(b",\"seq\":"),
});

pub(super) const UNMAPPED: &[u8] = b",\"unmapped\":{\"warden\":";

pub(super) fn probe_layout(data: &[u8]) -> Option<Probe<'_>> {
    const FIRST: &[u8] = b"{\"activity_id\":";
    let k = &*KEYS;
    let (activity_id, at) = int_at(data, FIRST.len())?;
    if !data.starts_with(FIRST) {
        return None;
    }
    let (activity_name, at) = str_after(data, at, &k.activity_name)?;
    let (class_uid, at) = int_after(data, at, &k.class_uid)?;
    let (time, at) = int_after(data, at, &k.time)?;
    let (uid, at) = str_after(data, at, &k.uid)?;
    let start = k.unmapped.rfind(data)?;
    if start < at || !data.ends_with(b"}}}") {
        return None;
    }
    let object = data.get(start + UNMAPPED.len()..data.len() - 2)?;
    let class_uid = u32::try_from(class_uid).ok()?;
    let fast = match class_uid {
        CLASS_UID_NETWORK_ACTIVITY => fast_warden(object, false),
        CLASS_UID_DATASTORE_ACTIVITY => fast_warden(object, true),
        _ => None,
    };
    let warden = match fast {
        Some(w) => w,
        None => serde_json::from_slice(object).ok()?,
    };
    Some(Probe {
        class_uid,
        activity_id: u8::try_from(activity_id).ok()?,
        activity_name: Cow::Borrowed(activity_name),
        time,
        metadata: ProbeMeta {
            uid: Cow::Borrowed(uid),
        },
        unmapped: ProbeUnmapped { warden },
    })
}

/// `unmapped.warden` of a connection or (`statement`) statement event
/// without serde: each key read occurs once in that object (the identity
/// claims and the `statement` object nested in it use other names; the
/// statement's `phase` occurs only there), and `seq` is its last member.
/// `None` (full parse) for anything unexpected, e.g. a value with escapes.
pub(super) fn fast_warden(o: &[u8], statement: bool) -> Option<ProbeWarden<'_>> {
    let k = &*KEYS;
    let opt = |f: &memmem::Finder<'static>| -> Option<Option<Cow<'_, str>>> {
        match f.find(o) {
            None => Some(None),
            Some(_) => str_after(o, 0, f).map(|(s, _)| Some(Cow::Borrowed(s))),
        }
    };
    let decision = str_after(o, 0, &k.decision)?.0;
    let statement = if statement {
        let phase = match str_after(o, 0, &k.phase)?.0 {
            "request" => StatementPhase::Request,
            "result" => StatementPhase::Result,
            _ => return None,
        };
        let class = str_after(o, 0, &k.class)?.0;
        Some(ProbeStatement {
            phase,
            class: Cow::Borrowed(class),
        })
    } else {
        None
    };
    let seq_at = k.seq.rfind(o)? + b",\"seq\":".len();
    let (seq, end) = int_at(o, seq_at)?;
    if o.get(end..) != Some(&b"}"[..]) {
        return None;
    }
    Some(ProbeWarden {
        account: opt(&k.account)?,
        target: opt(&k.target)?,
        decision: Some(Cow::Borrowed(decision)),
        reason: opt(&k.reason)?,
        session: opt(&k.session)?,
        config: None,
        prune: None,
        statement,
        api: None,
        seq: u64::try_from(seq).ok()?,
    })
}

/// The integer right after the first `key` at or after `from`, and the
/// position after it.
pub(super) fn int_after(
    data: &[u8],
    from: usize,
    key: &memmem::Finder<'_>,
) -> Option<(i64, usize)> {
    let start = from + key.find(data.get(from..)?)? + key.needle().len();
    int_at(data, start)
}

/// The integer at `start`, and the position after it.
pub(super) fn int_at(data: &[u8], start: usize) -> Option<(i64, usize)> {
    let rest = data.get(start..)?;
    let neg = rest.first() == Some(&b'-');
    let digits = rest.get(usize::from(neg)..)?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v: i64 = std::str::from_utf8(digits.get(..n)?).ok()?.parse().ok()?;
    Some((if neg { -v } else { v }, start + usize::from(neg) + n))
}

/// The string (without escapes) right after the first `key` (which ends
/// with the opening quote) at or after `from`, and the position after it.
pub(super) fn str_after<'a>(
    data: &'a [u8],
    from: usize,
    key: &memmem::Finder<'_>,
) -> Option<(&'a str, usize)> {
    let start = from + key.find(data.get(from..)?)? + key.needle().len();
    let rest = data.get(start..)?;
    let len = memchr::memchr2(b'"', b'\\', rest)?;
    if rest.get(len) != Some(&b'"') {
        return None;
    }
    Some((std::str::from_utf8(rest.get(..len)?).ok()?, start + len + 1))
}

/// The `class_uid` of stored event bytes, if they are a JSON object with one.
pub fn class_of(data: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        class_uid: u32,
    }
    serde_json::from_slice::<Probe>(data)
        .ok()
        .map(|p| p.class_uid)
}
