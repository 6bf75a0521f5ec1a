//! A global memory budget for buffered client frames (issue 16, item 4).
//!
//! Each PostgreSQL session buffers a client message whole before it is
//! decided and forwarded (up to the target's `max_message_bytes`, 16 MiB by
//! default, and longer while held for approval), so 1,000 connections each
//! sending most of a large Query could make the agent hold gigabytes. Every
//! session may buffer [`FREE_PER_SESSION`] without asking (ordinary
//! statements never touch the budget, so one account exhausting it does not
//! stop another's queries); beyond that it holds a [`Charge`] on the
//! agent-wide budget (`[agent] max_buffered_bytes`), sized to what its buffer
//! holds or is about to hold (the declared length of a partial message). A
//! message that would take the budget past its limit is refused with
//! SQLSTATE 53200 (out_of_memory) and the session closes; the close event
//! carries the reason.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What a session buffers without charging the budget.
pub const FREE_PER_SESSION: usize = 64 * 1024;

/// Default `[agent] max_buffered_bytes`.
pub const DEFAULT_LIMIT: usize = 256 * 1024 * 1024;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);
static USED: AtomicUsize = AtomicUsize::new(0);

/// Sets the agent-wide limit (at start).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Bytes charged now, agent-wide.
pub fn used() -> usize {
    USED.load(Ordering::Relaxed)
}

/// Why a charge could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "buffering a {want}-byte client message would take the agent's buffered messages past \
     max_buffered_bytes ({limit} bytes, {used} in use)"
)]
pub struct Exhausted {
    pub want: usize,
    pub used: usize,
    pub limit: usize,
}

/// One session's share of the budget; released when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    held: usize,
}

impl Charge {
    /// Makes this session's charge cover a buffer of `bytes` (less the free
    /// allowance): shrinks at once, grows only within the limit (else the
    /// charge is unchanged).
    pub fn cover(&mut self, bytes: usize) -> Result<(), Exhausted> {
        self.cover_within(bytes, LIMIT.load(Ordering::Relaxed))
    }

    fn cover_within(&mut self, bytes: usize, limit: usize) -> Result<(), Exhausted> {
        let want = bytes.saturating_sub(FREE_PER_SESSION);
        if want <= self.held {
            USED.fetch_sub(self.held - want, Ordering::AcqRel);
            self.held = want;
            return Ok(());
        }
        let add = want - self.held;
        let mut cur = USED.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_add(add);
            if next > limit {
                return Err(Exhausted {
                    want: bytes,
                    used: cur,
                    limit,
                });
            }
            match USED.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.held = want;
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        USED.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// What a client buffer holds or is about to hold: its capacity, or the
/// whole of the message whose header it holds (type byte + length), capped
/// at `max_message` + 1 (longer messages are refused by the decoder).
pub fn need(buf: &[u8], capacity: usize, max_message: usize) -> usize {
    let declared = match buf.get(1..5) {
        Some(b) => {
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            len.saturating_add(1).min(max_message.saturating_add(1))
        }
        None => 0,
    };
    capacity.max(buf.len()).max(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the counter is process-wide.
    #[test]
    fn charges_grow_within_the_limit_and_are_released() {
        let base = used();
        let limit = base + 1_000_000;
        let mut a = Charge::default();
        let mut b = Charge::default();
        // Within the free allowance: nothing charged.
        a.cover_within(FREE_PER_SESSION, limit).unwrap();
        assert_eq!(used(), base);
        a.cover_within(FREE_PER_SESSION + 600_000, limit).unwrap();
        assert_eq!(used(), base + 600_000);
        // b cannot take what a holds.
        let e = b
            .cover_within(FREE_PER_SESSION + 500_000, limit)
            .unwrap_err();
        assert_eq!(e.used, base + 600_000);
        assert_eq!(used(), base + 600_000);
        // Small buffers still pass for b (free allowance).
        b.cover_within(1000, limit).unwrap();
        // a shrinks; b may grow now.
        a.cover_within(0, limit).unwrap();
        b.cover_within(FREE_PER_SESSION + 500_000, limit).unwrap();
        drop(b);
        drop(a);
        assert_eq!(used(), base);
    }

    #[test]
    fn need_counts_the_declared_message() {
        // 'Q' with length 10_000_000: the whole message, not the 5 bytes.
        let mut h = vec![b'Q'];
        h.extend_from_slice(&10_000_000u32.to_be_bytes());
        assert_eq!(need(&h, 64, 16 << 20), 10_000_001);
        // Capped at what the decoder accepts.
        assert_eq!(need(&h, 64, 1000), 1001);
        assert_eq!(need(b"Q", 8192, 1000), 8192);
    }
}
