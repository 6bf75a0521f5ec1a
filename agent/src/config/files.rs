//! Every file the configuration names, with the key that names it and
//! what it must be: `warden check-config` opens each as the agent will
//! ([`check`]: a problem is reported at the configuration line naming the
//! file), and `warden doctor` checks owner and mode by the same list.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{Diags, index, join};
use super::{Config, Diagnostic};

/// What a named file is, which decides what it must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A password, key or token: the agent's own, no group/other access
    /// (the agent refuses it otherwise, at every use:
    /// [`crate::fsutil::read_secret`]).
    Secret,
    /// A certificate, CA bundle, JWKS, allow-list or token the agent reads:
    /// readable, and nobody but its owner may rewrite it.
    Public,
    /// An account's pinned executable.
    Executable,
    /// A directory the agent writes into (state, a file forwarder's); made
    /// at start when missing.
    Directory,
}

/// One file the configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    pub path: PathBuf,
    pub kind: FileKind,
    /// The configuration key that names it (`grant[0].password_file`).
    pub key: String,
    /// Who names it, in words (`grant app→db password_file`).
    pub by: String,
    /// A masking HMAC key: also at least
    /// [`crate::masking::HMAC_KEY_MIN_LEN`] bytes.
    hmac_key: bool,
}

/// Every path the configuration names, in file order by section.
pub fn named(cfg: &Config) -> Vec<NamedFile> {
    let mut out = Vec::new();
    let mut add = |p: Option<&PathBuf>, kind, key: String, by: String| {
        if let Some(p) = p {
            out.push(NamedFile {
                path: p.clone(),
                kind,
                key,
                by,
                hmac_key: false,
            });
        }
    };
    add(
        Some(&cfg.agent.state_dir),
        FileKind::Directory,
        "agent.state_dir".into(),
        "agent.state_dir".into(),
    );
    for (i, t) in cfg.targets.iter().enumerate() {
        let at = index("target", i);
        let by = format!("target {}", t.name);
        if let Some(tls) = &t.tls {
            add(
                tls.ca_file.as_ref(),
                FileKind::Public,
                join(&join(&at, "tls"), "ca_file"),
                format!("{by} tls.ca_file"),
            );
        }
        if let Some(c) = &t.client_tls {
            let ct = join(&at, "client_tls");
            add(
                Some(&c.cert_file),
                FileKind::Public,
                join(&ct, "cert_file"),
                format!("{by} client_tls.cert_file"),
            );
            add(
                Some(&c.key_file),
                FileKind::Secret,
                join(&ct, "key_file"),
                format!("{by} client_tls.key_file"),
            );
        }
    }
    for (i, a) in cfg.accounts.iter().enumerate() {
        let at = index("account", i);
        let by = format!("account {}", a.name);
        if let Some(exe) = &a.exe {
            add(
                Some(&exe.path),
                FileKind::Executable,
                join(&join(&at, "exe"), "path"),
                format!("{by} exe.path"),
            );
        }
        if let Some(id) = &a.identity {
            let it = join(&at, "identity");
            for (name, p) in [
                ("token_file", &id.token_file),
                ("jwks_file", &id.jwks_file),
                ("jwks_ca_file", &id.jwks_ca_file),
            ] {
                add(
                    p.as_ref(),
                    FileKind::Public,
                    join(&it, name),
                    format!("{by} identity.{name}"),
                );
            }
        }
    }
    for (i, g) in cfg.grants.iter().enumerate() {
        let at = index("grant", i);
        let by = format!("grant {}→{}", g.account, g.target);
        add(
            g.password_file.as_ref(),
            FileKind::Secret,
            join(&at, "password_file"),
            format!("{by} password_file"),
        );
        let pair = (g.account.clone(), g.target.clone());
        if let Some(c) = cfg.credentials.get(&pair) {
            add(
                Some(&c.file),
                FileKind::Secret,
                join(&join(&at, "credential"), "file"),
                format!("{by} credential.file"),
            );
        }
        // An allow-list in learn mode is written by the agent.
        if let Some(a) = cfg.allowlists.get(&pair)
            && a.mode == Some(crate::policy::allowlist::Mode::Enforce)
        {
            add(
                a.allowlist.as_ref(),
                FileKind::Public,
                join(&at, "allowlist"),
                format!("{by} allowlist"),
            );
        }
    }
    for (i, f) in cfg.forwards.iter().enumerate() {
        let at = index("forward", i);
        let by = format!("forward {}", f.name);
        for (name, p, kind) in [
            ("ca_file", &f.ca_file, FileKind::Public),
            ("client_cert_file", &f.client_cert_file, FileKind::Public),
            ("client_key_file", &f.client_key_file, FileKind::Secret),
            ("token_file", &f.token_file, FileKind::Secret),
            ("credentials_file", &f.credentials_file, FileKind::Secret),
        ] {
            add(p.as_ref(), kind, join(&at, name), format!("{by} {name}"));
        }
        if let Some(p) = &f.path {
            add(
                p.parent().map(Path::to_path_buf).as_ref(),
                FileKind::Directory,
                join(&at, "path"),
                format!("{by} path's directory"),
            );
        }
    }
    // Last: `add` is done with `out`.
    for (name, m) in &cfg.maskings {
        if let Some(p) = &m.hmac_key_file {
            out.push(NamedFile {
                path: p.clone(),
                kind: FileKind::Secret,
                key: join(&join("masking", name), "hmac_key_file"),
                by: format!("masking {name} hmac_key_file"),
                hmac_key: true,
            });
        }
    }
    out
}

/// Opens every file `cfg` names as the agent will (secrets through
/// [`crate::fsutil::read_secret`]); `src` is the text `cfg` was parsed
/// from. Each problem is reported at the line of the key naming the file.
pub(super) fn check(cfg: &Config, src: &str) -> Vec<Diagnostic> {
    let spans = super::load::parse_document(src)
        .map(|root| super::load::value_spans(&root))
        .unwrap_or_default();
    let mut diags = Diags::new(src, spans);
    for f in named(cfg) {
        if let Some(problem) = problem_of(&f) {
            diags.at(&f.key, problem);
        }
    }
    diags.finish()
}

/// What is wrong with one named file as the agent would use it, if
/// anything.
fn problem_of(f: &NamedFile) -> Option<String> {
    let shown = f.path.display();
    match f.kind {
        FileKind::Secret if f.hmac_key => crate::masking::read_hmac_key(&f.path)
            .err()
            .map(|e| e.to_string()),
        FileKind::Secret => crate::fsutil::read_secret(&f.path)
            .err()
            .map(|e| e.to_string()),
        FileKind::Public | FileKind::Executable => {
            let opened = std::fs::File::open(&f.path).and_then(|file| file.metadata());
            match opened {
                Err(e) => Some(format!("{shown}: {e}")),
                Ok(m) if !m.is_file() => Some(format!("{shown} is not a regular file")),
                Ok(m) if f.kind == FileKind::Executable && m.permissions().mode() & 0o111 == 0 => {
                    Some(format!("{shown} is not executable"))
                }
                Ok(_) => None,
            }
        }
        FileKind::Directory => match std::fs::metadata(&f.path) {
            // Made (0700) when the agent starts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{shown}: {e}")),
            Ok(m) if !m.is_dir() => Some(format!("{shown} is not a directory")),
            Ok(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A configuration naming a password file, a masking HMAC key, a TLS
    /// CA file and a forwarder token; the line of each is given.
    fn config(dir: &Path, pw: &Path, key: &Path, ca: &Path, token: &Path) -> String {
        format!(
            r#"[agent]
state_dir = "{state}"

[[target]]
name = "db"
protocol = "postgres"
address = "127.0.0.1:5432"
tls = {{ mode = "verify-full", ca_file = "{ca}" }}

[[account]]
name = "app"
uids = [4242]

[[grant]]
account = "app"
target = "db"
database = "orders"
upstream_user = "ro"
password_file = "{pw}"
policy = "p"
masking = "m"

[policy.p]
rules = [{{ action = "allow", classes = ["read"] }}]

[masking.m]
patterns = ["email"]
pattern_strategy = "hmac"
hmac_key_file = "{key}"

[[forward]]
name = "siem"
kind = "https"
url = "https://siem.example/"
auth = "bearer"
token_file = "{token}"
"#,
            state = dir.join("state").display(),
            ca = ca.display(),
            pw = pw.display(),
            key = key.display(),
            token = token.display(),
        )
    }

    fn check_text(src: &str, dir: &Path) -> Vec<Diagnostic> {
        let cfg = match Config::parse(src, &dir.join("warden.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        check(&cfg, src)
    }

    #[test]
    fn every_named_file_is_listed_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let src = config(
            d,
            &d.join("pw"),
            &d.join("key"),
            &d.join("ca"),
            &d.join("tok"),
        );
        let cfg = Config::parse(&src, &d.join("warden.toml")).unwrap();
        let keys: Vec<(String, FileKind)> =
            named(&cfg).into_iter().map(|f| (f.key, f.kind)).collect();
        assert_eq!(
            keys,
            vec![
                ("agent.state_dir".into(), FileKind::Directory),
                ("target[0].tls.ca_file".into(), FileKind::Public),
                ("grant[0].password_file".into(), FileKind::Secret),
                ("forward[0].token_file".into(), FileKind::Secret),
                ("masking.m.hmac_key_file".into(), FileKind::Secret),
            ]
        );
    }

    #[test]
    fn good_files_give_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pw = write(d, "pw", b"secret\n", 0o600);
        let key = write(d, "key", b"0123456789abcdef-key\n", 0o600);
        let ca = write(d, "ca", b"pem", 0o644);
        let tok = write(d, "tok", b"t\n", 0o400);
        let got = check_text(&config(d, &pw, &key, &ca, &tok), d);
        assert_eq!(got, vec![], "{got:#?}");
    }

    #[test]
    fn each_problem_is_at_the_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Missing; readable by others; a symlink to a good secret; a
        // directory where a CA file is named.
        let pw = d.join("absent");
        let key = write(d, "key", b"0123456789abcdef-key\n", 0o644);
        let good = write(d, "good", b"t\n", 0o600);
        let tok = d.join("tok-link");
        std::os::unix::fs::symlink(&good, &tok).unwrap();
        let ca = d.join("ca-dir");
        std::fs::create_dir(&ca).unwrap();
        let got = check_text(&config(d, &pw, &key, &ca, &tok), d);
        let at: Vec<(usize, &str)> = got.iter().map(|x| (x.line, x.key.as_str())).collect();
        assert_eq!(
            at,
            vec![
                (8, "target[0].tls.ca_file"),
                (19, "grant[0].password_file"),
                (29, "masking.m.hmac_key_file"),
                (36, "forward[0].token_file"),
            ],
            "{got:#?}"
        );
        assert!(got[0].message.contains("not a regular file"), "{got:#?}");
        assert!(got[1].message.contains("No such file"), "{got:#?}");
        assert!(got[2].message.contains("mode 0644"), "{got:#?}");
        // O_NOFOLLOW: ELOOP.
        assert!(
            got[3].message.contains("symbolic links"),
            "{}",
            got[3].message
        );

        // A key the agent may read but too short to use.
        let short = write(d, "short", b"short\n", 0o600);
        let got = check_text(&config(d, &pw, &short, &ca, &good), d);
        let key_problem = got
            .iter()
            .find(|x| x.key == "masking.m.hmac_key_file")
            .unwrap();
        assert!(key_problem.message.contains("at least"), "{got:#?}");
    }

    #[test]
    fn a_state_dir_not_yet_made_is_fine_a_file_there_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pw = write(d, "pw", b"secret\n", 0o600);
        let key = write(d, "key", b"0123456789abcdef-key\n", 0o600);
        let ca = write(d, "ca", b"pem", 0o644);
        let tok = write(d, "tok", b"t\n", 0o600);
        let src = config(d, &pw, &key, &ca, &tok);
        assert_eq!(check_text(&src, d), vec![]);
        write(d, "state", b"", 0o600);
        let got = check_text(&src, d);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!((got[0].line, got[0].key.as_str()), (2, "agent.state_dir"));
        assert!(got[0].message.contains("not a directory"));
    }
}
