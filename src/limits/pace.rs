//! Upload bodies in time: pacing to `MaxBytesPerSecond`, and when a body read must give up
//! (`BodyTimeout`, `MinBodyRate`).

use std::time::{Duration, Instant};

/// Below this, a pacing delay is not worth a timer.
const MIN_DELAY: Duration = Duration::from_millis(5);

/// How long to wait so that `bytes` received since the body started, `elapsed` ago, do not
/// exceed `rate` bytes per second. None: on or behind schedule.
pub fn pace_delay(rate: u64, bytes: u64, elapsed: Duration) -> Option<Duration> {
    if rate == 0 {
        return None;
    }
    // try_: a schedule beyond what Duration holds is no reason to panic (rates come from config).
    let due = Duration::try_from_secs_f64(bytes as f64 / rate as f64).ok()?;
    let wait = due.checked_sub(elapsed)?;
    (wait >= MIN_DELAY).then_some(wait)
}

/// One upload body's schedule. Reads are capped at about a tenth of a second's budget
/// (`read_size`); after each read that put the body ahead of its schedule, the upload sleeps
/// once until the schedule catches up, so a paced upload costs one timer per read at most and
/// nothing while it is slower than the limit.
pub struct Pace {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    /// None when `rate` is 0 (unlimited).
    pub fn new(rate: u64) -> Option<Pace> {
        (rate > 0).then(|| Pace {
            rate,
            start: Instant::now(),
            bytes: 0,
        })
    }

    /// Account `n` more bytes; sleep if they came too fast.
    pub async fn received(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(wait) = pace_delay(self.rate, self.bytes, self.start.elapsed()) {
            monoio::time::sleep(wait).await;
        }
    }

    /// A read size that keeps one read within about a tenth of a second of the budget, so the
    /// pacing stays smooth with large chunk buffers.
    pub fn read_size(&self, max: usize) -> usize {
        max.min((self.rate / 10).max(4096) as usize)
    }
}

/// When a body read must give up, and why: `idle` after the last byte arrived, or, once the
/// body has run `idle` since `start`, as soon as its average rate would fall below `min_rate`
/// bytes per second (0: no such floor). A client that drips a byte now and then would
/// otherwise hold its connection and temporary file for ever.
pub fn body_deadline(
    start: Instant,
    last: Instant,
    received: u64,
    idle: Duration,
    min_rate: u64,
) -> (Instant, &'static str) {
    let stalled = last + idle;
    if min_rate == 0 {
        return (stalled, "request body");
    }
    let allowed = Duration::try_from_secs_f64(received as f64 / min_rate as f64).unwrap_or(Duration::MAX);
    match start.checked_add(allowed.max(idle)) {
        Some(slow) if slow < stalled => (slow, "request body slower than MinBodyRate"),
        _ => (stalled, "request body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_waits_only_when_ahead() {
        assert_eq!(pace_delay(0, 1 << 30, Duration::ZERO), None, "0 is unlimited");
        // 1000 B/s, 500 B after 0.1 s: due at 0.5 s.
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(100)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(600)),
            None,
            "behind schedule"
        );
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(498)),
            None,
            "too small to wait"
        );
        assert_eq!(
            pace_delay(u64::MAX, u64::MAX, Duration::ZERO),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn body_deadlines() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // No floor: idle time after the last byte.
        assert_eq!(body_deadline(t0, t0 + s(5), 10, s(60), 0), (t0 + s(65), "request body"));
        // 1 KiB/s floor, 10 KiB in: allowed 60 s (the idle time is the minimum) ...
        assert_eq!(body_deadline(t0, t0 + s(1), 10 << 10, s(60), 1024).0, t0 + s(60));
        // ... 600 KiB in: allowed 600 s, but a stall still ends it 60 s after the last byte.
        assert_eq!(
            body_deadline(t0, t0 + s(100), 600 << 10, s(60), 1024),
            (t0 + s(160), "request body")
        );
        // A drip: one byte a second keeps resetting the idle timer, not the rate floor.
        let (at, why) = body_deadline(t0, t0 + s(119), 119, s(60), 1024);
        assert_eq!((at, why), (t0 + s(60), "request body slower than MinBodyRate"));
        assert!(body_deadline(t0, t0, u64::MAX, s(60), 1).0 >= t0 + s(60));
    }
}
