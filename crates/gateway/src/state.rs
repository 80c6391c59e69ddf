//! [`AppState`]: what every route shares — the read model, the orchestrator, the settings and
//! the SSE fan-out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distriqueue_broker::EventReceiver;
use distriqueue_store::Store;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::feed::{FeedRole, RecentSeqs};
use crate::sse::{SseUpdate, SSE_BUFFER};
use crate::writer::StoreWriter;
use crate::{GatewayConfig, Orchestrator};

/// The routes' shared state. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) writer: StoreWriter,
    pub(crate) orchestrator: Arc<dyn Orchestrator>,
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) updates: broadcast::Sender<Arc<SseUpdate>>,
    /// The `seq` of the last event sent to SSE subscribers (0 before the first).
    pub(crate) last_broadcast_seq: Arc<AtomicU64>,
    /// What was sent to SSE subscribers lately (each event once, whichever feed brings it).
    pub(crate) recent_seqs: Arc<parking_lot::Mutex<RecentSeqs>>,
    /// Cancelled at shutdown: every open SSE stream ends.
    streams_closed: CancellationToken,
    /// One permit per open SSE stream, [`MAX_SSE_CLIENTS`] in all.
    pub(crate) sse_slots: Arc<tokio::sync::Semaphore>,
    /// The orchestrators' last answers to `cluster_status` (the dashboard's cluster and workers
    /// views reuse them for a second).
    pub(crate) cluster_answers: Arc<tokio::sync::Mutex<Option<ClusterAnswers>>>,
    /// The workers `GET /api/workers` saw, by id, with when it last saw each alive (the
    /// dashboard lists a lost worker for an hour).
    pub(crate) workers_seen: Arc<parking_lot::Mutex<WorkersSeen>>,
}

/// The orchestrators' answers to `cluster_status`, with when they came.
pub(crate) type ClusterAnswers = (std::time::Instant, Arc<Vec<crate::NodeAnswer>>);

/// Workers by id: how the leader last showed each, and when.
pub(crate) type WorkersSeen = std::collections::BTreeMap<
    String,
    (distriqueue_core::api::WorkerView, distriqueue_core::Millis),
>;

/// Most SSE streams one gateway serves at once (issue 11): each holds a connection and a
/// subscription; the next gets 429 until one closes.
pub const MAX_SSE_CLIENTS: usize = 512;

impl AppState {
    /// State over a read model and an orchestrator. `config.addr` is not used here.
    pub fn new(
        store: Store,
        orchestrator: Arc<dyn Orchestrator>,
        config: GatewayConfig,
    ) -> AppState {
        let (updates, _) = broadcast::channel(SSE_BUFFER);
        AppState {
            writer: StoreWriter::spawn(store.clone()),
            store,
            orchestrator,
            config: Arc::new(config),
            updates,
            last_broadcast_seq: Arc::new(AtomicU64::new(0)),
            recent_seqs: Arc::default(),
            streams_closed: CancellationToken::new(),
            sse_slots: Arc::new(tokio::sync::Semaphore::new(MAX_SSE_CLIENTS)),
            workers_seen: Arc::default(),
            cluster_answers: Arc::default(),
        }
    }

    /// Spawns the event consumer of [`crate::Gateway::consume_events`] over this state (tests
    /// call it without a socket).
    pub fn consume_events(&self, events: EventReceiver, role: FeedRole) -> watch::Receiver<u64> {
        crate::feed::spawn(self.clone(), events, role)
    }

    /// A token that ends every open SSE stream when cancelled (the gateway's `run` cancels it
    /// at shutdown).
    pub fn streams_closed(&self) -> CancellationToken {
        self.streams_closed.clone()
    }

    pub(crate) fn last_broadcast_seq(&self) -> u64 {
        self.last_broadcast_seq.load(Ordering::Acquire)
    }
}
