//! Configuration errors, and the positioned diagnostics that make them up.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, with the position of the offending
/// value (or key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted path of the offending key, e.g. `target[1].address` (array
    /// indices are 0-based), or `syntax` for TOML syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `line:column: key: message` (prefix it with the file name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.key, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read; the cause is the error's `source()`.
    #[error("cannot read configuration file {}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file was read but is not a valid configuration. Holds every problem
    /// found, in file order; `Display` prints one `file:line:column: key:
    /// message` line per problem and then a count line.
    #[error("{}", render_invalid(.path, .diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The diagnostics of an `Invalid` error (empty for `Read`).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

fn render_invalid(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&format!("{}:{d}\n", path.display()));
    }
    let n = diagnostics.len();
    let plural = if n == 1 { "" } else { "s" };
    out.push_str(&format!("{n} error{plural} in {}", path.display()));
    out
}

/// Converts byte offsets into 1-based line and column (in characters).
pub(crate) struct LineIndex<'s> {
    src: &'s str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { src, starts }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0] == 0 <= offset`, so `line >= 1`.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let column = self.src.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }

    pub(crate) fn diagnostic(&self, key: &str, offset: usize, message: String) -> Diagnostic {
        let (line, column) = self.position(offset);
        Diagnostic {
            line,
            column,
            key: key.to_owned(),
            message,
        }
    }
}

/// Collects diagnostics while loading. Knows where every value of the document
/// is, by dotted key path, so that later passes can point at them.
pub(crate) struct Diags<'s> {
    index: LineIndex<'s>,
    spans: HashMap<String, Range<usize>>,
    list: Vec<Diagnostic>,
}

impl<'s> Diags<'s> {
    pub(crate) fn new(src: &'s str, spans: HashMap<String, Range<usize>>) -> Self {
        Self {
            index: LineIndex::new(src),
            spans,
            list: Vec::new(),
        }
    }

    /// Reports a problem at an explicit byte span.
    pub(crate) fn at_span(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        let d = self.index.diagnostic(key, span.start, message.into());
        self.list.push(d);
    }

    /// Reports a problem at the value of `key`, or at its closest enclosing
    /// table when the key is not written in the file (a default).
    pub(crate) fn at(&mut self, key: &str, message: impl Into<String>) {
        let span = self.span_of(key);
        self.at_span(key, span, message);
    }

    /// Line of the value of `key` (or of its closest enclosing table).
    pub(crate) fn line_of(&self, key: &str) -> usize {
        self.index.position(self.span_of(key).start).0
    }

    /// True when `key` itself is written in the file (not a default).
    pub(crate) fn is_written(&self, key: &str) -> bool {
        self.spans.contains_key(key)
    }

    fn span_of(&self, key: &str) -> Range<usize> {
        let mut k = key;
        loop {
            if let Some(span) = self.spans.get(k) {
                return span.clone();
            }
            match parent(k) {
                Some(p) => k = p,
                None => return 0..0,
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// All diagnostics, in file order (ties keep the order they were found in).
    pub(crate) fn finish(self) -> Vec<Diagnostic> {
        let mut list = self.list;
        list.sort_by_key(|d| (d.line, d.column));
        list
    }
}

/// Dotted path of the table or array that holds `key`, if any.
fn parent(key: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut cut = None;
    for (i, c) in key.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '.' | '[' if !in_quotes => cut = Some(i),
            _ => {}
        }
    }
    cut.map(|i| &key[..i])
}

/// One key as written in a dotted path: bare when possible, quoted otherwise.
pub(crate) fn segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// `parent.key`, quoting `key` when needed.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        segment(key)
    } else {
        format!("{parent}.{}", segment(key))
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let idx = LineIndex::new("ab\nçd = 1\n\nx");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(1), (1, 2));
        assert_eq!(idx.position(3), (2, 1));
        // 'ç' is two bytes; 'd' is the second character.
        assert_eq!(idx.position(5), (2, 2));
        assert_eq!(idx.position(11), (3, 1));
        assert_eq!(idx.position(12), (4, 1));
        // Past the end and inside a character are clamped.
        assert_eq!(idx.position(1000), (4, 2));
        assert_eq!(idx.position(4), (2, 1));
    }

    #[test]
    fn paths_and_parents() {
        assert_eq!(join("", "agent"), "agent");
        assert_eq!(join("agent", "a.b"), "agent.\"a.b\"");
        assert_eq!(index("target", 2), "target[2]");
        assert_eq!(parent("account[1].uids[0]"), Some("account[1].uids"));
        assert_eq!(parent("account[1].uids"), Some("account[1]"));
        assert_eq!(parent("account[1]"), Some("account"));
        assert_eq!(parent("account"), None);
        assert_eq!(parent("agent.\"a.b[c\""), Some("agent"));
    }

    #[test]
    fn diagnostics_fall_back_to_the_enclosing_table() {
        let src = "[agent]\nx = 1\n";
        let spans = HashMap::from([("agent".to_owned(), 0..7), ("agent.x".to_owned(), 12..13)]);
        let mut d = Diags::new(src, spans);
        d.at("agent.listen", "m");
        d.at("agent.x", "n");
        d.at("nowhere", "o");
        assert_eq!(d.line_of("agent.x"), 2);
        let list = d.finish();
        assert_eq!(
            list.iter().map(|d| (d.line, d.column)).collect::<Vec<_>>(),
            vec![(1, 1), (1, 1), (2, 5)]
        );
        assert_eq!(list[0].key, "agent.listen");
        assert_eq!(list[1].key, "nowhere");
    }

    #[test]
    fn invalid_display_lists_every_diagnostic_then_a_count() {
        let e = ConfigError::Invalid {
            path: PathBuf::from("/etc/warden/warden.toml"),
            diagnostics: vec![
                Diagnostic {
                    line: 3,
                    column: 1,
                    key: "agent.x".into(),
                    message: "unknown key".into(),
                },
                Diagnostic {
                    line: 9,
                    column: 11,
                    key: "target[0].address".into(),
                    message: "bad".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "/etc/warden/warden.toml:3:1: agent.x: unknown key\n\
             /etc/warden/warden.toml:9:11: target[0].address: bad\n\
             2 errors in /etc/warden/warden.toml"
        );
    }
}
