//! The ledger (`--ledger FILE`): a testing aid that appends one JSON line per handler start and
//! finish, `{"event":"start"|"finish","jobId","attempt","workerId","ts"}` (DESIGN.md, "Tests").

use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use distriqueue_core::{JobId, WorkerId};
use distriqueue_util::clock;
use serde_json::json;

/// An append-only ledger file shared by a worker's slots.
pub struct Ledger {
    file: Mutex<File>,
}

impl Ledger {
    /// Opens `path` for appending, creating it.
    pub fn open(path: &Path) -> std::io::Result<Ledger> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Ledger {
            file: Mutex::new(file),
        })
    }

    /// Appends one line; `event` is `start` or `finish`. Each line is written by one `write`
    /// call before the worker reports, so a kill -9 after the report cannot lose it.
    pub fn record(&self, event: &str, job_id: JobId, attempt: u32, worker_id: &WorkerId) {
        let line = json!({
            "event": event, "jobId": job_id, "attempt": attempt, "workerId": worker_id, "ts": clock::now().to_iso(),
        });
        let mut text = line.to_string();
        text.push('\n');
        let mut file = self.file.lock();
        if let Err(error) = file.write_all(text.as_bytes()) {
            tracing::error!(%error, "cannot write the ledger");
        }
    }
}
