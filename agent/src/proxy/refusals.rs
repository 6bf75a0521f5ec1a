//! A bound on the audit events that connections reaching the proxy port
//! without a kernel record (`unredirected`) can cause. Any local user can
//! open such connections in a loop; each used to commit its own event, until
//! the audit store's disk filled and every account got `audit_unavailable`.
//!
//! Per one-second window the first [`RefusalLimiter::PER_WINDOW`] are
//! recorded individually; the rest are refused (reset) without an event and
//! counted, and the count is recorded as one summary event when the window
//! is over (at the next such connection, or at the agent's once-a-second
//! tick). The kernel gives no uid or cgroup for these connections (they were
//! not redirected), so the bound is per host.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with one unredirected connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Record it as its own event (else refuse it silently, counted).
    pub record: bool,
    /// Connections refused silently in a window that is now over: record one
    /// summary event with this count.
    pub summary: Option<u64>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    recorded: u32,
    suppressed: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct RefusalLimiter {
    window: Mutex<Window>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                start: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalLimiter {
    /// Individually recorded refusals per window.
    pub const PER_WINDOW: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// Admits one unredirected connection arriving at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut w = self.lock();
        let summary = Self::roll(&mut w, now);
        let record = w.recorded < Self::PER_WINDOW;
        if record {
            w.recorded += 1;
        } else {
            w.suppressed += 1;
        }
        Admission { record, summary }
    }

    /// The count of a window that is over at `now`, if any was suppressed
    /// (for the periodic flush when no connection arrives).
    pub fn flush(&self, now: Instant) -> Option<u64> {
        Self::roll(&mut self.lock(), now)
    }

    fn roll(w: &mut Window, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(w.start) < Self::WINDOW {
            return None;
        }
        let n = std::mem::take(&mut w.suppressed);
        w.start = now;
        w.recorded = 0;
        (n > 0).then_some(n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // Plain counters: consistent after any panic.
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_recorded_as_a_bounded_number_of_events() {
        let l = RefusalLimiter::default();
        let t0 = Instant::now();
        let (mut individual, mut summaries, mut summarized) = (0u64, 0u64, 0u64);
        // 100,000 connections over 5 seconds.
        for i in 0..100_000u64 {
            let a = l.admit(t0 + Duration::from_micros(i * 50));
            individual += u64::from(a.record);
            if let Some(n) = a.summary {
                summaries += 1;
                summarized += n;
            }
        }
        if let Some(n) = l.flush(t0 + Duration::from_secs(10)) {
            summaries += 1;
            summarized += n;
        }
        // Every connection is accounted for, in at most 21 events a window.
        assert_eq!(individual + summarized, 100_000);
        assert!(
            individual <= 5 * 20 && summaries <= 5,
            "{individual} + {summaries}"
        );
    }

    #[test]
    fn a_quiet_window_records_everything() {
        let l = RefusalLimiter::default();
        let t0 = Instant::now();
        for i in 0..RefusalLimiter::PER_WINDOW {
            assert!(l.admit(t0 + Duration::from_millis(u64::from(i))).record);
        }
        assert!(!l.admit(t0 + Duration::from_millis(100)).record);
        assert_eq!(l.flush(t0 + Duration::from_millis(500)), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(2)), Some(1));
        assert_eq!(l.flush(t0 + Duration::from_secs(4)), None);
        let a = l.admit(t0 + Duration::from_secs(5));
        assert_eq!(
            a,
            Admission {
                record: true,
                summary: None
            }
        );
    }
}
