//! RabbitMQ restarted (`rabbitmqctl stop_app`, then `start_app`) while a distributed
//! DistriQueue runs 1,000 jobs: every job completes once RabbitMQ is back, none stays stuck.
//!
//! This test stops the whole RabbitMQ node, so it is alone in its test binary (cargo runs test
//! binaries one after another). It skips without `DQ_TEST_AMQP_URL`, like every service test.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::*;

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl")
        .arg(command)
        .status()
        .unwrap_or_else(|error| panic!("rabbitmqctl {command}: {error}"));
    assert!(status.success(), "rabbitmqctl {command} failed");
}

/// Starts the RabbitMQ application again when dropped, also when the test fails.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_job_completes_after_rabbitmq_restarts_mid_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start("rabbitmq_restart", dir.path(), 2, 4, 10) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let mut ids = Vec::new();
    for n in 0..500 {
        ids.push(submit_ok(&client, &gateway, &sleep_job(10, ["LOW", "HIGH"][n % 2])).await);
    }
    wait_until(Duration::from_secs(120), "some jobs to finish", || async {
        cluster
            .ledger_lines()
            .iter()
            .filter(|line| line.event == "finish")
            .count()
            >= 50
    })
    .await;
    {
        let _restart = Restart;
        rabbitmqctl("stop_app");
        // Submissions go on meanwhile: the orchestrator commits them and publishes later.
        for n in 0..500 {
            ids.push(submit_ok(&client, &gateway, &sleep_job(10, ["MEDIUM", "LOW"][n % 2])).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(ids.len(), 1000);
    for id in &ids {
        let job = wait_terminal(&client, &gateway, id, Duration::from_secs(240)).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    no_attempt_finished_twice(&cluster.ledger_lines());
}
