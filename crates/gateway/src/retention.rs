//! Read-model retention (issue 13, item 5; `--retention`): finished jobs that ended longer ago
//! than the window leave the read model, [`BATCH`] rows per statement with a pause between
//! statements, so the event feed's writes (SQLite has one writer) wait at most one short batch.
//! Every gateway sharing a database may run it: a row already removed is simply not found again.

use std::time::Duration;

use distriqueue_core::time::Millis;
use distriqueue_store::Store;
use distriqueue_util::clock;
use distriqueue_util::error_chain;

/// Rows removed per statement.
const BATCH: u32 = 500;

/// The pause between two batches while there is more to remove.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// The longest pause after a pass that found nothing more to remove (or failed).
const BETWEEN_PASSES: Duration = Duration::from_secs(60);

/// Removes finished jobs that ended more than `window` ago, for ever: a pass at start, then one
/// every minute (every half window for a window under two minutes, at least a second apart). A
/// failed batch is logged and tried again at the next pass.
pub(crate) async fn run(store: Store, window: Duration) {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let between_passes = BETWEEN_PASSES.min(window / 2).max(Duration::from_secs(1));
    loop {
        let cutoff = Millis(clock::now().0.saturating_sub(window_ms));
        let mut removed: u64 = 0;
        loop {
            match store.purge_finished(cutoff, BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    removed += n;
                    crate::metrics::record_removed(n);
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "retention: could not remove finished jobs; trying again later");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                before = %cutoff.to_iso(),
                "retention: finished jobs left the read model"
            );
        }
        tokio::time::sleep(between_passes).await;
    }
}
