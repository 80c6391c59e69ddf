//! Acceptance tests of the orchestrator cluster (issue 5): three `distriqueue orchestrator`
//! processes replicating one log with openraft over HTTP, with a gateway and workers that know
//! every node. They need RabbitMQ like every distributed test (`DQ_TEST_AMQP_URL`), and skip
//! without it.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::cluster::{Cluster, Spec};
use common::metrics::{families, metrics_named_in, scrape, wait_metric, CLUSTER_ONLY};
use common::*;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(180);

/// Three orchestrator nodes with `workers` workers of `concurrency` slots.
fn three_nodes(workers: usize, concurrency: usize, heartbeat_timeout_s: u64) -> Spec {
    Spec {
        nodes: 3,
        workers,
        concurrency,
        heartbeat_timeout_s,
        ..Spec::default()
    }
}

/// Every node's `/api/raft/status` (a node that does not answer is left out).
async fn statuses(cluster: &Cluster) -> Vec<(usize, Value)> {
    let client = http();
    let mut answers = Vec::new();
    for index in 0..cluster.orchestrators.len() {
        let url = format!("{}/api/raft/status", cluster.node_url(index));
        if let Ok(response) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if let Ok(status) = response.json::<Value>().await {
                answers.push((index, status));
            }
        }
    }
    answers
}

/// Waits until the answering nodes (at least `quorum`) agree on one leader and term, and that
/// leader says it leads; returns the leader's index.
async fn agreed_leader(cluster: &Cluster, quorum: usize) -> usize {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answers = statuses(cluster).await;
        let views: HashSet<(Option<u64>, Option<u64>)> = answers
            .iter()
            .map(|(_, status)| (status["leader"].as_u64(), status["term"].as_u64()))
            .collect();
        let leaders: Vec<usize> = answers
            .iter()
            .filter(|(_, status)| status["role"] == "leader")
            .map(|(index, _)| *index)
            .collect();
        if answers.len() >= quorum && views.len() == 1 && leaders.len() == 1 {
            let (leader, _) = views.into_iter().next().unwrap_or_default();
            if leader == Some(leaders[0] as u64 + 1) {
                return leaders[0];
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_elect_one_leader_agree_on_it_and_replicate_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start_spec("raft_elect", dir.path(), three_nodes(0, 1, 10)) else {
        return;
    };
    let leader = agreed_leader(&cluster, 3).await;
    let statuses = statuses(&cluster).await;
    for (index, status) in &statuses {
        let role = status["role"].as_str().unwrap_or("");
        let expected = if *index == leader {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(role, expected, "node {}: {status}", index + 1);
        assert_eq!(
            status["members"].as_array().map(Vec::len),
            Some(3),
            "{status}"
        );
    }
    // A write through the gateway lands whichever node it reaches (followers forward it), and
    // every node's state machine holds the job.
    let client = http();
    let id = submit_ok(&client, &cluster.gateway_url(), &echo_job("HIGH", 1)).await;
    for index in 0..3 {
        let node = cluster.node_url(index);
        wait_until(Duration::from_secs(30), "the job on every node", || {
            let client = client.clone();
            let node = node.clone();
            let id = id.clone();
            async move {
                let (_, live) = get(&client, &format!("{node}/api/jobs")).await;
                live["jobs"]
                    .as_array()
                    .is_some_and(|jobs| jobs.iter().any(|job| job["id"] == id.as_str()))
            }
        })
        .await;
    }
    // A follower forwards worker-protocol writes too.
    let follower = (leader + 1) % 3;
    let (status, body) = post_json(
        &client,
        &format!("{}/api/workers/heartbeat", cluster.node_url(follower)),
        &serde_json::json!({"worker_id": "probe", "capacity": 1, "current_load": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "acknowledged");

    // Forged Raft RPCs change nothing: the public ports do not serve them, the peer ports refuse
    // them without the secret, before reading their bodies.
    let (term, members) = {
        let (_, status) = get(
            &client,
            &format!("{}/api/raft/status", cluster.node_url(leader)),
        )
        .await;
        (status["term"].clone(), member_ids(&status))
    };
    let forged_vote = serde_json::json!({
        "vote": {"leader_id": {"term": 1_000_000, "node_id": 9}, "committed": false},
        "last_log_id": null
    });
    let now_ms = chrono::Utc::now().timestamp_millis();
    for index in 0..3 {
        for path in ["/raft/vote", "/raft/append", "/raft/snapshot"] {
            let (status, _) = post_json(
                &client,
                &format!("{}{path}", cluster.node_url(index)),
                &forged_vote,
            )
            .await;
            assert_eq!(
                status,
                404,
                "{path} on the public port of node {}",
                index + 1
            );
            let peer = format!("{}{path}", cluster.peer_url(index));
            let (status, body) = post_json(&client, &peer, &forged_vote).await;
            assert_eq!(status, 401, "{path} unsigned on node {}: {body}", index + 1);
            for (signature, expected) in [
                // A member's id with a made-up MAC: the signature is wrong.
                (format!("v1 1 {now_ms} {}", "ab".repeat(32)), 401),
                // A node that is not a member.
                (format!("v1 99 {now_ms} {}", "ab".repeat(32)), 403),
            ] {
                let response = client
                    .post(&peer)
                    .header("x-distriqueue-peer", signature)
                    .json(&forged_vote)
                    .send()
                    .await
                    .expect("a forged RPC");
                assert_eq!(
                    response.status().as_u16(),
                    expected,
                    "{path} forged on node {}",
                    index + 1
                );
            }
        }
        // A body far past any limit is refused without being read.
        let huge = vec![b' '; 80 * 1024 * 1024];
        let response = client
            .post(format!("{}/raft/append", cluster.peer_url(index)))
            .body(huge)
            .send()
            .await;
        assert!(
            response.map_or(true, |answer| answer.status() == 401),
            "a huge unsigned append"
        );
    }
    let (_, status) = get(
        &client,
        &format!("{}/api/raft/status", cluster.node_url(leader)),
    )
    .await;
    assert_eq!(status["term"], term, "{status}");
    assert_eq!(member_ids(&status), members, "{status}");
    assert_eq!(status["role"], "leader", "{status}");
}

/// The (id, peer URL) of each member a Raft status lists.
fn member_ids(status: &Value) -> Vec<(Value, Value)> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|member| (member["id"].clone(), member["addr"].clone()))
        .collect()
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kill_minus_nine_mid_run_loses_nothing_and_the_node_rejoins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start_spec("raft_failover", dir.path(), three_nodes(2, 8, 5))
    else {
        return;
    };
    agreed_leader(&cluster, 3).await;
    let gateway = cluster.gateway_url();
    let client = http();
    let mut ids = Vec::new();
    let mut submitters = Vec::new();
    for client_index in 0..8 {
        let client = client.clone();
        let gateway = gateway.clone();
        submitters.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for n in 0..250 {
                let priority = ["LOW", "MEDIUM", "HIGH"][(n + client_index) % 3];
                mine.push(submit_ok(&client, &gateway, &sleep_job(20, priority)).await);
            }
            mine
        }));
    }
    for submitter in submitters {
        ids.extend(submitter.await.expect("submitter"));
    }
    assert_eq!(ids.len(), 2000);
    wait_until(DEADLINE, "a few hundred jobs to finish", || async {
        cluster
            .ledger_lines()
            .iter()
            .filter(|line| line.event == "finish")
            .count()
            >= 300
    })
    .await;
    let old_leader = agreed_leader(&cluster, 3).await;
    cluster.orchestrators[old_leader].kill();
    // A new leader takes writes.
    let new_leader = agreed_leader(&cluster, 2).await;
    assert_ne!(new_leader, old_leader);
    ids.push(submit_ok(&client, &gateway, &echo_job("HIGH", 1)).await);
    for id in &ids {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
        let completed = job["attempts"].as_array().map_or(0, |attempts| {
            attempts
                .iter()
                .filter(|attempt| attempt["state"] == "COMPLETED")
                .count()
        });
        assert_eq!(completed, 1, "one recorded outcome: {job}");
    }
    no_attempt_finished_twice(&cluster.ledger_lines());

    // The killed node restarts, catches up and follows.
    cluster.orchestrators[old_leader] = cluster.start_orchestrator(old_leader);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answers: HashMap<usize, Value> = statuses(&cluster).await.into_iter().collect();
        let leader_applied = answers
            .get(&new_leader)
            .and_then(|status| status["lastApplied"].as_u64());
        let rejoined = answers.get(&old_leader).filter(|status| {
            status["role"] == "follower"
                && status["leader"].as_u64() == Some(new_leader as u64 + 1)
                && status["lastApplied"].as_u64() >= leader_applied
        });
        if rejoined.is_some() && leader_applied.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} did not catch up: {answers:?}",
            old_leader + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/api/raft/status` of the given nodes, until they agree on a leader among them that says it
/// leads; returns its index.
async fn leader_among(cluster: &Cluster, nodes: &[usize]) -> usize {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answers: Vec<(usize, Value)> = statuses(cluster)
            .await
            .into_iter()
            .filter(|(index, _)| nodes.contains(index))
            .collect();
        let views: HashSet<Option<u64>> = answers
            .iter()
            .map(|(_, status)| status["leader"].as_u64())
            .collect();
        if answers.len() == nodes.len() && views.len() == 1 {
            if let Some(Some(leader)) = views.into_iter().next() {
                let index = leader as usize - 1;
                let leads = answers
                    .iter()
                    .any(|(node, status)| *node == index && status["role"] == "leader");
                if leads {
                    return index;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes {nodes:?} agree on no leader: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers an echo job with `id` through node `index + 1`; the status, or `None` when no
/// answer came within `timeout`.
async fn register_on(cluster: &Cluster, index: usize, id: &str, timeout: Duration) -> Option<u16> {
    let body = serde_json::json!({"id": id, "type": "echo", "priority": 5});
    http()
        .post(format!("{}/api/jobs/register", cluster.node_url(index)))
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

/// Each node's live jobs: id to version.
async fn live_jobs(cluster: &Cluster, index: usize) -> HashMap<String, u64> {
    let (_, live) = get(
        &http(),
        &format!("{}/api/jobs?limit=1000", cluster.node_url(index)),
    )
    .await;
    live["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|job| Some((job["id"].as_str()?.to_string(), job["version"].as_u64()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_leader_commits_nothing_the_majority_goes_on_and_healing_leaves_one_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start_spec(
        "raft_partition",
        dir.path(),
        Spec {
            partitionable: true,
            ..three_nodes(0, 1, 10)
        },
    ) else {
        return;
    };
    let old_leader = agreed_leader(&cluster, 3).await;
    let before: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &before {
        assert_eq!(
            register_on(&cluster, old_leader, id, Duration::from_secs(30)).await,
            Some(202)
        );
    }
    cluster.isolate(old_leader);
    let applied = |statuses: &[(usize, Value)], node: usize| {
        statuses
            .iter()
            .find(|(index, _)| *index == node)
            .and_then(|(_, status)| status["lastApplied"].as_u64())
    };
    let isolated_applied = applied(&statuses(&cluster).await, old_leader);
    // A write to the isolated leader cannot commit.
    let lost = uuid::Uuid::new_v4().to_string();
    assert_ne!(
        register_on(&cluster, old_leader, &lost, Duration::from_secs(3)).await,
        Some(202),
        "the isolated leader accepted a write"
    );
    // The other two elect a leader and go on.
    let majority: Vec<usize> = (0..3).filter(|node| *node != old_leader).collect();
    let new_leader = leader_among(&cluster, &majority).await;
    assert_ne!(new_leader, old_leader);
    let during: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &during {
        // Through the follower of the majority: it forwards to the new leader.
        let follower = majority
            .iter()
            .copied()
            .find(|node| *node != new_leader)
            .expect("a follower");
        assert_eq!(
            register_on(&cluster, follower, id, Duration::from_secs(30)).await,
            Some(202)
        );
    }
    assert_eq!(
        applied(&statuses(&cluster).await, old_leader),
        isolated_applied,
        "the isolated node applied entries while cut off"
    );
    // The new leader's metrics show the cut-off member behind, and itself leading.
    let client = http();
    let leader_metrics = format!("{}/metrics", cluster.node_url(new_leader));
    let cut_off = (old_leader + 1).to_string();
    wait_metric(
        &client,
        &leader_metrics,
        "distriqueue_orchestrator_raft_replication_lag",
        &[("follower", &cut_off)],
        "above 0",
        |lag| lag > 0.0,
    )
    .await;
    wait_metric(
        &client,
        &leader_metrics,
        "distriqueue_orchestrator_raft_role",
        &[("role", "leader")],
        "1",
        |value| value == 1.0,
    )
    .await;
    // The metrics only a cluster has, which the dashboard names, exist here.
    let leader_families = families(&scrape(&client, &leader_metrics).await);
    let dashboard = metrics_named_in("deploy/monitoring/grafana-dashboard.json");
    for name in CLUSTER_ONLY {
        assert!(
            dashboard.contains(name),
            "the dashboard does not show {name}"
        );
        assert!(leader_families.contains(name), "no {name} on the leader");
    }

    cluster.heal();
    // One history: every node ends with the same jobs at the same versions, with what the
    // majority committed and without the write the isolated leader could not commit.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut views = Vec::new();
        for node in 0..3 {
            views.push(live_jobs(&cluster, node).await);
        }
        let converged = views.iter().all(|view| *view == views[0])
            && before
                .iter()
                .chain(&during)
                .all(|id| views[0].contains_key(id));
        if converged {
            assert!(
                !views[0].contains_key(&lost),
                "an uncommitted write survived"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not converge after healing: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = agreed_leader(&cluster, 3).await;
    assert!(statuses(&cluster)
        .await
        .iter()
        .all(|(_, status)| status["leader"].as_u64() == Some(leader as u64 + 1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_is_added_and_another_removed_at_run_time_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) =
        Cluster::start_spec("raft_membership", dir.path(), three_nodes(0, 1, 10))
    else {
        return;
    };
    agreed_leader(&cluster, 3).await;
    let client = http();
    let before = submit_ok(&client, &cluster.gateway_url(), &echo_job("LOW", 1)).await;
    let joining = cluster.start_joining_node();
    let cli = |args: &[String]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_distriqueue"))
            .arg("cluster")
            .arg("--orchestrator")
            .arg(cluster.node_url(0))
            .args(args)
            .output()
            .expect("run distriqueue cluster");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("JSON answer")
    };
    let added = cli(&[
        "add-node".into(),
        "--id".into(),
        (joining + 1).to_string(),
        "--url".into(),
        cluster.peer_url(joining),
    ]);
    assert_eq!(
        added["members"].as_array().map(Vec::len),
        Some(4),
        "{added}"
    );
    // The new node follows and holds the state written before it joined.
    wait_until(
        Duration::from_secs(60),
        "the new node to follow",
        || async {
            statuses(&cluster).await.iter().any(|(index, status)| {
                *index == joining && status["role"] == "follower" && status["leader"].is_u64()
            })
        },
    )
    .await;
    let node = cluster.node_url(joining);
    wait_until(Duration::from_secs(60), "the job on the new node", || {
        let client = client.clone();
        let node = node.clone();
        let before = before.clone();
        async move {
            let (_, live) = get(&client, &format!("{node}/api/jobs")).await;
            live["jobs"]
                .as_array()
                .is_some_and(|jobs| jobs.iter().any(|job| job["id"] == before.as_str()))
        }
    })
    .await;
    // Remove a follower that is not the new node; the cluster goes on with three.
    let leader = agreed_leader(&cluster, 4).await;
    let removed_index = (0..3).find(|index| *index != leader).expect("a follower");
    let removed = cli(&[
        "remove-node".into(),
        "--id".into(),
        (removed_index + 1).to_string(),
    ]);
    assert_eq!(
        removed["members"].as_array().map(Vec::len),
        Some(3),
        "{removed}"
    );
    cluster.orchestrators[removed_index].kill();
    let after = submit_ok(&client, &cluster.gateway_url(), &echo_job("LOW", 2)).await;
    let (status, _) = get(
        &client,
        &format!("{}/api/jobs/{after}", cluster.gateway_url()),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_behind_the_purged_log_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec {
        orchestrator_flags: vec!["--snapshot-every".into(), "50".into()],
        ..three_nodes(0, 1, 10)
    };
    let Some(mut cluster) = Cluster::start_spec("raft_snapshot", dir.path(), spec) else {
        return;
    };
    let leader = agreed_leader(&cluster, 3).await;
    let behind = (leader + 1) % 3;
    cluster.orchestrators[behind].kill();
    let left_at = statuses(&cluster)
        .await
        .iter()
        .find(|(index, _)| *index == leader)
        .and_then(|(_, status)| status["lastApplied"].as_u64())
        .unwrap_or(0);
    let client = http();
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(submit_ok(&client, &cluster.gateway_url(), &echo_job("LOW", n)).await);
    }
    // The leader snapshots and purges its log past where the stopped node left off.
    wait_until(DEADLINE, "the leader to purge its log", || async {
        statuses(&cluster).await.iter().any(|(index, status)| {
            *index == leader
                && status["purged"]
                    .as_u64()
                    .is_some_and(|purged| purged > left_at)
        })
    })
    .await;
    cluster.orchestrators[behind] = cluster.start_orchestrator(behind);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answers: HashMap<usize, Value> = statuses(&cluster).await.into_iter().collect();
        let leader_applied = answers
            .get(&leader)
            .and_then(|status| status["lastApplied"].as_u64());
        let caught_up = answers.get(&behind).is_some_and(|status| {
            status["role"] == "follower"
                && status["snapshot"].as_u64().is_some()
                && status["lastApplied"].as_u64() >= leader_applied
        });
        if caught_up && leader_applied.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} did not catch up: {answers:?}",
            behind + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        live_jobs(&cluster, behind).await,
        live_jobs(&cluster, leader).await
    );
}
