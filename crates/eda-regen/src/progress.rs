//! Progress reporting helpers: when to log, and the estimated time left.
//!
//! On a terminal the indicatif bar shows progress; without one (a batch job, `nohup`, a pipe) the
//! bar is hidden and periodic log lines carry the same facts. With tiny batches a line per batch
//! would flood the log, so lines are rate-limited.

use std::time::{Duration, Instant};

/// Interval between two progress log lines (besides the first and the last).
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for progress log lines: the first event, then at most one per interval, and always
/// the last event.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle that lets one line through per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle { interval, last: None }
    }

    /// Whether to log the event at `now`; `last` marks the final event, which is always logged.
    pub(crate) fn due(&mut self, now: Instant, last: bool) -> bool {
        let due = last || self.last.is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Seconds left for `remaining` items at the average pace so far (`elapsed` seconds for `done`
/// items); `None` before the first item.
pub(crate) fn eta_seconds(elapsed: f64, done: usize, remaining: usize) -> Option<f64> {
    (done > 0).then(|| elapsed / done as f64 * remaining as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_then_once_per_interval_and_the_last() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Throttle::new(s(10));
        let events = [(0, false), (1, false), (9, false), (10, false), (11, false), (15, false), (21, false), (22, true)];
        let logged: Vec<u64> = events.iter().filter(|&&(at, last)| t.due(t0 + s(at), last)).map(|&(at, _)| at).collect();
        assert_eq!(logged, vec![0, 10, 21, 22]);
        // A clock that goes backwards (never with Instant, but cheap to guard) does not log.
        let mut t = Throttle::new(s(10));
        assert!(t.due(t0 + s(5), false));
        assert!(!t.due(t0, false));
    }

    #[test]
    fn eta_is_the_average_pace_times_what_is_left() {
        assert_eq!(eta_seconds(10.0, 0, 5), None);
        assert_eq!(eta_seconds(10.0, 4, 6), Some(15.0));
        assert_eq!(eta_seconds(10.0, 4, 0), Some(0.0));
    }
}
