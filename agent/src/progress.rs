//! Progress bars for long CLI work (`warden audit verify`, `export`,
//! `replay`): drawn on stderr only when it is a terminal and the command
//! does not print JSON; otherwise every call is a no-op, so scripts and
//! pipes see exactly the output they saw before.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar on stderr, or nothing.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar labelled `what` when stderr is a terminal and `json` is off.
    pub fn new(what: &'static str, json: bool) -> Self {
        Bar::with_target(what, json, std::io::stderr().is_terminal())
    }

    fn with_target(what: &'static str, json: bool, tty: bool) -> Self {
        if json || !tty {
            return Bar(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(spinner_style());
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    /// Whether anything is drawn.
    pub fn visible(&self) -> bool {
        self.0.is_some()
    }

    /// `done` of `total` (a spinner with a count while `total` is 0).
    pub fn update(&self, done: u64, total: u64) {
        let Some(bar) = &self.0 else { return };
        if total > 0 && bar.length() != Some(total) {
            bar.set_style(bar_style());
            bar.set_length(total);
        }
        bar.set_position(done);
    }

    /// The next phase, with a new label (a spinner until its total is known).
    pub fn phase(&self, what: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_style(spinner_style());
            bar.unset_length();
            bar.set_position(0);
            bar.set_message(what);
        }
    }

    /// Removes the bar (before the command prints its result).
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Fixed templates: they cannot fail to parse, but fall back to the
/// default style rather than panic.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {pos} events")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_under_json_or_without_a_terminal() {
        assert!(!Bar::with_target("verify", true, true).visible());
        assert!(!Bar::with_target("verify", false, false).visible());
        assert!(Bar::with_target("verify", false, true).visible());
        // No-ops are harmless.
        let quiet = Bar::with_target("verify", false, false);
        quiet.update(5, 10);
        quiet.phase("export");
        quiet.finish();
    }
}
