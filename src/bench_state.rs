//! `distriqueue bench --state N`: the replicated state machine with N jobs, half of them live
//! (QUEUED) and half finished (CANCELLED, kept as tombstones), each with an idempotency key
//! (issue 13, item 4: a snapshot never blocks `apply` or heartbeats for more than a few
//! milliseconds at 1,000,000 jobs). Builds the state through `State::apply` in entries of 1,000
//! commands, then times, five times each: the clone a snapshot takes under the state lock, the
//! first entry applied after that clone (it copies the paths it writes), an entry in steady state,
//! and the snapshot's encoding (outside the lock). Prints the median and the slowest of each,
//! the build rate and the resident memory, then one JSON line.

use std::time::Instant;

use distriqueue_core::machine::{MachineConfig, RetryPolicy};
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{Batch, Command, JobId, Millis, State};
use serde_json::json;

/// Commands per applied entry.
const ENTRY: usize = 1_000;
/// Runs of each timing.
const RUNS: usize = 5;

/// An entry registering jobs `range` under fresh ids (the gateway's, time-ordered), each with
/// a small payload and its own idempotency key; returns the entry and the ids.
fn registers(range: std::ops::Range<usize>, now: Millis) -> anyhow::Result<(Batch, Vec<JobId>)> {
    let mut commands = Vec::with_capacity(range.len());
    let mut ids = Vec::with_capacity(range.len());
    for n in range {
        let id = distriqueue_util::clock::new_job_id();
        ids.push(id);
        let priority = ["LOW", "MEDIUM", "HIGH", "CRITICAL"][n % 4];
        let request = json!({
            "type": format!("type-{}", n % 10),
            "jobPriority": priority,
            "payload": {"n": n, "to": "someone@example.com"},
            "idempotencyKey": format!("key-{n}"),
        });
        let spec = parse_job_request(&request, "")
            .map_err(|violations| anyhow::anyhow!("invalid synthetic job: {violations:?}"))?;
        commands.push(Command::Register {
            id,
            spec: Box::new(spec),
            max_queued: None,
            max_queued_bytes: None,
            policy: RetryPolicy::default(),
        });
    }
    let batch = Batch {
        now,
        seed: 7,
        commands,
    };
    Ok((batch, ids))
}

/// Applies `batch`, then acknowledges its events (as the watermark would), so that the
/// unpublished buffer does not grow.
fn apply(state: &mut State, batch: &Batch) -> f64 {
    let started = Instant::now();
    state.apply(batch);
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let upto = state.last_seq();
    state.apply(&Batch {
        now: batch.now,
        seed: 0,
        commands: vec![Command::AckEvents { upto }],
    });
    elapsed
}

/// The process's resident memory in MiB, from /proc (0 where there is none).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs the benchmark on a state of `n_jobs` jobs.
///
/// # Errors
/// None in practice: a synthetic job the validation refuses.
pub fn run(n_jobs: usize) -> anyhow::Result<()> {
    let config = MachineConfig {
        // Nothing ages out while the state is built and timed.
        tombstone_retention_ms: i64::MAX / 4,
        idempotency_retention_ms: i64::MAX / 4,
        max_tombstones: usize::MAX,
        max_keys: usize::MAX,
    };
    let mut state = State::new(config);
    let now = distriqueue_util::clock::now();
    let memory_before = resident_mib();
    let started = Instant::now();
    let mut n = 0;
    while n < n_jobs {
        let end = (n + ENTRY).min(n_jobs);
        let (entry, ids) = registers(n..end, now)?;
        apply(&mut state, &entry);
        // Every other job finishes: a tombstone.
        let cancels = ids
            .into_iter()
            .skip(1)
            .step_by(2)
            .map(|id| Command::Cancel { id })
            .collect();
        apply(
            &mut state,
            &Batch {
                now,
                seed: 0,
                commands: cancels,
            },
        );
        n = end;
    }
    let build_s = started.elapsed().as_secs_f64();
    let memory = resident_mib() - memory_before;
    println!(
        "state of {n_jobs} jobs ({} live, {} finished) built in {build_s:.1} s ({:.0} commands/s), {memory:.0} MiB resident",
        n_jobs - n_jobs / 2,
        n_jobs / 2,
        (n_jobs + n_jobs / 2) as f64 / build_s
    );

    let mut clones = Vec::new();
    let mut first_entries = Vec::new();
    let mut steady_entries = Vec::new();
    let mut encodings = Vec::new();
    let mut next = n_jobs;
    for _ in 0..RUNS {
        let started = Instant::now();
        let snapshot = state.clone();
        clones.push(started.elapsed().as_secs_f64() * 1000.0);
        first_entries.push(apply(&mut state, &registers(next..next + ENTRY, now)?.0));
        next += ENTRY;
        steady_entries.push(apply(&mut state, &registers(next..next + ENTRY, now)?.0));
        next += ENTRY;
        let started = Instant::now();
        let bytes = serde_json::to_vec(&snapshot)?;
        encodings.push(started.elapsed().as_secs_f64() * 1000.0);
        drop((snapshot, bytes));
    }
    let mut figures = serde_json::Map::new();
    for (name, samples) in [
        ("snapshot clone under the lock", clones),
        ("first entry of 1000 after a clone", first_entries),
        ("entry of 1000 registers", steady_entries),
        ("snapshot encoding (outside the lock)", encodings),
    ] {
        crate::bench::report_timing(&mut figures, name, crate::bench::median_and_max(samples));
    }
    println!(
        "{}",
        json!({"state_jobs": n_jobs, "build_s": build_s, "resident_mib": memory, "timings": figures})
    );
    Ok(())
}
