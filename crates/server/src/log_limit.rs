//! Rate-limited warnings. A broken or hostile sender can make a node refuse thousands of
//! frames or connections a second; a WARN line for each would flood the log (and the disk
//! it lives on) and bury every other line. So each source gets at most one line per
//! window, and that line says how many refusals were suppressed since the previous one.
//! The counters in `/metrics` still count every refusal.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One warning per source per this long at most.
pub const WARN_WINDOW: Duration = Duration::from_secs(10);

/// Sources remembered at most. Beyond, new sources share one budget, so that a sender
/// with many addresses can neither grow the table nor the log.
const SOURCES_MAX: usize = 1024;

#[derive(Default)]
struct Entry {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl Entry {
    fn admit(&mut self, now: Instant, window: Duration) -> Option<u64> {
        match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < window => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

struct State<K> {
    sources: HashMap<K, Entry>,
    overflow: Entry,
}

/// Decides which warnings are written, per source (a peer's IP address, a listener).
pub struct WarnLimiter<K> {
    window: Duration,
    state: Mutex<State<K>>,
}

impl<K: Hash + Eq + Clone> WarnLimiter<K> {
    pub fn new(window: Duration) -> Self {
        WarnLimiter {
            window,
            state: Mutex::new(State { sources: HashMap::new(), overflow: Entry::default() }),
        }
    }

    /// Whether to write a warning about `source` at `now`. `Some(n)`: write it, and say
    /// that `n` were suppressed before it; `None`: stay quiet (it is counted for the next).
    pub fn admit(&self, source: &K, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().expect("warn limiter lock");
        let State { sources, overflow } = &mut *state;
        if !sources.contains_key(source) && sources.len() >= SOURCES_MAX {
            let window = self.window;
            sources.retain(|_, e| e.logged_at.is_some_and(|at| now.saturating_duration_since(at) < window));
        }
        let entry = if sources.contains_key(source) || sources.len() < SOURCES_MAX {
            sources.entry(source.clone()).or_default()
        } else {
            overflow
        };
        entry.admit(now, self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_window_with_the_count_of_the_suppressed() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit(&1, t0), Some(0));
        for i in 1..=99 {
            assert_eq!(limiter.admit(&1, t0 + Duration::from_millis(i * 50)), None);
        }
        // Another source has its own budget.
        assert_eq!(limiter.admit(&2, t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(limiter.admit(&1, t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(limiter.admit(&1, t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn many_sources_share_one_budget_beyond_the_table() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted = (0..SOURCES_MAX as u32 + 500).filter(|s| limiter.admit(s, t0).is_some()).count();
        // Every remembered source once, then one line for all the others together.
        assert_eq!(admitted, SOURCES_MAX + 1);
        assert!(limiter.state.lock().unwrap().sources.len() <= SOURCES_MAX);
    }
}
