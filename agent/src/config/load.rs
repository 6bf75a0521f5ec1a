//! From text to typed sections: TOML syntax, known keys, and value types.
//!
//! Every element (`[agent]`, `[audit]`, each `[[target]]`, each `[[account]]`)
//! is deserialised on its own, and within an element every bad value is
//! reported, not only the first: after an error the offending key is dropped
//! and the element is deserialised again.

use std::collections::HashMap;
use std::ops::Range;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Diagnostic;
use super::error::{Diags, LineIndex, index, join};
use super::{Account, AgentSection, AuditSection, Forward, Grant, HttpCredential, Target};
use crate::masking::MaskingConfig;
use crate::policy::PolicyConfig;

/// Keys every `[[target]]` must have.
const TARGET_REQUIRED: &[&str] = &["name", "protocol", "address"];
/// Keys every `[[account]]` must have.
const ACCOUNT_REQUIRED: &[&str] = &["name"];
/// Keys every `[[grant]]` must have.
const GRANT_REQUIRED: &[&str] = &["account", "target"];
/// Keys every `[[forward]]` must have.
const FORWARD_REQUIRED: &[&str] = &["name", "kind"];
const TOP_LEVEL: &str = "[agent], [audit], [[target]], [[account]], [[grant]], [[forward]], \
     [policy.NAME], [masking.NAME], [approvals] or [metrics]";

/// The sections as far as they could be deserialised. Problems are in `Diags`.
pub(crate) struct Decoded {
    /// `[agent]`; defaults for keys that are absent or failed to deserialise.
    pub agent: AgentSection,
    pub audit: AuditSection,
    /// One entry per `[[target]]`, in file order; `None` where the element
    /// could not be deserialised (missing or bad required key).
    pub targets: Vec<Option<Target>>,
    /// The `name` string of every `[[target]]`, including those that failed to
    /// deserialise, so that references to them are not reported as unknown.
    pub target_names: Vec<Option<String>>,
    /// One entry per `[[account]]`, in file order.
    pub accounts: Vec<Option<Account>>,
    /// One entry per `[[grant]]`, in file order.
    pub grants: Vec<Option<Grant>>,
    /// The `credential` of each `[[grant]]` (same order), decoded apart
    /// from the grant itself.
    pub credentials: Vec<Option<HttpCredential>>,
    // --- allow-lists (issue 19) ---
    /// The `mode`/`allowlist`/`on_new` keys of each `[[grant]]` (same
    /// order), decoded apart from the grant itself.
    pub allowlists: Vec<Option<crate::policy::allowlist::AllowlistSettings>>,
    /// `[policy.NAME]` tables in file order; `None` where one did not
    /// deserialise (its name still counts as defined).
    pub policies: Vec<(String, Option<PolicyConfig>)>,
    /// `[masking.NAME]` tables in file order.
    pub maskings: Vec<(String, Option<MaskingConfig>)>,
    /// One entry per `[[forward]]`, in file order.
    pub forwards: Vec<Option<Forward>>,
    /// `[approvals]`; defaults when absent or broken.
    pub approvals: super::approvals::ApprovalsSection,
    /// `[metrics]`; off when absent or broken.
    pub metrics: super::metrics::MetricsSection,
}

/// Parses TOML syntax. On syntax errors returns all of them (and nothing else:
/// deeper checks on a broken document would only add noise).
pub(crate) fn parse_document(src: &str) -> Result<DeTable<'_>, Vec<Diagnostic>> {
    let (root, errors) = DeTable::parse_recoverable(src);
    if errors.is_empty() {
        return Ok(root.into_inner());
    }
    let idx = LineIndex::new(src);
    let mut list: Vec<Diagnostic> = errors
        .iter()
        .map(|e| {
            let start = e.span().map_or(0, |s| s.start);
            idx.diagnostic("syntax", start, e.message().to_owned())
        })
        .collect();
    list.sort_by_key(|d| (d.line, d.column));
    Err(list)
}

/// Byte span of every value in the document, by dotted path (`agent.listen`,
/// `target[0]`, `account[1].uids[2]`). Array-of-tables elements map to their
/// `[[header]]`.
pub(crate) fn value_spans(root: &DeTable<'_>) -> HashMap<String, Range<usize>> {
    fn walk(path: &str, value: &Spanned<DeValue<'_>>, out: &mut HashMap<String, Range<usize>>) {
        out.insert(path.to_owned(), value.span());
        match value.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    walk(&join(path, k.get_ref()), v, out);
                }
            }
            DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&index(path, i), v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = HashMap::new();
    for (k, v) in root.iter() {
        walk(&join("", k.get_ref()), v, &mut out);
    }
    out
}

/// Deserialises every section, reporting unknown keys, missing required keys
/// and values of the wrong type or shape.
pub(crate) fn decode(root: DeTable<'_>, diags: &mut Diags<'_>) -> Decoded {
    let mut out = Decoded {
        agent: AgentSection::default(),
        audit: AuditSection::default(),
        targets: Vec::new(),
        target_names: Vec::new(),
        accounts: Vec::new(),
        grants: Vec::new(),
        credentials: Vec::new(),
        allowlists: Vec::new(),
        policies: Vec::new(),
        maskings: Vec::new(),
        forwards: Vec::new(),
        approvals: Default::default(),
        metrics: Default::default(),
    };
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "agent" => {
                if let Some(agent) = decode_table("agent", value, &[], diags) {
                    out.agent = agent;
                }
            }
            "audit" => {
                if let Some(audit) = decode_table("audit", value, &[], diags) {
                    out.audit = audit;
                }
            }
            "target" => {
                for (i, element) in array_of_tables("target", value, diags) {
                    let name = element
                        .get_ref()
                        .as_table()
                        .and_then(|t| t.get("name"))
                        .and_then(|n| n.get_ref().as_str())
                        .map(str::to_owned);
                    out.target_names.push(name);
                    let path = index("target", i);
                    out.targets
                        .push(decode_table(&path, element, TARGET_REQUIRED, diags));
                }
            }
            "account" => {
                for (i, element) in array_of_tables("account", value, diags) {
                    let path = index("account", i);
                    out.accounts
                        .push(decode_table(&path, element, ACCOUNT_REQUIRED, diags));
                }
            }
            "grant" => {
                for (i, element) in array_of_tables("grant", value, diags) {
                    let path = index("grant", i);
                    let (element, credential) = take_key(element, "credential");
                    let (element, allowlist) = take_allowlist_keys(element);
                    out.allowlists
                        .push(allowlist.and_then(|a| decode_table(&path, a, &[], diags)));
                    out.credentials.push(credential.and_then(|c| {
                        decode_table(&join(&path, "credential"), c, &["kind", "file"], diags)
                    }));
                    out.grants
                        .push(decode_table(&path, element, GRANT_REQUIRED, diags));
                }
            }
            "forward" => {
                for (i, element) in array_of_tables("forward", value, diags) {
                    let path = index("forward", i);
                    out.forwards
                        .push(decode_table(&path, element, FORWARD_REQUIRED, diags));
                }
            }
            "approvals" => {
                if let Some(a) = decode_table("approvals", value, &[], diags) {
                    out.approvals = a;
                }
            }
            "metrics" => {
                if let Some(m) = decode_table("metrics", value, &[], diags) {
                    out.metrics = m;
                }
            }
            "policy" => out.policies = named_tables("policy", value, diags),
            "masking" => out.maskings = named_tables("masking", value, diags),
            other => {
                let msg = format!("unknown top-level key `{other}` (expected {TOP_LEVEL})");
                diags.at_span(&join("", other), key.span(), msg);
            }
        }
    }
    out
}

/// Removes `key` from a table value (HTTP grant keys kept apart from
/// [`Grant`]).
fn take_key<'i>(
    mut value: Spanned<DeValue<'i>>,
    key: &str,
) -> (Spanned<DeValue<'i>>, Option<Spanned<DeValue<'i>>>) {
    let mut taken = None;
    if let DeValue::Table(t) = value.get_mut() {
        let found = t.keys().find(|k| k.get_ref().as_ref() == key).cloned();
        if let Some(k) = found {
            taken = t.remove(&k);
        }
    }
    (value, taken)
}

/// Moves the allow-list keys of a `[[grant]]` (`mode`, `allowlist`,
/// `on_new`) into a table of their own (`None` when it has none).
fn take_allowlist_keys<'i>(
    mut value: Spanned<DeValue<'i>>,
) -> (Spanned<DeValue<'i>>, Option<Spanned<DeValue<'i>>>) {
    let span = value.span();
    let mut own = DeTable::new();
    if let DeValue::Table(t) = value.get_mut() {
        for key in ["mode", "allowlist", "on_new"] {
            let found = t.keys().find(|k| k.get_ref().as_ref() == key).cloned();
            if let Some(k) = found
                && let Some(v) = t.remove(&k)
            {
                own.insert(k, v);
            }
        }
    }
    let own = (!own.is_empty()).then(|| Spanned::new(span, DeValue::Table(own)));
    (value, own)
}

/// The tables of `[name.NAME]`, each deserialised on its own, in file order.
fn named_tables<T: DeserializeOwned>(
    name: &str,
    value: Spanned<DeValue<'_>>,
    diags: &mut Diags<'_>,
) -> Vec<(String, Option<T>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(t) => {
            let mut items: Vec<_> = t.into_iter().collect();
            items.sort_by_key(|(k, _)| k.span().start);
            items
                .into_iter()
                .map(|(k, v)| {
                    let key = k.get_ref().to_string();
                    let decoded = decode_table(&join(name, &key), v, &[], diags);
                    (key, decoded)
                })
                .collect()
        }
        other => {
            diags.at_span(
                name,
                span,
                format!(
                    "expected [{name}.NAME] tables, found a {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

/// The elements of `[[name]]`, numbered. Anything else is reported.
fn array_of_tables<'i>(
    name: &str,
    value: Spanned<DeValue<'i>>,
    diags: &mut Diags<'_>,
) -> Vec<(usize, Spanned<DeValue<'i>>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().enumerate().collect(),
        DeValue::Table(_) => {
            diags.at_span(
                name,
                span,
                format!("`{name}` is a list of tables: write [[{name}]], not [{name}]"),
            );
            Vec::new()
        }
        other => {
            diags.at_span(
                name,
                span,
                format!("expected [[{name}]] tables, found a {}", other.type_str()),
            );
            Vec::new()
        }
    }
}

/// Deserialises one table into `T`, reporting every unknown key, every missing
/// required key and every value that does not deserialise. Returns `None` when
/// the table cannot produce a `T` (not a table, or a required key missing or
/// bad); a bad optional key is reported and left at its default.
fn decode_table<T: DeserializeOwned>(
    path: &str,
    value: Spanned<DeValue<'_>>,
    required: &[&str],
    diags: &mut Diags<'_>,
) -> Option<T> {
    let span = value.span();
    let found = value.get_ref().type_str();
    let DeValue::Table(mut table) = value.into_inner() else {
        diags.at_span(path, span, format!("expected a table, found a {found}"));
        return None;
    };

    let fields = field_names::<T>();
    let unknown: Vec<Spanned<String>> = table
        .keys()
        .filter(|k| !fields.contains(&k.get_ref().as_ref()))
        .map(|k| Spanned::new(k.span(), k.get_ref().to_string()))
        .collect();
    for k in unknown {
        let name = k.get_ref();
        diags.at_span(
            &join(path, name),
            k.span(),
            format!("unknown key `{name}` (known keys: {})", fields.join(", ")),
        );
        table.remove(name.as_str());
    }

    let mut complete = true;
    for r in required {
        if !table.contains_key(*r) {
            diags.at_span(path, span.clone(), format!("missing required key `{r}`"));
            complete = false;
        }
    }

    // Each failed attempt drops one key, so this ends.
    loop {
        let whole = Spanned::new(span.clone(), DeValue::Table(table.clone()));
        let err = match T::deserialize(ValueDeserializer::from(whole)) {
            Ok(v) => return complete.then_some(v),
            Err(e) => e,
        };
        let err_span = err.span().unwrap_or_else(|| span.clone());
        let culprit = table.iter().find_map(|(k, v)| {
            let vs = v.span();
            let inside = vs.start <= err_span.start && err_span.end <= vs.end;
            inside.then(|| {
                (
                    k.get_ref().to_string(),
                    v.get_ref().as_str().map(str::to_owned),
                )
            })
        });
        let Some((key, text)) = culprit else {
            // A missing required key (already reported, or dropped above), or
            // something that belongs to no single key.
            if complete {
                diags.at_span(path, span.clone(), err.message().to_owned());
            }
            return None;
        };
        diags.at_span(
            &join(path, &key),
            err_span,
            describe(err.message(), text.as_deref()),
        );
        table.remove(key.as_str());
        if required.contains(&key.as_str()) {
            complete = false;
        }
    }
}

/// Makes serde's message self-contained: names the value when it does not.
fn describe(message: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if message == "invalid socket address syntax" => {
            format!("invalid socket address {v:?}: expected \"a.b.c.d:port\" or \"[IPv6]:port\"")
        }
        Some(v) if !message.contains(v) => format!("{message} (got {v:?})"),
        _ => message.to_owned(),
    }
}

/// The field names `T`'s derived `Deserialize` accepts, read from the derive
/// itself so the list of known keys cannot drift from the model.
pub(crate) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct ProbeDone;

impl std::fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeDone {}

impl serde::de::Error for ProbeDone {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        ProbeDone
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeDone> {
        *self.0 = fields;
        Err(ProbeDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_src(src: &str) -> (Decoded, Vec<Diagnostic>) {
        let root = match parse_document(src) {
            Ok(root) => root,
            Err(d) => panic!("syntax errors: {d:?}"),
        };
        let mut diags = Diags::new(src, value_spans(&root));
        let decoded = decode(root, &mut diags);
        (decoded, diags.finish())
    }

    fn summary(list: &[Diagnostic]) -> Vec<(usize, &str)> {
        list.iter().map(|d| (d.line, d.key.as_str())).collect()
    }

    #[test]
    fn known_fields_come_from_the_model() {
        assert_eq!(
            field_names::<Target>(),
            [
                "name",
                "protocol",
                "address",
                "fail_mode",
                "tls",
                "client_tls",
                "upstream_tls",
                "intercept_tls",
                "max_message_bytes",
                "allow_upgrade"
            ]
        );
        assert_eq!(
            field_names::<Account>(),
            [
                "name", "units", "cgroups", "uids", "targets", "exe", "identity"
            ]
        );
        assert!(field_names::<AgentSection>().contains(&"relay_buffer_bytes"));
        assert_eq!(
            field_names::<AuditSection>(),
            [
                "path",
                "synchronous",
                "batch_max",
                "checkpoint_every",
                "checkpoint_interval_secs",
                "retention_days"
            ]
        );
    }

    #[test]
    fn required_lists_match_the_model() {
        // Exactly the required keys are enough for each element...
        let (d, list) = decode_src(
            "[[target]]\nname = \"a\"\nprotocol = \"tcp\"\naddress = \"10.0.0.1:1\"\n\
             [[account]]\nname = \"x\"\n",
        );
        assert!(list.is_empty(), "{list:?}");
        assert!(d.targets[0].is_some() && d.accounts[0].is_some());
        // ...and each one is needed (and reported by name).
        for missing in TARGET_REQUIRED {
            let mut src = String::from("[[target]]\n");
            for k in TARGET_REQUIRED.iter().filter(|k| *k != missing) {
                let v = if *k == "address" { "10.0.0.1:1" } else { "tcp" };
                src.push_str(&format!("{k} = \"{v}\"\n"));
            }
            let (d, list) = decode_src(&src);
            assert!(d.targets[0].is_none());
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].message, format!("missing required key `{missing}`"));
            assert_eq!((list[0].line, list[0].key.as_str()), (1, "target[0]"));
        }
        let (d, list) = decode_src("[[account]]\nuids = [1]\n");
        assert!(d.accounts[0].is_none());
        assert_eq!(list[0].message, "missing required key `name`");
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line() {
        let (_, list) = decode_src(
            "[agent]\nlisten = \"127.0.0.1:1\"\nlistn = 1\nfoo = 2\n[audit]\nbar = 3\n\
             [[target]]\nname = \"a\"\nprotocol = \"tcp\"\naddress = \"10.0.0.1:1\"\nport = 5\n\
             [[account]]\nname = \"x\"\nuid = 1\n[other]\n",
        );
        assert_eq!(
            summary(&list),
            vec![
                (3, "agent.listn"),
                (4, "agent.foo"),
                (6, "audit.bar"),
                (11, "target[0].port"),
                (14, "account[0].uid"),
                (15, "other"),
            ]
        );
        assert!(
            list[0]
                .message
                .starts_with("unknown key `listn` (known keys: listen, ")
        );
        assert!(list[5].message.contains("unknown top-level key `other`"));
    }

    #[test]
    fn every_bad_value_in_one_table_is_reported() {
        let (d, list) = decode_src(
            "[agent]\nlisten = \"localhost\"\nfail_mode = \"ajar\"\nupstream_mark = -1\n\
             max_connections = 7\n\
             [[account]]\nname = \"x\"\nuids = [1, \"two\"]\ncgroups = \"/a\"\n",
        );
        assert_eq!(
            summary(&list),
            vec![
                (2, "agent.listen"),
                (3, "agent.fail_mode"),
                (4, "agent.upstream_mark"),
                (8, "account[0].uids"),
                (9, "account[0].cgroups"),
            ]
        );
        assert_eq!(
            list[0].message,
            "invalid socket address \"localhost\": expected \"a.b.c.d:port\" or \"[IPv6]:port\""
        );
        assert!(
            list[1].message.contains("unknown variant `ajar`"),
            "{}",
            list[1].message
        );
        // The element error points at the bad array element itself.
        assert_eq!(list[3].column, 12);
        // Good keys of a partly bad optional table are kept.
        assert_eq!(d.agent.max_connections, 7);
        // A bad optional key does not lose the element; a bad required one does.
        assert!(d.accounts[0].is_some());
    }

    #[test]
    fn a_bad_required_value_drops_the_element_but_keeps_its_name() {
        let (d, list) =
            decode_src("[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"10.0.0.5\"\n");
        assert_eq!(summary(&list), vec![(4, "target[0].address")]);
        assert!(d.targets[0].is_none());
        assert_eq!(d.target_names, vec![Some("db".to_owned())]);
    }

    #[test]
    fn wrong_shapes_are_reported() {
        let (_, list) = decode_src("agent = 5\naccount = [1]\n[target]\nname = \"a\"\n");
        assert_eq!(
            summary(&list),
            vec![(1, "agent"), (2, "account[0]"), (3, "target")]
        );
        assert_eq!(list[0].message, "expected a table, found a integer");
        assert!(list[2].message.contains("write [[target]], not [target]"));
    }

    #[test]
    fn inline_arrays_of_tables_are_accepted() {
        let (d, list) = decode_src(
            "target = [{ name = \"a\", protocol = \"tcp\", address = \"10.0.0.1:1\" }]\n",
        );
        assert!(list.is_empty(), "{list:?}");
        assert_eq!(d.targets.len(), 1);
    }

    #[test]
    fn syntax_errors_are_all_reported_with_lines() {
        let src = "[agent]\nlisten = \"127.0.0.1:15001\nfail_mode = closed\n[[target]]\nname = 1\n";
        let Err(list) = parse_document(src) else {
            panic!("expected syntax errors");
        };
        let lines: Vec<usize> = list.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert!(list.iter().all(|d| d.key == "syntax"));
    }

    #[test]
    fn special_values_deserialise() {
        use super::super::{AgentCgroup, CgroupRoot, Listen6};
        let (d, list) = decode_src(
            "[agent]\nlisten6 = \"[::1]:15002\"\ncgroup_root = \"/warden\"\nagent_cgroup = \"auto\"\n",
        );
        assert!(list.is_empty(), "{list:?}");
        assert_eq!(
            d.agent.listen6,
            Listen6::Addr("[::1]:15002".parse().unwrap())
        );
        assert_eq!(d.agent.cgroup_root, CgroupRoot::Path("/warden".into()));
        assert_eq!(d.agent.agent_cgroup, AgentCgroup::Auto);

        let (d, _) = decode_src(
            "[agent]\nlisten6 = \"off\"\ncgroup_root = \"auto\"\nagent_cgroup = \"/w.agent\"\n",
        );
        assert_eq!(d.agent.listen6, Listen6::Off);
        assert_eq!(d.agent.cgroup_root, CgroupRoot::Auto);
        assert_eq!(d.agent.agent_cgroup, AgentCgroup::Path("/w.agent".into()));

        let (_, list) =
            decode_src("[agent]\nlisten6 = \"on\"\ncgroup_root = \"warden\"\nagent_cgroup = 3\n");
        assert_eq!(
            summary(&list),
            vec![
                (2, "agent.listen6"),
                (3, "agent.cgroup_root"),
                (4, "agent.agent_cgroup")
            ]
        );
        assert!(
            list[0].message.contains("\"auto\", \"off\" or an"),
            "{}",
            list[0].message
        );
        assert!(
            list[1].message.contains("cgroup2 path starting with"),
            "{}",
            list[1].message
        );
        assert!(
            list[2].message.contains("invalid type: integer"),
            "{}",
            list[2].message
        );
    }

    #[test]
    fn defaults_match_serde_defaults() {
        let (d, list) = decode_src("[agent]\n[audit]\n");
        assert!(list.is_empty());
        assert_eq!(d.agent, AgentSection::default());
        assert_eq!(d.audit, AuditSection::default());
    }
}
