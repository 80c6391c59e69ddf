//! The state machine's host: applies committed batches to [`State`], hands their effects to the
//! outbox once the node is live, and keeps snapshots in a file beside the log.

// openraft's storage traits fix `StorageError` (large) as the error type of every call.
#![allow(clippy::result_large_err)]

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use distriqueue_core::machine::MachineConfig;
use distriqueue_core::{ControlMessage, Effect, JobStatus, State, WorkerId};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::outbox::{EffectSender, Waiting};
use crate::raft::{NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Current format tag of the snapshot file.
const SNAPSHOT_FORMAT: u32 = 1;

/// The snapshot file's content.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: State,
}

/// What the host holds under one lock.
struct Inner {
    state: State,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    /// Where effects go once the node is live; `None` while replaying the log at start-up, whose
    /// effects the recovery scan of [`StateMachineStore::go_live`] replaces.
    effects: Option<EffectSender>,
    /// The metadata of the snapshot file on disk, if one was written.
    current_snapshot: Option<SnapshotMeta<NodeId, BasicNode>>,
}

/// The state machine store handed to openraft. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
    snapshot_path: PathBuf,
}

fn snapshot_error(error: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&error)).into()
}

impl StateMachineStore {
    /// Opens the host over `data_dir`, starting from the snapshot file when there is one.
    ///
    /// Errors: the snapshot file exists but cannot be read or decoded.
    pub fn open(
        data_dir: &Path,
        config: MachineConfig,
    ) -> Result<StateMachineStore, std::io::Error> {
        let snapshot_path = data_dir.join("snapshot.json");
        let snapshot: Option<SnapshotFile> = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                if file.format != SNAPSHOT_FORMAT {
                    return Err(std::io::Error::other(format!(
                        "{}: snapshot format {} is not {SNAPSHOT_FORMAT}",
                        snapshot_path.display(),
                        file.format
                    )));
                }
                Some(file)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let inner = match snapshot {
            Some(file) => Inner {
                last_applied: file.meta.last_log_id,
                last_membership: file.meta.last_membership.clone(),
                current_snapshot: Some(file.meta),
                state: file.state,
                effects: None,
            },
            None => Inner {
                state: State::new(config),
                last_applied: None,
                last_membership: StoredMembership::default(),
                effects: None,
                current_snapshot: None,
            },
        };
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(inner)),
            snapshot_path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Reads the current state.
    pub fn read<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        read(&self.lock().state)
    }

    /// Switches to live operation: from now on every applied batch's effects go to `effects`.
    /// First, in the same critical section, it sends what a restarted node must carry out again:
    /// every event past the committed watermark (DESIGN.md, rule 6), every QUEUED attempt whose
    /// message may be missing, and every timer a live job waits on.
    ///
    /// A QUEUED attempt's message may be missing when it was queued past the watermark (the
    /// outbox confirms a dispatch before the events of its entry, so everything up to the
    /// watermark was confirmed), or, with `transport_keeps_jobs` false (the in-process
    /// transport of `serve`), always. Returns the other QUEUED attempts, oldest first: their
    /// messages wait in RabbitMQ, and the outbox watches them (issue 13: a confirmed message is
    /// not published again while it waits its turn).
    pub(crate) fn go_live(
        &self,
        effects: EffectSender,
        transport_keeps_jobs: bool,
    ) -> Vec<Waiting> {
        let mut inner = self.lock();
        let mut recovery: Vec<Effect> = inner
            .state
            .unpublished()
            .map(|event| Effect::Emit(Box::new(event.clone())))
            .collect();
        // A stop the previous leader committed but may not have sent: an attempt cancelled or
        // timed out while a worker ran it (a worker ignores a stop for an attempt it does not
        // run).
        recovery.extend(inner.state.unpublished().filter_map(|event| {
            let stopped = matches!(
                event.status,
                JobStatus::Cancelled | JobStatus::Timeout | JobStatus::Retrying
            );
            let worker_id = event.worker_id.clone().filter(|_| stopped)?;
            Some(Effect::StopAttempt(ControlMessage::Cancel {
                worker_id: WorkerId(worker_id),
                job_id: event.job_id,
                attempt: event.attempt,
            }))
        }));
        let confirmed_upto = if transport_keeps_jobs {
            inner.state.published_upto()
        } else {
            0
        };
        let mut waiting = Vec::new();
        for record in inner.state.queued() {
            if record.queued_seq > confirmed_upto {
                recovery.push(Effect::Dispatch(Box::new(record.message())));
            } else {
                waiting.push(Waiting {
                    id: record.id,
                    attempt: record.attempt,
                    priority: record.spec.priority,
                });
            }
        }
        recovery.extend(inner.state.timers().into_iter().map(Effect::ArmTimer));
        if !recovery.is_empty() {
            tracing::info!(
                n_effects = recovery.len(),
                "resuming dispatches and events after start"
            );
            effects.send(recovery);
        }
        inner.effects = Some(effects);
        waiting
    }

    /// Stops handing effects out (this node stopped leading): effects of entries applied from
    /// now on are dropped, and a later [`StateMachineStore::go_live`] derives again what is
    /// pending from the state.
    pub fn go_offline(&self) {
        self.lock().effects = None;
    }

    fn write_snapshot_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Encodes and writes the snapshot file off the async threads; returns the file's bytes and
    /// hands the file back.
    async fn persist(&self, file: SnapshotFile) -> StorageResult<(Vec<u8>, SnapshotFile)> {
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec(&file).map_err(snapshot_error)?;
            StateMachineStore::write_snapshot_file(&path, &bytes).map_err(snapshot_error)?;
            Ok((bytes, file))
        })
        .await
        .map_err(snapshot_error)?
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let file = {
            let inner = self.lock();
            let snapshot_id = match inner.last_applied {
                Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
                None => "empty".to_string(),
            };
            SnapshotFile {
                format: SNAPSHOT_FORMAT,
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.last_membership.clone(),
                    snapshot_id,
                },
                state: inner.state.clone(),
            }
        };
        let (bytes, file) = self.persist(file).await?;
        self.lock().current_snapshot = Some(file.meta.clone());
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Vec<distriqueue_core::Outcome>>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Vec::new()),
                EntryPayload::Membership(membership) => {
                    inner.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Vec::new());
                }
                EntryPayload::Normal(batch) => {
                    let (outcomes, effects) = inner.state.apply(&batch);
                    if let (Some(sender), false) = (&inner.effects, effects.is_empty()) {
                        // The outbox lives as long as the node; after shutdown nothing needs effects.
                        sender.send(effects);
                    }
                    responses.push(outcomes);
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut file: SnapshotFile =
            tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
                .await
                .map_err(snapshot_error)?
                .map_err(snapshot_error)?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(snapshot_error(std::io::Error::other(format!(
                "snapshot format {} is not {SNAPSHOT_FORMAT}",
                file.format
            ))));
        }
        file.meta = meta.clone();
        let (_, file) = self.persist(file).await?;
        let mut inner = self.lock();
        inner.state = file.state;
        inner.last_applied = meta.last_log_id;
        inner.last_membership = meta.last_membership.clone();
        inner.current_snapshot = Some(file.meta);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(meta) = self.lock().current_snapshot.clone() else {
            return Ok(None);
        };
        let path = self.snapshot_path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(snapshot_error)?
            .map_err(snapshot_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
