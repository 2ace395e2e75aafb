//! Which SQL Server failures are worth another attempt, and how long to wait before it.

use std::time::Duration;

use tiberius::error::Error as TdsError;

/// What a failure says about the work that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transient {
    /// The server refused or rolled back the request: nothing of it happened, so any statement
    /// may run again. Deadlock victim (1205), lock timeout (1222, rolled back whole under
    /// `XACT_ABORT`), and Azure SQL's transient set: database unavailable or moving (40613,
    /// 40197, 40501, 49918–49920), login failures while a database starts or fails over (4060,
    /// 4221), resource limits (10928, 10929).
    RolledBack,
    /// The connection broke (reset, closed, timed out) with the request in flight: it may or may
    /// not have committed, so only a statement that is harmless to repeat may run again.
    ConnectionLost,
    /// Not transient: a mistake in the request or the data.
    No,
}

/// Sorts a tiberius error into [`Transient`].
pub(super) fn classify(e: &TdsError) -> Transient {
    match e {
        TdsError::Server(t) => classify_code(t.code()),
        TdsError::Io { .. } | TdsError::Routing { .. } => Transient::ConnectionLost,
        // A stream that stops parsing mid-response is a connection whose state is unknown.
        TdsError::Protocol(_) => Transient::ConnectionLost,
        _ => Transient::No,
    }
}

/// Sorts a server error number into [`Transient`].
fn classify_code(code: u32) -> Transient {
    match code {
        1205 | 1222 | 40613 | 40197 | 40501 | 49918 | 49919 | 49920 | 4060 | 4221 | 10928
        | 10929 => Transient::RolledBack,
        _ => Transient::No,
    }
}

/// How a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::db) enum Retry {
    /// Running the statement twice leaves the same state as once (reads, upserts, heartbeats,
    /// conditional updates whose second run finds nothing to do).
    Idempotent,
    /// Only when the server says nothing happened: inserts, claims, anything whose repeat would
    /// do the work twice or whose first result would be lost.
    RolledBackOnly,
}

/// Attempts per call, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 5;
const BASE_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

impl Retry {
    /// The wait before attempt `attempt + 1`, or `None` when the failure is final.
    pub(super) fn delay(self, class: Transient, attempt: u32) -> Option<Duration> {
        let retryable = match class {
            Transient::RolledBack => true,
            Transient::ConnectionLost => self == Retry::Idempotent,
            Transient::No => false,
        };
        (retryable && attempt < MAX_ATTEMPTS).then(|| backoff(attempt, random_fraction()))
    }
}

/// Exponential backoff with jitter: between half and all of `BASE_DELAY * 2^(attempt-1)`,
/// capped at `MAX_DELAY`. `fraction` (0..1) picks the point, so that nodes retrying the same
/// failover spread out instead of arriving together.
fn backoff(attempt: u32, fraction: f64) -> Duration {
    let full = BASE_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_DELAY);
    full.mul_f64(0.5 + 0.5 * fraction.clamp(0.0, 1.0))
}

fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return 1.0;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlocks_lock_timeouts_and_azure_transients_are_rolled_back() {
        for code in [
            1205, 1222, 40613, 40197, 40501, 49918, 49919, 49920, 4060, 4221,
        ] {
            assert_eq!(classify_code(code), Transient::RolledBack, "{code}");
        }
    }

    #[test]
    fn request_errors_are_final() {
        // duplicate key, unique index, syntax, permission, conversion, foreign key
        for code in [2627, 2601, 102, 229, 245, 547] {
            assert_eq!(classify_code(code), Transient::No, "{code}");
        }
        let tls = TdsError::Tls("bad certificate".into());
        assert_eq!(classify(&tls), Transient::No);
    }

    #[test]
    fn broken_connections_are_connection_lost() {
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let e = TdsError::Io {
                kind,
                message: "gone".into(),
            };
            assert_eq!(classify(&e), Transient::ConnectionLost, "{kind:?}");
        }
    }

    #[test]
    fn only_idempotent_calls_retry_after_a_lost_connection() {
        assert!(Retry::Idempotent
            .delay(Transient::ConnectionLost, 1)
            .is_some());
        assert!(Retry::RolledBackOnly
            .delay(Transient::ConnectionLost, 1)
            .is_none());
        assert!(Retry::RolledBackOnly
            .delay(Transient::RolledBack, 1)
            .is_some());
        assert!(Retry::Idempotent.delay(Transient::No, 1).is_none());
    }

    #[test]
    fn attempts_are_bounded() {
        assert!(Retry::Idempotent
            .delay(Transient::RolledBack, MAX_ATTEMPTS - 1)
            .is_some());
        assert!(Retry::Idempotent
            .delay(Transient::RolledBack, MAX_ATTEMPTS)
            .is_none());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(25));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(30, 1.0), MAX_DELAY);
        assert_eq!(backoff(30, 0.0), MAX_DELAY / 2);
        let r = random_fraction();
        assert!((0.0..=1.0).contains(&r));
    }
}
