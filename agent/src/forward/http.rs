//! HTTP outputs: `https` (NDJSON POST), `splunk-hec` and `elasticsearch`.
//!
//! One `ureq` agent per output (rustls with ring; the output's CA file or
//! the system roots; optional client certificate for mutual TLS; no
//! redirects; every request bounded by `timeout_secs`). Credentials are
//! read from their file at every request, so a rotated token is picked up
//! without a restart, and never logged. Bodies are gzipped (fast level)
//! unless `gzip = false`.
//!
//! Answers, for every kind:
//! - 2xx: acknowledged (then the kind's own checks, below);
//! - 408, 429, 5xx, and any network or TLS error or timeout: retried, after
//!   `Retry-After` (seconds or an HTTP date) when the collector sent one;
//! - any other status (400, 401, 403, 404, 413, redirects...): the output
//!   is parked; retrying the same batch cannot succeed.
//!
//! `splunk-hec`: events go to `<url>/services/collector/event` as
//! concatenated JSON objects `{"time", "host", "source": "warden",
//! "sourcetype", "index"?, "event"}` (the event is the formatted JSON
//! object, or a string for CEF), with `Authorization: Splunk <token>`. A
//! 200 must carry `"code": 0`. With `ack = true` every request carries the
//! output's `X-Splunk-Request-Channel`, the answer's `ackId` is polled at
//! `<url>/services/collector/ack` (`{"acks": [id]}` → `{"acks": {"id":
//! true}}`) and the batch counts as acknowledged only once Splunk says it
//! is indexed; after `ack_timeout_secs` without that, the batch is sent
//! again (Splunk may then hold it twice; `metadata.uid` tells them apart).
//!
//! `elasticsearch`: `<url>/_bulk` with one `create` action per event,
//! `_index` = `index`, `_id` = the event's uid, so a resent event can
//! never be stored twice. A 200 is not enough (`errors: true` is common):
//! every item's status is checked. 2xx and 409 (the document exists: an
//! earlier attempt stored it) mark the item delivered; 429 and 5xx items
//! are retried — only those items, the ones already delivered are not sent
//! again; any other item status (a mapping error, say) parks the output,
//! naming the event, because skipping it would lose it. The cursor moves
//! only once every item of the batch is delivered.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Batch, Failure, ForwardError, Sink, Stop};
use crate::config::{Forward, ForwardAuth, ForwardFormat, ForwardKind};

/// Most response bytes read (error details, bulk item lists are larger:
/// see [`MAX_BULK_RESPONSE`]).
const MAX_RESPONSE: u64 = 64 * 1024;
/// An Elasticsearch bulk answer lists every item.
const MAX_BULK_RESPONSE: u64 = 64 * 1024 * 1024;
/// Error details quoted in logs and status, at most.
const DETAIL_CHARS: usize = 300;

/// What an HTTP exchange produced.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Where the `Authorization` header comes from.
enum Auth {
    None,
    /// `<scheme> <first line of file>` (`Bearer`, `ApiKey`, `Splunk`).
    Token {
        scheme: &'static str,
        file: PathBuf,
    },
    /// `Basic base64(first line of file)`; the line is `user:password`.
    Basic {
        file: PathBuf,
    },
}

/// An output's HTTP client.
pub struct Client {
    agent: ureq::Agent,
    gzip: bool,
    auth: Auth,
}

impl Client {
    /// Build the client of `f` (reads the CA and client certificate files).
    pub fn new(f: &Forward) -> Result<Self, ForwardError> {
        let output = f.name.as_str();
        let file_err = |what: &'static str, path: &PathBuf, detail: String| ForwardError::File {
            output: output.to_owned(),
            what,
            path: path.clone(),
            detail,
        };
        let pem_items = |what: &'static str, path: &PathBuf| {
            let pem = std::fs::read(path).map_err(|e| file_err(what, path, e.to_string()))?;
            ureq::tls::parse_pem(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_err(what, path, e.to_string()))
        };
        let roots = match &f.ca_file {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => {
                let certs: Vec<_> = pem_items("CA file", path)?
                    .into_iter()
                    .filter_map(|i| match i {
                        ureq::tls::PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(file_err("CA file", path, "holds no certificate".into()));
                }
                ureq::tls::RootCerts::Specific(Arc::new(certs))
            }
        };
        let client_cert = match (&f.client_cert_file, &f.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain: Vec<_> = pem_items("client certificate", cert)?
                    .into_iter()
                    .filter_map(|i| match i {
                        ureq::tls::PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                if chain.is_empty() {
                    return Err(file_err(
                        "client certificate",
                        cert,
                        "holds no certificate".into(),
                    ));
                }
                // The private key is a secret (fsutil::read_secret).
                let pem = crate::fsutil::read_secret(key)
                    .map_err(|e| file_err("client key", key, e.to_string()))?;
                let key = ureq::tls::parse_pem(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_err("client key", key, e.to_string()))?
                    .into_iter()
                    .find_map(|i| match i {
                        ureq::tls::PemItem::PrivateKey(k) => Some(k),
                        _ => None,
                    })
                    .ok_or_else(|| file_err("client key", key, "holds no private key".into()))?;
                Some(ureq::tls::ClientCert::new_with_certs(&chain, key))
            }
            _ => None,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(roots)
            .client_cert(client_cert)
            .build();
        let timeout = Duration::from_secs(f.timeout_secs.max(1));
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build();
        let auth = match (f.kind, f.auth) {
            (ForwardKind::SplunkHec, _) => Auth::Token {
                scheme: "Splunk",
                file: f.token_file.clone().unwrap_or_default(),
            },
            (_, ForwardAuth::None) => Auth::None,
            (_, ForwardAuth::Bearer) => Auth::Token {
                scheme: "Bearer",
                file: f.token_file.clone().unwrap_or_default(),
            },
            (_, ForwardAuth::Apikey) => Auth::Token {
                scheme: "ApiKey",
                file: f.token_file.clone().unwrap_or_default(),
            },
            (_, ForwardAuth::Basic) => Auth::Basic {
                file: f.credentials_file.clone().unwrap_or_default(),
            },
        };
        let client = Self {
            agent: ureq::Agent::new_with_config(config),
            gzip: f.gzip,
            auth,
        };
        // A missing or empty credential file is a setup error, not an outage.
        if let Err(Failure::Retry { error, .. } | Failure::Park { error }) = client.authorization()
        {
            return Err(ForwardError::File {
                output: output.to_owned(),
                what: "credentials",
                path: match &client.auth {
                    Auth::Token { file, .. } | Auth::Basic { file } => file.clone(),
                    Auth::None => PathBuf::new(),
                },
                detail: error,
            });
        }
        Ok(client)
    }

    /// The `Authorization` value, read from its file now.
    fn authorization(&self) -> Result<Option<String>, Failure> {
        let first_line = |file: &PathBuf| -> Result<String, Failure> {
            let bytes = crate::fsutil::read_secret(file).map_err(|e| Failure::Retry {
                error: format!("cannot read credentials: {e}"),
                after: None,
            })?;
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().next().unwrap_or("").trim().to_owned();
            if line.is_empty() {
                return Err(Failure::Retry {
                    error: format!("credentials file {} is empty", file.display()),
                    after: None,
                });
            }
            Ok(line)
        };
        Ok(match &self.auth {
            Auth::None => None,
            Auth::Token { scheme, file } => Some(format!("{scheme} {}", first_line(file)?)),
            Auth::Basic { file } => {
                use base64::Engine as _;
                let line = first_line(file)?;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(line)
                ))
            }
        })
    }

    /// POST `body` (gzipped when configured) to `url`; any answer is
    /// returned (status checks are the caller's), network failures are
    /// [`Failure::Retry`].
    pub fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        max_response: u64,
    ) -> Result<Answer, Failure> {
        let mut req = self.agent.post(url).header("content-type", content_type);
        if let Some(auth) = self.authorization()? {
            req = req.header("authorization", auth);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let sent = if self.gzip {
            let gz = gzip(body).map_err(|e| Failure::Retry {
                error: format!("gzip: {e}"),
                after: None,
            })?;
            req.header("content-encoding", "gzip").send(&gz[..])
        } else {
            req.send(body)
        };
        let mut resp = sent.map_err(|e| Failure::Retry {
            error: format!("POST {url}: {e}"),
            after: None,
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp
            .body_mut()
            .with_config()
            .limit(max_response)
            .read_to_vec()
            .map_err(|e| Failure::Retry {
                error: format!("POST {url}: reading the answer: {e}"),
                after: None,
            })?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Gzip at the fast level: collectors pay for bytes, the agent for CPU.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// `Retry-After`: delay-seconds or an HTTP date (IMF-fixdate).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, fmt).ok()?.assume_utc();
    let now = time::OffsetDateTime::now_utc();
    let secs = (at - now).whole_seconds().max(0);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Status-code policy shared by every HTTP kind (see the module docs).
pub fn classify(what: &str, a: &Answer) -> Result<(), Failure> {
    match a.status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::Retry {
            error: format!("{what}: HTTP {}{}", a.status, detail(&a.body)),
            after: a.retry_after,
        }),
        s => Err(Failure::Park {
            error: format!("{what}: HTTP {s}{}", detail(&a.body)),
        }),
    }
}

/// `: <first characters of the body>` (control characters replaced), or
/// nothing for an empty body.
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t: String = text
        .trim()
        .chars()
        .take(DETAIL_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// `url` + `path`, without a doubled slash.
fn endpoint(url: &str, path: &str) -> String {
    format!("{}{path}", url.trim_end_matches('/'))
}

/// `kind = "https"`: the batch as NDJSON.
pub struct HttpsSink {
    client: Client,
    url: String,
    content_type: &'static str,
}

impl HttpsSink {
    pub fn new(f: &Forward) -> Result<Self, ForwardError> {
        Ok(Self {
            client: Client::new(f)?,
            url: f.url.clone().unwrap_or_default(),
            content_type: match f.format {
                ForwardFormat::Cef => "text/plain; charset=utf-8",
                _ => "application/x-ndjson",
            },
        })
    }
}

/// The lines of `batch` (those not yet done), each ending in `\n`.
pub fn ndjson(batch: &Batch) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.bytes + batch.items.len());
    for it in batch.items.iter().filter(|i| !i.done) {
        body.extend_from_slice(&it.line);
        body.push(b'\n');
    }
    body
}

impl Sink for HttpsSink {
    fn deliver(&mut self, batch: &mut Batch, _stop: &Stop) -> Result<(), Failure> {
        let body = ndjson(batch);
        let (first, last) = batch.range().unwrap_or((0, 0));
        let (first, last) = (first.to_string(), last.to_string());
        let a = self.client.post(
            &self.url,
            self.content_type,
            &body,
            &[("x-warden-first-seq", &first), ("x-warden-last-seq", &last)],
            MAX_RESPONSE,
        )?;
        classify("collector", &a)
    }
}

/// `kind = "splunk-hec"`.
pub struct HecSink {
    client: Client,
    event_url: String,
    ack_url: String,
    host: String,
    sourcetype: String,
    index: Option<String>,
    /// `None` without indexer acknowledgment.
    channel: Option<String>,
    ack_timeout: Duration,
    cef: bool,
}

impl HecSink {
    pub fn new(f: &Forward, host: &str) -> Result<Self, ForwardError> {
        let url = f.url.clone().unwrap_or_default();
        Ok(Self {
            client: Client::new(f)?,
            event_url: endpoint(&url, "/services/collector/event"),
            ack_url: endpoint(&url, "/services/collector/ack"),
            host: host.to_owned(),
            sourcetype: f
                .sourcetype
                .clone()
                .unwrap_or_else(|| format!("warden:{}", f.format.as_str())),
            index: f.index.clone(),
            channel: f.ack.then(random_uuid),
            ack_timeout: Duration::from_secs(f.ack_timeout_secs.max(1)),
            cef: f.format == ForwardFormat::Cef,
        })
    }

    /// The HEC envelopes of `batch`, concatenated (one per line).
    pub fn body(&self, batch: &Batch) -> Vec<u8> {
        let mut body = Vec::with_capacity(batch.bytes + batch.items.len() * 128);
        let host = serde_json::to_string(&self.host).unwrap_or_else(|_| "\"\"".into());
        let st = serde_json::to_string(&self.sourcetype).unwrap_or_else(|_| "\"\"".into());
        let index = self
            .index
            .as_ref()
            .and_then(|i| serde_json::to_string(i).ok());
        for it in batch.items.iter().filter(|i| !i.done) {
            let secs = it.time_ms.div_euclid(1000);
            let ms = it.time_ms.rem_euclid(1000);
            let _ = write!(
                body,
                "{{\"time\":{secs}.{ms:03},\"host\":{host},\"source\":\"warden\",\"sourcetype\":{st},"
            );
            if let Some(ix) = &index {
                let _ = write!(body, "\"index\":{ix},");
            }
            body.extend_from_slice(b"\"event\":");
            if self.cef {
                let s = String::from_utf8_lossy(&it.line);
                body.extend_from_slice(
                    serde_json::to_string(&*s)
                        .unwrap_or_else(|_| "\"\"".into())
                        .as_bytes(),
                );
            } else {
                body.extend_from_slice(&it.line);
            }
            body.extend_from_slice(b"}\n");
        }
        body
    }

    /// Poll until Splunk reports `ack_id` indexed.
    fn wait_for_ack(&self, channel: &str, ack_id: u64, stop: &Stop) -> Result<(), Failure> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let body = format!("{{\"acks\":[{ack_id}]}}");
        let mut last_error = String::from("not acknowledged yet");
        while started.elapsed() < self.ack_timeout {
            match self.client.post(
                &self.ack_url,
                "application/json",
                body.as_bytes(),
                &[("x-splunk-request-channel", channel)],
                MAX_RESPONSE,
            ) {
                Ok(a) => {
                    if hec_acked(&a, ack_id)? {
                        return Ok(());
                    }
                }
                Err(Failure::Retry { error, .. }) => last_error = error,
                Err(park) => return Err(park),
            }
            if !stop.sleep(pause) {
                break;
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        Err(Failure::Retry {
            error: format!(
                "splunk: ackId {ack_id} not indexed within {}s ({last_error}); sending the batch again",
                self.ack_timeout.as_secs()
            ),
            after: None,
        })
    }
}

impl Sink for HecSink {
    fn deliver(&mut self, batch: &mut Batch, stop: &Stop) -> Result<(), Failure> {
        let body = self.body(batch);
        let channel = self.channel.clone();
        let headers: Vec<(&str, &str)> = channel
            .as_deref()
            .map(|c| vec![("x-splunk-request-channel", c)])
            .unwrap_or_default();
        let a = self.client.post(
            &self.event_url,
            "application/json",
            &body,
            &headers,
            MAX_RESPONSE,
        )?;
        let ack_id = hec_answer(&a, channel.is_some())?;
        if let (Some(channel), Some(ack_id)) = (&channel, ack_id) {
            self.wait_for_ack(channel, ack_id, stop)?;
        }
        Ok(())
    }
}

/// The HEC event endpoint's answer: stored (`code` 0), with its `ackId`
/// when acknowledgment was asked for (`acked`: the answer must carry one).
pub fn hec_answer(a: &Answer, acked: bool) -> Result<Option<u64>, Failure> {
    classify("splunk", a)?;
    let v: Value = serde_json::from_slice(&a.body).map_err(|e| Failure::Retry {
        error: format!("splunk: answer is not JSON: {e}"),
        after: None,
    })?;
    if v["code"].as_i64() != Some(0) {
        return Err(Failure::Park {
            error: format!("splunk: HTTP {} but{}", a.status, detail(&a.body)),
        });
    }
    if !acked {
        return Ok(None);
    }
    match v["ackId"].as_u64() {
        Some(id) => Ok(Some(id)),
        None => Err(Failure::Park {
            error: "splunk: ack = true but the answer has no ackId (is indexer \
                    acknowledgment enabled on the token?)"
                .into(),
        }),
    }
}

/// The HEC ack endpoint's answer: whether `ack_id` is indexed (`{"acks":
/// {"<id>": true}}`; anything else is not yet).
pub fn hec_acked(a: &Answer, ack_id: u64) -> Result<bool, Failure> {
    classify("splunk ack", a)?;
    let v: Value = serde_json::from_slice(&a.body).map_err(|e| Failure::Retry {
        error: format!("splunk ack: answer is not JSON: {e}"),
        after: None,
    })?;
    Ok(v["acks"][ack_id.to_string()].as_bool() == Some(true))
}

/// A random RFC 4122 version 4 UUID (HEC channel ids must be GUIDs).
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `kind = "elasticsearch"`.
pub struct EsSink {
    client: Client,
    bulk_url: String,
    /// `"_index":"<index>"` already JSON-escaped.
    index_json: String,
}

impl EsSink {
    pub fn new(f: &Forward) -> Result<Self, ForwardError> {
        let index = f.index.clone().unwrap_or_default();
        Ok(Self {
            client: Client::new(f)?,
            bulk_url: endpoint(f.url.as_deref().unwrap_or_default(), "/_bulk"),
            index_json: serde_json::to_string(&index).unwrap_or_else(|_| "\"\"".into()),
        })
    }

    /// The `_bulk` body for the items of `batch` not yet done, and their
    /// positions in the batch.
    pub fn body(&self, batch: &Batch) -> (Vec<u8>, Vec<usize>) {
        let mut body = Vec::with_capacity(batch.bytes + batch.items.len() * 96);
        let mut sent = Vec::new();
        for (i, it) in batch.items.iter().enumerate().filter(|(_, i)| !i.done) {
            let id = serde_json::to_string(&it.uid).unwrap_or_else(|_| "\"\"".into());
            let _ = writeln!(
                body,
                "{{\"create\":{{\"_index\":{},\"_id\":{id}}}}}",
                self.index_json
            );
            body.extend_from_slice(&it.line);
            body.push(b'\n');
            sent.push(i);
        }
        (body, sent)
    }
}

/// Apply a `_bulk` answer to the items at `sent`: marks the delivered ones
/// done; `Err` when some remain (retryable) or one can never be stored.
pub fn apply_bulk_answer(batch: &mut Batch, sent: &[usize], body: &[u8]) -> Result<(), Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Failure::Retry {
        error: format!("elasticsearch: _bulk answer is not JSON: {e}"),
        after: None,
    })?;
    let Some(items) = v["items"].as_array() else {
        return Err(Failure::Retry {
            error: "elasticsearch: _bulk answer has no items".into(),
            after: None,
        });
    };
    if items.len() != sent.len() {
        return Err(Failure::Retry {
            error: format!(
                "elasticsearch: _bulk answered {} items for {} sent",
                items.len(),
                sent.len()
            ),
            after: None,
        });
    }
    let mut retry: Option<String> = None;
    let mut failed = 0usize;
    for (item, &pos) in items.iter().zip(sent) {
        // Each item is `{"<action>": {...}}`; we only send `create`.
        let r = item.get("create").unwrap_or(item);
        let status = r["status"].as_u64().unwrap_or(0);
        let uid = &batch.items[pos].uid;
        let why = || {
            format!(
                "{}: {}",
                r["error"]["type"].as_str().unwrap_or("error"),
                r["error"]["reason"].as_str().unwrap_or("")
            )
        };
        match status {
            200..=299 | 409 => batch.items[pos].done = true,
            429 | 500..=599 => {
                failed += 1;
                retry.get_or_insert_with(|| format!("{uid}: HTTP {status} {}", why()));
            }
            _ => {
                return Err(Failure::Park {
                    error: format!(
                        "elasticsearch refused event {uid} (HTTP {status} {}); it cannot be \
                         skipped without losing it",
                        why()
                    ),
                });
            }
        }
    }
    match retry {
        None => Ok(()),
        Some(first) => Err(Failure::Retry {
            error: format!(
                "elasticsearch: {failed} of {} items not stored (first: {first}); retrying those",
                sent.len()
            ),
            after: None,
        }),
    }
}

impl Sink for EsSink {
    fn deliver(&mut self, batch: &mut Batch, _stop: &Stop) -> Result<(), Failure> {
        let (body, sent) = self.body(batch);
        if sent.is_empty() {
            return Ok(());
        }
        let a = self.client.post(
            &self.bulk_url,
            "application/x-ndjson",
            &body,
            &[],
            MAX_BULK_RESPONSE,
        )?;
        classify("elasticsearch", &a)?;
        apply_bulk_answer(batch, &sent, &a.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Item;

    fn batch(n: u64) -> Batch {
        let mut b = Batch::default();
        for seq in 1..=n {
            let line = format!("{{\"seq\":{seq}}}").into_bytes();
            b.bytes += line.len();
            b.items.push(Item {
                seq,
                time_ms: 1_700_000_000_000 + seq as i64,
                uid: format!("abc:{seq}"),
                notable: false,
                line,
                done: false,
            });
        }
        b
    }

    fn answer(status: u16, retry_after: Option<u64>) -> Answer {
        Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: b"{\"error\":\"nope\"}\n".to_vec(),
        }
    }

    #[test]
    fn statuses_are_acknowledged_retried_or_parked() {
        assert_eq!(classify("c", &answer(200, None)), Ok(()));
        assert_eq!(classify("c", &answer(204, None)), Ok(()));
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify("c", &answer(s, Some(7))), Err(Failure::Retry { after: Some(d), .. }) if d == Duration::from_secs(7)),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 413] {
            match classify("c", &answer(s, None)) {
                Err(Failure::Park { error }) => {
                    assert!(
                        error.contains(&s.to_string()) && error.contains("nope"),
                        "{error}"
                    )
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let d = parse_retry_after(&later.format(fmt).unwrap()).unwrap();
        assert!((85..=90).contains(&d.as_secs()), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ndjson_and_gzip_round_trip() {
        let mut b = batch(3);
        b.items[1].done = true;
        let body = ndjson(&b);
        assert_eq!(body, b"{\"seq\":1}\n{\"seq\":3}\n");
        let gz = gzip(&body).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, body);
    }

    fn es() -> EsSink {
        EsSink {
            client: Client {
                agent: ureq::Agent::new_with_defaults(),
                gzip: false,
                auth: Auth::None,
            },
            bulk_url: "https://es/_bulk".into(),
            index_json: "\"warden\"".into(),
        }
    }

    #[test]
    fn bulk_body_uses_create_with_the_uid() {
        let mut b = batch(2);
        let (body, sent) = es().body(&b);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"create\":{\"_index\":\"warden\",\"_id\":\"abc:1\"}}\n{\"seq\":1}\n\
             {\"create\":{\"_index\":\"warden\",\"_id\":\"abc:2\"}}\n{\"seq\":2}\n"
        );
        assert_eq!(sent, vec![0, 1]);
        b.items[0].done = true;
        assert_eq!(es().body(&b).1, vec![1]);
    }

    #[test]
    fn bulk_answers_are_checked_item_by_item() {
        let item = |status: u16, err: &str| {
            if err.is_empty() {
                format!("{{\"create\":{{\"_id\":\"x\",\"status\":{status}}}}}")
            } else {
                format!(
                    "{{\"create\":{{\"status\":{status},\"error\":{{\"type\":\"{err}\",\"reason\":\"r\"}}}}}}"
                )
            }
        };
        let answer = |items: &[String]| {
            format!("{{\"errors\":true,\"items\":[{}]}}", items.join(",")).into_bytes()
        };
        // 201 and 409 are delivered; 429/503 are retried, only them.
        let mut b = batch(4);
        let sent = vec![0, 1, 2, 3];
        let r = apply_bulk_answer(
            &mut b,
            &sent,
            &answer(&[
                item(201, ""),
                item(409, "version_conflict_engine_exception"),
                item(429, "es_rejected_execution_exception"),
                item(503, "unavailable"),
            ]),
        );
        assert!(
            matches!(&r, Err(Failure::Retry { error, .. }) if error.contains("2 of 4") && error.contains("abc:3")),
            "{r:?}"
        );
        let done: Vec<bool> = b.items.iter().map(|i| i.done).collect();
        assert_eq!(done, [true, true, false, false]);
        let (_, again) = es().body(&b);
        assert_eq!(again, vec![2, 3]);
        assert_eq!(
            apply_bulk_answer(&mut b, &again, &answer(&[item(201, ""), item(200, "")])),
            Ok(())
        );
        // A mapping error cannot be retried away: park, naming the event.
        let mut b = batch(2);
        let r = apply_bulk_answer(
            &mut b,
            &[0, 1],
            &answer(&[item(201, ""), item(400, "mapper_parsing_exception")]),
        );
        assert!(
            matches!(&r, Err(Failure::Park { error }) if error.contains("abc:2") && error.contains("mapper_parsing_exception")),
            "{r:?}"
        );
        // A short or broken answer is never taken as success.
        let mut b = batch(2);
        assert!(matches!(
            apply_bulk_answer(&mut b, &[0, 1], &answer(&[item(201, "")])),
            Err(Failure::Retry { .. })
        ));
        assert!(matches!(
            apply_bulk_answer(&mut b, &[0, 1], b"<html>"),
            Err(Failure::Retry { .. })
        ));
    }

    #[test]
    fn hec_envelopes_carry_time_host_and_the_event() {
        let sink = HecSink {
            client: Client {
                agent: ureq::Agent::new_with_defaults(),
                gzip: false,
                auth: Auth::None,
            },
            event_url: String::new(),
            ack_url: String::new(),
            host: "h1".into(),
            sourcetype: "warden:ocsf".into(),
            index: Some("sec".into()),
            channel: None,
            ack_timeout: Duration::from_secs(1),
            cef: false,
        };
        let body = sink.body(&batch(2));
        let lines: Vec<Value> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"].as_f64(), Some(1_700_000_000.001));
        assert_eq!(lines[0]["host"], "h1");
        assert_eq!(lines[0]["index"], "sec");
        assert_eq!(lines[1]["event"]["seq"], 2);
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
