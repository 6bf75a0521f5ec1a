//! Webhook notifications of new approval requests: a bounded queue drained
//! by one background thread that POSTs JSON to every configured webhook
//! (generic: the request; Slack-compatible: `{"text": ...}`), retrying with
//! backoff. The data path only ever `try_send`s: a full queue drops the
//! notification, counts it and logs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use serde::Serialize;

use crate::config::approvals::{Webhook, WebhookKind};

/// Notifications waiting at most.
pub const QUEUE: usize = 256;
/// Attempts per webhook and notification.
const ATTEMPTS: u32 = 4;
/// First retry delay (doubles).
const BACKOFF: Duration = Duration::from_millis(500);
/// Per-request timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a webhook is told about a new request (the generic payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub event: &'static str,
    pub id: String,
    pub account: String,
    pub target: String,
    pub protocol: String,
    /// Masked.
    pub statement: String,
    pub risk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    pub requested_ms: i64,
    pub expires_ms: i64,
    /// The command line that approves it.
    pub approve: String,
    pub deny: String,
}

impl Notice {
    /// The Slack-compatible text.
    pub fn text(&self) -> String {
        format!(
            "Warden approval {id} requested: {account} wants to run a {risk} statement on {target}: \
             `{stmt}`{rule}. Approve: `{approve}` Deny: `{deny}`",
            id = self.id,
            account = self.account,
            risk = self.risk,
            target = self.target,
            stmt = self.statement,
            rule = self
                .rule
                .as_ref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default(),
            approve = self.approve,
            deny = self.deny,
        )
    }

    fn body(&self, kind: WebhookKind) -> Result<Vec<u8>, serde_json::Error> {
        match kind {
            WebhookKind::Generic => serde_json::to_vec(self),
            WebhookKind::Slack => serde_json::to_vec(&serde_json::json!({ "text": self.text() })),
        }
    }
}

/// Counters of the notifier.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// Producer side.
pub struct Notifier {
    tx: SyncSender<Notice>,
    pub counters: Arc<Counters>,
}

impl Notifier {
    /// Starts the sender thread; `None` without webhooks.
    pub fn start(hooks: Vec<Webhook>) -> Option<Notifier> {
        if hooks.is_empty() {
            return None;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let spawned = std::thread::Builder::new()
            .name("warden-webhooks".into())
            .spawn(move || deliver(rx, &hooks, &c));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the webhook sender; approvals will not be notified");
            return None;
        }
        Some(Notifier { tx, counters })
    }

    /// Queues a notification without blocking.
    pub fn notify(&self, n: Notice) {
        match self.tx.try_send(n) {
            Ok(()) => {}
            Err(TrySendError::Full(n)) => {
                let d = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(request = %n.id, dropped = d, "webhook queue full; notification dropped");
            }
            Err(TrySendError::Disconnected(n)) => {
                let d = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(request = %n.id, dropped = d, "webhook sender stopped; notification dropped");
            }
        }
    }
}

fn deliver(rx: Receiver<Notice>, hooks: &[Webhook], c: &Counters) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into();
    while let Ok(n) = rx.recv() {
        for h in hooks {
            let body = match n.body(h.kind) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a webhook payload");
                    continue;
                }
            };
            let mut delay = BACKOFF;
            let mut ok = false;
            for attempt in 1..=ATTEMPTS {
                match agent
                    .post(&h.url)
                    .header("content-type", "application/json")
                    .send(&body[..])
                {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(request = %n.id, url = %h.url, attempt, error = %e, "webhook failed");
                        if attempt < ATTEMPTS {
                            std::thread::sleep(delay);
                            delay *= 2;
                        }
                    }
                }
            }
            if ok {
                c.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                c.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(request = %n.id, url = %h.url, "webhook gave up after {ATTEMPTS} attempts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    fn notice() -> Notice {
        Notice {
            event: "approval_requested",
            id: "abcd2345".into(),
            account: "orders-api".into(),
            target: "orders-pg".into(),
            protocol: "postgres".into(),
            statement: "DELETE FROM orders WHERE id = ***".into(),
            risk: "write".into(),
            rule: Some("deletes".into()),
            pid: Some(7),
            uid: Some(1000),
            exe: None,
            requested_ms: 1,
            expires_ms: 2,
            approve: "warden approvals approve abcd2345".into(),
            deny: "warden approvals deny abcd2345".into(),
        }
    }

    /// Answers one request with `status` and returns its body.
    fn serve_once(l: &std::net::TcpListener, status: u16) -> Vec<u8> {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut s = s;
        write!(
            s,
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        body
    }

    #[test]
    fn generic_and_slack_payloads_arrive_with_retries() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let n = Notifier::start(vec![
            Webhook {
                url: url.clone(),
                kind: WebhookKind::Generic,
            },
            Webhook {
                url,
                kind: WebhookKind::Slack,
            },
        ])
        .unwrap();
        n.notify(notice());
        // First attempt fails (500), the retry succeeds.
        let _ = serve_once(&l, 500);
        let generic: serde_json::Value = serde_json::from_slice(&serve_once(&l, 200)).unwrap();
        assert_eq!(generic["id"], "abcd2345");
        assert_eq!(generic["approve"], "warden approvals approve abcd2345");
        let slack: serde_json::Value = serde_json::from_slice(&serve_once(&l, 200)).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("abcd2345") && text.contains("orders-api"),
            "{text}"
        );
        for _ in 0..100 {
            if n.counters.sent.load(Ordering::Relaxed) == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(n.counters.sent.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // A webhook nobody answers: the sender blocks on retries while the
        // queue fills.
        let n = Notifier::start(vec![Webhook {
            url: "http://127.0.0.1:9/".into(),
            kind: WebhookKind::Generic,
        }])
        .unwrap();
        for _ in 0..QUEUE + 10 {
            n.notify(notice());
        }
        assert!(n.counters.dropped.load(Ordering::Relaxed) >= 9);
    }
}
