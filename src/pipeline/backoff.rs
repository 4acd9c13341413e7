//! How long to wait before reconnecting after a transient error.

use std::time::Duration;

/// Capped exponential backoff with jitter.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    /// Lag grows while pgbridge waits: retry a down server at least this often.
    const CAP: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(crate) fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            last = backoff.step();
            assert!(last <= Backoff::CAP.mul_f64(1.1));
        }
        assert!(last >= Backoff::CAP.mul_f64(0.9));
        backoff.reset();
        assert!(backoff.step() <= Backoff::FIRST.mul_f64(1.1));
    }
}
