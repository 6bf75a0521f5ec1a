//! The allow-list file a grant names (`allowlist = FILE` in its
//! `[[grant]]`): the fingerprints an operator reviewed, one
//! `[[fingerprint]]` table each. `warden policy freeze` writes it; an
//! operator may remove a table or add one by pasting a normalised text
//! (the `id` may then be left out: it is computed from `protocol` and
//! `text`; when given it must match).
//!
//! ```toml
//! [[fingerprint]]
//! id = "1f0c4d2a9e8b7c65"
//! protocol = "postgres"
//! text = "select abalance from pgbench_accounts where aid = $?"
//! example = "SELECT abalance FROM pgbench_accounts WHERE aid = 17"
//! ```
//!
//! Any problem is an error naming `file:line`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::fingerprint_id;

/// Why an allow-list file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistFileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One reviewed fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub protocol: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    fingerprint: Vec<toml::Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    id: Option<toml::Spanned<String>>,
    protocol: toml::Spanned<String>,
    text: String,
    #[serde(default)]
    example: Option<String>,
}

#[derive(Serialize)]
struct OutFile<'a> {
    fingerprint: &'a [Entry],
}

/// A parsed allow-list: entries by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowlistFile {
    pub entries: BTreeMap<String, Entry>,
}

impl AllowlistFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, AllowlistFileError> {
        let src = std::fs::read_to_string(path).map_err(|source| AllowlistFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Parses allow-list text (`path` for messages).
    pub fn parse(src: &str, path: &Path) -> Result<Self, AllowlistFileError> {
        let line_of = |at: usize| src[..at.min(src.len())].matches('\n').count() + 1;
        let invalid = |at: usize, message: String| AllowlistFileError::Invalid {
            path: path.to_owned(),
            line: line_of(at),
            message,
        };
        let raw: RawFile = toml::from_str(src).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().trim_end().to_owned())
        })?;
        let mut entries = BTreeMap::new();
        for item in raw.fingerprint {
            let at = item.span().start;
            let e = item.into_inner();
            let protocol = e.protocol.get_ref().as_str();
            if !matches!(protocol, "postgres" | "http" | "mysql") {
                return Err(invalid(
                    e.protocol.span().start,
                    format!(
                        "protocol must be \"postgres\", \"http\" or \"mysql\", not {protocol:?}"
                    ),
                ));
            }
            if e.text.trim().is_empty() {
                return Err(invalid(at, "text is empty".into()));
            }
            let id = fingerprint_id(protocol, &e.text);
            if let Some(given) = &e.id
                && *given.get_ref() != id
            {
                return Err(invalid(
                    given.span().start,
                    format!(
                        "id {:?} does not match the text (its id is {id:?}): remove the id or fix the text",
                        given.get_ref()
                    ),
                ));
            }
            entries.insert(
                id.clone(),
                Entry {
                    id,
                    protocol: protocol.to_owned(),
                    text: e.text,
                    example: e.example,
                },
            );
        }
        Ok(AllowlistFile { entries })
    }

    /// True when `id` is listed.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// The file's text (a header comment, then one table per entry).
    pub fn render(&self, header: &str) -> String {
        let entries: Vec<Entry> = self.entries.values().cloned().collect();
        let body = toml::to_string_pretty(&OutFile {
            fingerprint: &entries,
        })
        .unwrap_or_default();
        let mut out = String::new();
        for l in header.lines() {
            out.push_str("# ");
            out.push_str(l);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&body);
        out
    }

    /// Writes the file atomically (an exclusive temporary file, then
    /// rename), keeping an existing file's owner, group and mode.
    pub fn write(&self, path: &Path, header: &str) -> Result<(), AllowlistFileError> {
        crate::fsutil::replace_keeping_owner(path, self.render(header).as_bytes(), 0o644).map_err(
            |source| AllowlistFileError::Write {
                path: path.to_owned(),
                source,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_line() {
        let mut f = AllowlistFile::default();
        let text = "select $?".to_owned();
        let id = fingerprint_id("postgres", &text);
        f.entries.insert(
            id.clone(),
            Entry {
                id: id.clone(),
                protocol: "postgres".into(),
                text,
                example: Some("SELECT 1".into()),
            },
        );
        let src = f.render("frozen");
        let back = AllowlistFile::parse(&src, Path::new("a.toml")).unwrap();
        assert_eq!(back, f);
        // Pasted without an id.
        let pasted = "[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"select $?\"\n";
        assert!(
            AllowlistFile::parse(pasted, Path::new("a.toml"))
                .unwrap()
                .contains(&id)
        );
        for (src, line) in [
            (
                "[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"x\"\nid = \"00\"\n",
                4,
            ),
            (
                "\n\n[[fingerprint]]\nprotocol = \"oracle\"\ntext = \"x\"\n",
                4,
            ),
            (
                "[[fingerprint]]\nprotocol = \"postgres\"\ntext = \"x\"\nbogus = 1\n",
                4,
            ),
            ("[[fingerprint]\n", 1),
        ] {
            let e = AllowlistFile::parse(src, Path::new("a.toml")).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&format!("a.toml:{line}: ")), "{s}");
        }
    }
}
