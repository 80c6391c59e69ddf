//! [`Batcher`]: concurrent calls gathered into one write (DESIGN.md "Hot paths batch": many
//! commands per log entry, many rows per SQL statement, one HTTP request per burst).

use std::fmt;
use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// One waiting item and, when its caller wants one, where its answer goes.
type Waiting<T, R> = (T, Option<oneshot::Sender<R>>);

/// Gathers concurrent calls into batches: whatever waits (up to `max` items) goes to one call
/// of `send`, which answers each item in order. One batch is in flight at a time, so while it
/// is written the next one gathers everything that arrives meanwhile (group commit): under load
/// batches grow instead of queueing. Cheap to clone; clones feed the same task, which ends when
/// every clone is dropped.
///
/// Used for the orchestrator's log entries (commands per entry), the gateway's read-model
/// writes (rows per upsert) and registers (jobs per request), and a worker's reports.
pub struct Batcher<T, R> {
    sender: mpsc::Sender<Waiting<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Batcher<T, R> {
        Batcher {
            sender: self.sender.clone(),
        }
    }
}

impl<T, R> fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("closed", &self.sender.is_closed())
            .finish()
    }
}

/// The batcher's task has ended (its `send` panicked, or the runtime is shutting down): the
/// item was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherStopped;

impl fmt::Display for BatcherStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the batching task stopped")
    }
}

impl std::error::Error for BatcherStopped {}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Spawns the batching task on the current Tokio runtime. At most `capacity` items wait;
    /// past that, callers wait for room. `send` gets each batch (1 to `max` items, in arrival
    /// order) and returns one answer per item, in the same order; an item left without an
    /// answer gets [`BatcherStopped`].
    pub fn start<F, Fut>(max: usize, capacity: usize, send: F) -> Batcher<T, R>
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        Batcher::start_weighted(max, capacity, |_| 1, send)
    }

    /// Like [`Batcher::start`], but a batch holds items of at most `max_weight` in all, each
    /// item weighing `weight(item)` (at least 1): an item heavier than `max_weight` goes
    /// alone, never split. The orchestrator's proposer weighs a group of commands by its
    /// length, so a log entry holds at most `max_weight` commands unless one group is larger.
    pub fn start_weighted<W, F, Fut>(
        max_weight: usize,
        capacity: usize,
        weight: W,
        mut send: F,
    ) -> Batcher<T, R>
    where
        W: Fn(&T) -> usize + Send + 'static,
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (sender, mut incoming) = mpsc::channel::<Waiting<T, R>>(capacity.max(1));
        tokio::spawn(async move {
            // An item that did not fit the last batch starts the next one.
            let mut carried: Option<Waiting<T, R>> = None;
            loop {
                let first = match carried.take() {
                    Some(first) => first,
                    None => match incoming.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                let mut total = weight(&first.0).max(1);
                let mut waiting = vec![first];
                while total < max_weight {
                    let Ok(next) = incoming.try_recv() else { break };
                    let next_weight = weight(&next.0).max(1);
                    if total + next_weight > max_weight {
                        carried = Some(next);
                        break;
                    }
                    total += next_weight;
                    waiting.push(next);
                }
                let (items, replies): (Vec<T>, Vec<_>) = waiting.into_iter().unzip();
                for (reply, answer) in replies.into_iter().zip(send(items).await) {
                    if let Some(reply) = reply {
                        // A caller that stopped waiting does not need the answer.
                        let _ = reply.send(answer);
                    }
                }
            }
        });
        Batcher { sender }
    }

    /// Sends `item` with the next batch and waits for its answer.
    ///
    /// Errors: [`BatcherStopped`] when the task has ended or gave no answer for the item.
    pub async fn call(&self, item: T) -> Result<R, BatcherStopped> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, Some(reply)))
            .await
            .map_err(|_| BatcherStopped)?;
        answer.await.map_err(|_| BatcherStopped)
    }

    /// Sends `item` with the next batch without waiting for its answer (it waits only for room
    /// in the queue).
    ///
    /// Errors: [`BatcherStopped`] when the task has ended.
    pub async fn submit(&self, item: T) -> Result<(), BatcherStopped> {
        self.sender
            .send((item, None))
            .await
            .map_err(|_| BatcherStopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let n_batches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&n_batches);
        let batcher = Batcher::start(64, 1024, move |items: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|item| item * 10).collect()
            }
        });
        let calls: Vec<_> = (0..100)
            .map(|item| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (item, batcher.call(item).await) })
            })
            .collect();
        for call in calls {
            let (item, answer) = call.await.expect("call task");
            assert_eq!(answer, Ok(item * 10));
        }
        let n = n_batches.load(Ordering::SeqCst);
        assert!(n < 100, "100 concurrent calls took {n} batches");
    }

    #[tokio::test]
    async fn weighted_batches_never_pass_their_weight_nor_split_an_item() {
        let (seen, mut batches) = mpsc::unbounded_channel();
        let batcher = Batcher::start_weighted(
            10,
            64,
            |item: &usize| *item,
            move |items: Vec<usize>| {
                let _ = seen.send(items.clone());
                async move { items }
            },
        );
        let calls: Vec<_> = [4, 4, 4, 25, 1]
            .into_iter()
            .map(|item| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.call(item).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.expect("call task").is_ok());
        }
        drop(batcher);
        while let Some(batch) = batches.recv().await {
            let weight: usize = batch.iter().sum();
            assert!(weight <= 10 || batch.len() == 1, "batch {batch:?}");
        }
    }

    #[tokio::test]
    async fn an_item_without_an_answer_is_told_so() {
        let batcher = Batcher::start(8, 8, |_items: Vec<u32>| async { Vec::<u32>::new() });
        assert_eq!(batcher.call(1).await, Err(BatcherStopped));
        assert_eq!(batcher.submit(2).await, Ok(()));
    }
}
