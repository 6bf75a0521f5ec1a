//! What the fuzz targets share: the configuration they run against
//! (`fuzz/fuzz.toml`, parsed by the production loader once per process),
//! an audit handle and an approvals service that hold nothing, a Tokio
//! runtime for the few async entry points, and the production body masking
//! step (`mask_body`) over the agent's public pieces.
//!
//! Nothing here may change what a target checks: every target calls the
//! agent's own functions with the agent's own limits.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use warden::audit::AuditHandle;
use warden::config::Config;
use warden::masking::Masker;
use warden::masking::json::{FieldRules, mask_form, mask_json, parse_strict};

/// The fuzz configuration (see `fuzz/fuzz.toml`).
pub fn config() -> &'static Config {
    static CONFIG: LazyLock<Config> = LazyLock::new(|| {
        match Config::parse(include_str!("../fuzz.toml"), Path::new("fuzz.toml")) {
            Ok(c) => c,
            Err(e) => panic!("fuzz/fuzz.toml does not validate: {e:?}"),
        }
    });
    &CONFIG
}

/// A runtime for the async entry points (approvals decisions).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("tokio runtime: {e}"),
        }
    });
    &RT
}

/// An audit handle over a store in a fresh temporary directory (the
/// writer thread lives as long as the process).
pub fn audit() -> AuditHandle {
    static AUDIT: LazyLock<AuditHandle> = LazyLock::new(|| {
        let dir = std::env::temp_dir().join(format!("warden-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        match warden::audit::spawn_writer(&dir.join("audit.db"), Default::default()) {
            Ok((handle, task)) => {
                // The writer runs until the process ends.
                std::mem::forget(task);
                handle
            }
            Err(e) => panic!("audit store: {e}"),
        }
    });
    AUDIT.clone()
}

/// A compiled `[masking.NAME]` of the fuzz configuration with its field
/// rules (HMAC key: a stand-in, as `config::validate` uses).
pub fn masking(name: &str) -> (Arc<Masker>, Arc<FieldRules>) {
    let Some(cfg) = config().maskings.get(name) else {
        panic!("no [masking.{name}] in fuzz/fuzz.toml");
    };
    let key = cfg.hmac_key_file.as_ref().map(|_| vec![0x5a; 32]);
    match (Masker::compile(cfg, key), FieldRules::compile(cfg)) {
        (Ok(m), Ok(f)) => (Arc::new(m), Arc::new(f)),
        (m, f) => panic!("[masking.{name}]: {:?} {:?}", m.err(), f.err()),
    }
}

/// Splits off the first byte (a selector); `None` for empty input.
pub fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// How a whole response body of a masked grant is rewritten: the steps of
/// `proxy::http`'s `mask_body` (a method of the private connection state,
/// so repeated here over the same public functions; keep in step).
pub fn mask_body(
    m: &Masker,
    fields: &FieldRules,
    class: warden::proxy::http::response::BodyClass,
    body: &[u8],
) -> Result<(Vec<u8>, usize), String> {
    use warden::proxy::http::response::{BodyClass, unreadable_text};
    match class {
        BodyClass::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok((body.to_vec(), 0));
            }
            let mut v = parse_strict(body)?;
            let n = mask_json(m, fields, &mut v)?;
            if n == 0 {
                Ok((body.to_vec(), 0))
            } else {
                Ok((serde_json::to_vec(&v).map_err(|e| e.to_string())?, n))
            }
        }
        BodyClass::Form | BodyClass::Text => {
            if let Some(what) = unreadable_text(body) {
                return Err(format!("a text or form body with {what} cannot be masked"));
            }
            let masked = if class == BodyClass::Form {
                mask_form(m, fields, body)?
            } else {
                m.mask_patterns(body)
            };
            Ok(masked.unwrap_or_else(|| (body.to_vec(), 0)))
        }
    }
}

/// Every place a client reads a value in a masked body, as it decodes it:
/// JSON strings, member names and numbers; form names and values
/// (percent-decoded); the whole text otherwise. `None` when the body no
/// longer parses as its class (then the whole bytes are the place).
pub fn decoded_values(
    class: warden::proxy::http::response::BodyClass,
    body: &[u8],
) -> Vec<Vec<u8>> {
    use warden::proxy::http::response::BodyClass;
    fn walk(v: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
        match v {
            serde_json::Value::String(s) => out.push(s.as_bytes().to_vec()),
            serde_json::Value::Number(n) => out.push(n.to_string().into_bytes()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.as_bytes().to_vec());
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    match class {
        BodyClass::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => walk(&v, &mut out),
            Err(_) => out.push(body.to_vec()),
        },
        BodyClass::Form => {
            let text = String::from_utf8_lossy(body);
            for pair in text.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                for part in [k, v] {
                    let plain = part.replace('+', " ");
                    out.push(
                        percent_encoding::percent_decode_str(&plain)
                            .decode_utf8_lossy()
                            .into_owned()
                            .into_bytes(),
                    );
                }
            }
        }
        BodyClass::Text => out.push(body.to_vec()),
    }
    out
}
