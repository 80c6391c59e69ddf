//! The wall clock and random numbers, read only at the edges (hosts, gateways, workers): the
//! state machine of `distriqueue-core` gets time and randomness stamped into each `Batch`.

use std::time::{SystemTime, UNIX_EPOCH};

use distriqueue_core::{JobId, Millis};

/// The wall clock now, in milliseconds since the Unix epoch (UTC). A clock before 1970 reads 0.
pub fn now() -> Millis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh random (v4) job id: the gateway mints one per submitted job (CONTRACT.md "The id is
/// a server-made UUID").
pub fn new_job_id() -> JobId {
    JobId(uuid::Uuid::new_v4())
}

/// 64 random bits: the leader's seed for a log entry, the source of backoff jitter and lease
/// tokens that every node then replays alike. A v4 UUID has 122 random bits; its halves are
/// folded so that the fixed version and variant bits of one meet random bits of the other.
pub fn random_u64() -> u64 {
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    high ^ low.rotate_left(32)
}

/// A short random text (8 hex digits) to tell apart ids minted by one process, such as a
/// worker instance's.
pub fn random_suffix() -> String {
    format!("{:08x}", random_u64() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_ids_differ() {
        assert!(now().0 > 1_577_836_800_000);
        assert_ne!(new_job_id(), new_job_id());
        assert_eq!(random_suffix().len(), 8);
    }
}
