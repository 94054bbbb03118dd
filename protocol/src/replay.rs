//! Replay protection by freshness (PROTOCOL.md §12).
//!
//! Handshakes carry a nonce and a timestamp from each side. A hello whose timestamp is outside the
//! window is refused outright; one inside it is refused if its nonce was seen before. The server
//! therefore needs to remember a nonce only until its timestamp leaves the window, which is what
//! the store relies on to purge old entries (`forkmail_store::Store::record_nonce`). After the handshake every sealed
//! frame carries a timestamp checked against the same window (see [`crate::channel`]).

/// The default freshness window: timestamps within ±30 s of the receiver's clock are accepted.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;

/// Signed difference `timestamp - now`, saturating.
pub fn skew_ms(timestamp_ms: u64, now_ms: u64) -> i64 {
    let diff = timestamp_ms as i128 - now_ms as i128;
    diff.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Whether `timestamp_ms` is within `window_ms` of `now_ms`, either side. Returns the skew on
/// failure so the error can say how far off the clock is.
pub fn check_fresh(timestamp_ms: u64, now_ms: u64, window_ms: u64) -> Result<(), i64> {
    let skew = skew_ms(timestamp_ms, now_ms);
    if skew.unsigned_abs() <= window_ms {
        Ok(())
    } else {
        Err(skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_inclusive_both_ways() {
        let now = 1_000_000;
        assert_eq!(check_fresh(now, now, 30_000), Ok(()));
        assert_eq!(check_fresh(now - 30_000, now, 30_000), Ok(()));
        assert_eq!(check_fresh(now + 30_000, now, 30_000), Ok(()));
        assert_eq!(check_fresh(now - 30_001, now, 30_000), Err(-30_001));
        assert_eq!(check_fresh(now + 30_001, now, 30_000), Err(30_001));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        assert!(check_fresh(u64::MAX, 0, 30_000).is_err());
        assert!(check_fresh(0, u64::MAX, 30_000).is_err());
    }
}
