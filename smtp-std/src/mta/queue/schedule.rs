//! When to try again and when to give up: pure functions of the attempts made and the age,
//! so the retry logic is tested without sleeping.

use std::time::Duration;

/// The retry schedule (`[queue]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Waits after the 1st, 2nd, ... failed attempt; the last one repeats.
    pub retry: Vec<Duration>,
    /// Give up (bounce) once a message is this old.
    pub lifetime: Duration,
    /// Tell the sender once when a message is still undelivered after this long (zero: never).
    pub delay_warning: Duration,
}

impl Default for Schedule {
    /// Postfix's measured behaviour: 5m, 10m, 20m, 40m, 80m, then every 2h (Postfix: ~67m,
    /// capped at 4000 s); give up after 5 days; the delay notice after 4 hours.
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        Self {
            retry: vec![m(5), m(10), m(20), m(40), m(80), m(120)],
            lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }
}

impl Schedule {
    /// The wait after `attempts` attempts (1 for the first), with up to 10% of jitter taken from
    /// `seed` (any number that differs between messages, e.g. from the entry's id), so that
    /// messages deferred together do not all come back at once.
    pub fn delay(&self, attempts: u32, seed: u64) -> Duration {
        let Some(last) = self.retry.last() else {
            return Duration::from_secs(300);
        };
        let i = (attempts.max(1) as usize - 1).min(self.retry.len() - 1);
        let base = self.retry.get(i).unwrap_or(last);
        // A multiplicative hash spreads nearby seeds; 0..=100 per mille of 10%.
        let spread = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1023
        base.mul_f64(1.0 + 0.1 * (spread as f64 / 1023.0))
    }

    /// Whether a message of `age` has run out of time.
    pub fn expired(&self, age: Duration) -> bool {
        age >= self.lifetime
    }

    /// Whether the delay notice is due for a message of `age`.
    pub fn delay_notice_due(&self, age: Duration) -> bool {
        !self.delay_warning.is_zero() && age >= self.delay_warning
    }
}

/// A seed for [`Schedule::delay`] from an entry id.
pub fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_step_repeats_with_bounded_jitter() {
        let s = Schedule { retry: vec![Duration::from_secs(1), Duration::from_secs(2)], ..Schedule::default() };
        for seed in [0, 1, 42, u64::MAX] {
            let d1 = s.delay(1, seed);
            assert!(d1 >= Duration::from_secs(1) && d1 <= Duration::from_millis(1100), "{d1:?}");
            for n in [2, 3, 50] {
                let d = s.delay(n, seed);
                assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200), "{n}: {d:?}");
            }
        }
        assert_ne!(s.delay(1, seed("a")), s.delay(1, seed("b")));
    }

    #[test]
    fn postfix_like_defaults() {
        let s = Schedule::default();
        let mins = |n: u32| s.delay(n, 0).as_secs() / 60;
        assert_eq!([mins(1), mins(2), mins(3), mins(4), mins(5), mins(6), mins(9)], [5, 10, 20, 40, 80, 120, 120]);
        assert!(!s.expired(Duration::from_secs(4 * 86_400)) && s.expired(Duration::from_secs(5 * 86_400)));
        assert!(s.delay_notice_due(Duration::from_secs(4 * 3600)) && !s.delay_notice_due(Duration::from_secs(3600)));
        let off = Schedule { delay_warning: Duration::ZERO, ..s };
        assert!(!off.delay_notice_due(Duration::from_secs(86_400 * 4)));
    }
}
