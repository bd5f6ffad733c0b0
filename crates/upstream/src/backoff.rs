//! Jittered exponential backoff ("full jitter"): each wait is uniform in
//! `[0, min(cap, base * 2^attempt)]`, so reconnects from many proxies spread
//! out instead of arriving at a recovering Redis in waves.

use rand::Rng;
use std::time::Duration;

/// Backoff state for one reconnecting connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never waiting longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next wait; grows with each call until [`reset`](Self::reset).
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms.max(1)))
    }

    /// Back to the first, shortest wait (after a successful connect).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `d` scaled by a random factor in `[1 - frac, 1 + frac]`.
pub fn jitter(d: Duration, frac: f64) -> Duration {
    let f = rand::thread_rng().gen_range((1.0 - frac)..=(1.0 + frac));
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_millis(500));
        }
        // After many attempts the ceiling is the cap: over 200 draws some
        // must exceed the early ceiling of 10 ms.
        assert!((0..200).any(|_| b.next_delay() > Duration::from_millis(20)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_stays_within_fraction() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(250), 0.2);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(300));
        }
    }
}
