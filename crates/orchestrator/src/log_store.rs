//! The Raft log on disk: redb tables for entries and for the vote, the committed id and the
//! purge point. One write transaction (one fsync) per `append` call, so openraft's batching
//! decides the fsync rate, never one job (issue 2, item 4). The committed id is written without
//! an fsync of its own: it becomes durable with the next append.

// openraft's storage traits fix `StorageError` (large) as the error type of every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::{NodeId, TypeConfig};

/// Entries by index; values are JSON-encoded `Entry<TypeConfig>`.
const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("logs");
/// `vote`, `committed`, `last_purged`: JSON values.
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&error)).into()
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&error)).into()
}

/// The Raft log store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens or creates the log database at `path` (a file).
    ///
    /// Errors: the file cannot be created or is not a redb database.
    pub fn open(path: &Path) -> Result<LogStore, redb::DatabaseError> {
        let db = Database::create(path)?;
        Ok(LogStore { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, work: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StorageResult<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(write_error)?
    }

    fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> StorageResult<Option<T>> {
        let txn = db.begin_read().map_err(read_error)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(read_error(error)),
        };
        match table.get(key).map_err(read_error)? {
            Some(value) => serde_json::from_slice(value.value())
                .map(Some)
                .map_err(read_error),
            None => Ok(None),
        }
    }

    /// Writes one meta value. `durable` false skips the fsync: the value reaches the disk with
    /// the next durable commit (openraft lets the committed id lag behind; it never lets the
    /// vote).
    fn write_meta<T: Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durable: bool,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_error)?;
        let mut txn = db.begin_write().map_err(write_error)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(write_error)?;
        }
        {
            let mut table = txn.open_table(META).map_err(write_error)?;
            table.insert(key, bytes.as_slice()).map_err(write_error)?;
        }
        txn.commit().map_err(write_error)
    }

    fn read_range(
        db: &Database,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = db.begin_read().map_err(read_error)?;
        let table = match txn.open_table(LOGS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(read_error(error)),
        };
        let mut entries = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_error)? {
            let (_, value) = item.map_err(read_error)?;
            entries.push(serde_json::from_slice(value.value()).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| LogStore::read_range(db, start, end))
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.blocking(|db| {
            let last_purged: Option<LogId<NodeId>> = LogStore::read_meta(db, "last_purged")?;
            let txn = db.begin_read().map_err(read_error)?;
            let last = match txn.open_table(LOGS) {
                Ok(table) => match table.last().map_err(read_error)? {
                    Some((_, value)) => {
                        let entry: Entry<TypeConfig> =
                            serde_json::from_slice(value.value()).map_err(read_error)?;
                        Some(entry.log_id)
                    }
                    None => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(error) => return Err(read_error(error)),
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last.or(last_purged),
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.blocking(move |db| LogStore::write_meta(db, "vote", &vote, true))
            .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.blocking(|db| LogStore::read_meta(db, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.blocking(move |db| LogStore::write_meta(db, "committed", &committed, false))
            .await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        self.blocking(|db| {
            Ok(LogStore::read_meta::<Option<LogId<NodeId>>>(db, "committed")?.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| serde_json::to_vec(&entry).map(|bytes| (entry.log_id.index, bytes)))
            .collect::<Result<_, _>>()
            .map_err(write_error)?;
        let result = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(write_error)?;
                {
                    let mut table = txn.open_table(LOGS).map_err(write_error)?;
                    for (index, bytes) in &encoded {
                        table
                            .insert(*index, bytes.as_slice())
                            .map_err(write_error)?;
                    }
                }
                txn.commit().map_err(write_error)
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_error)?;
            {
                let mut table = txn.open_table(LOGS).map_err(write_error)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(write_error)?;
            }
            txn.commit().map_err(write_error)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(move |db| {
            let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_error)?;
            let txn = db.begin_write().map_err(write_error)?;
            {
                let mut meta = txn.open_table(META).map_err(write_error)?;
                meta.insert("last_purged", bytes.as_slice())
                    .map_err(write_error)?;
                let mut table = txn.open_table(LOGS).map_err(write_error)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(write_error)?;
            }
            txn.commit().map_err(write_error)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use distriqueue_core::machine::MachineConfig;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::state_machine::StateMachineStore;

    /// Builds a fresh log store and state machine in a temporary directory for each test.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(write_error)?;
            let log_store =
                LogStore::open(&dir.path().join("raft-log.redb")).map_err(write_error)?;
            let state_machine = StateMachineStore::open(dir.path(), MachineConfig::default())
                .map_err(write_error)?;
            Ok((dir, log_store, state_machine))
        }
    }

    /// openraft's own storage test suite against our log store and state machine (DESIGN.md,
    /// "Tests").
    #[test]
    fn openraft_storage_suite_passes() -> StorageResult<()> {
        Suite::test_all(Builder)
    }
}
