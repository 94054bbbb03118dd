//! What a send may not exceed, and the pure decisions both backends make with it.
//!
//! The limits are the server's (`--quota-mb`, `--max-sends-per-minute`, `--min-free-mb`),
//! passed to every [`crate::Store::send`] rather than stored, so an operator changes them with
//! a restart and no migration. Each backend checks the quota and the rate inside the send's own
//! transaction, after taking the locks that serialise the senders and recipients concerned
//! (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the users' rows, in name order), so sends racing at
//! the edge cannot together exceed them. The free-space floor is checked before the
//! transaction, where the backend can see its disk (SQLite only).

use crate::StoreError;

/// The window of the per-sender rate.
pub const RATE_WINDOW_MS: u64 = 60_000;

/// Limits on one send; 0 in any field means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLimits {
    /// The most bytes (title and body of every delivery) a recipient's mailbox may hold: a
    /// mail that would take any recipient over it is refused.
    pub quota_bytes: u64,
    /// The most sends a sender may make in any [`RATE_WINDOW_MS`].
    pub max_per_minute: u32,
    /// Free bytes on the database's filesystem below which sends are refused (SQLite; the
    /// PostgreSQL server's disk is not visible to forkmail).
    pub min_free_bytes: u64,
}

impl SendLimits {
    /// No limit at all: imports, tests, the demo.
    pub const NONE: SendLimits = SendLimits {
        quota_bytes: 0,
        max_per_minute: 0,
        min_free_bytes: 0,
    };

    /// The refusal if a mail of `size` bytes would take `recipient`, holding `used` bytes, over
    /// the quota.
    pub(crate) fn check_quota(
        &self,
        recipient: &str,
        used: u64,
        size: u64,
    ) -> Result<(), StoreError> {
        if self.quota_bytes > 0 && used.saturating_add(size) > self.quota_bytes {
            return Err(StoreError::MailboxFull {
                recipient: recipient.to_owned(),
                quota_bytes: self.quota_bytes,
            });
        }
        Ok(())
    }

    /// The `max_per_minute`-th newest send of the sender within the window ending at `now_ms`
    /// is what the backends look up (`OFFSET max - 1`); this is the refusal if there is one:
    /// the sender may send again once it has left the window.
    pub(crate) fn check_rate(
        &self,
        sender: &str,
        now_ms: u64,
        oldest_counted_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        match oldest_counted_ms {
            Some(at_ms) if self.max_per_minute > 0 => Err(StoreError::RateLimited {
                sender: sender.to_owned(),
                max_per_minute: self.max_per_minute,
                retry_after_ms: (at_ms + RATE_WINDOW_MS).saturating_sub(now_ms).max(1),
            }),
            _ => Ok(()),
        }
    }

    /// The start of the rate's window (exclusive) and the offset of the send that fills it.
    pub(crate) fn rate_query(&self, now_ms: u64) -> Option<(i64, i64)> {
        (self.max_per_minute > 0).then(|| {
            (
                now_ms.saturating_sub(RATE_WINDOW_MS) as i64,
                i64::from(self.max_per_minute) - 1,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_refuses_only_what_would_exceed_it() {
        let limits = SendLimits {
            quota_bytes: 100,
            ..SendLimits::NONE
        };
        assert!(limits.check_quota("bob", 90, 10).is_ok());
        assert!(matches!(
            limits.check_quota("bob", 90, 11),
            Err(StoreError::MailboxFull {
                quota_bytes: 100,
                ..
            })
        ));
        assert!(SendLimits::NONE.check_quota("bob", u64::MAX, 1).is_ok());
    }

    #[test]
    fn the_rate_says_when_the_oldest_counted_send_leaves_the_window() {
        let limits = SendLimits {
            max_per_minute: 3,
            ..SendLimits::NONE
        };
        assert_eq!(limits.rate_query(100_000), Some((40_000, 2)));
        match limits.check_rate("alice", 100_000, Some(45_000)) {
            Err(StoreError::RateLimited { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, 5_000)
            }
            other => panic!("{other:?}"),
        }
        assert!(limits.check_rate("alice", 100_000, None).is_ok());
        assert_eq!(SendLimits::NONE.rate_query(100_000), None);
    }
}
