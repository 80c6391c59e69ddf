//! The broker conformance suite (DESIGN.md "Tests": one broker suite for in-process and
//! RabbitMQ). Each check runs against the in-process transport and against RabbitMQ in a vhost
//! of its own (`DQ_TEST_AMQP_URL`; skipped when unset, failing when `DQ_REQUIRE_SERVICES=1` and
//! RabbitMQ is unreachable). RabbitMQ-only checks (message properties, `job.dead`, prefetch,
//! acknowledged events) follow the suite.

use std::time::Duration;

use distriqueue_broker::{AmqpBroker, Broker, EventQueue, JobConsumer};
use distriqueue_core::machine::JobRecord;
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    Batch, Command, ControlMessage, JobId, JobMessage, Millis, State, StatusEvent, WorkerId,
};
use distriqueue_testkit::TestVhost;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use serde_json::json;

/// Generous: RabbitMQ on a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(20);

fn message(priority: &str, n: u128) -> JobMessage {
    let spec =
        parse_job_request(&json!({"type": "echo", "jobPriority": priority}), "").expect("valid");
    JobRecord::queued(JobId(uuid::Uuid::from_u128(n)), spec, Millis(0)).message()
}

fn events(n: u128) -> Vec<StatusEvent> {
    let mut state = State::default();
    let spec = parse_job_request(&json!({"type": "echo", "jobPriority": 1}), "").expect("valid");
    let commands = (0..n)
        .map(|n| Command::Register {
            id: JobId(uuid::Uuid::from_u128(n)),
            spec: Box::new(spec.clone()),
            max_queued: None,
            max_queued_bytes: None,
            policy: Default::default(),
        })
        .collect();
    state.apply(&Batch {
        now: Millis(0),
        seed: 0,
        commands,
    });
    state.unpublished().cloned().collect()
}

/// Waits until the consumer holds `n` messages (RabbitMQ delivers asynchronously).
async fn wait_held(consumer: &JobConsumer, n: usize) {
    let JobConsumer::Amqp(jobs) = consumer else {
        return;
    };
    tokio::time::timeout(DEADLINE, async {
        while jobs.n_held() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("held {} of {n} messages", jobs.n_held()));
}

async fn next_id(consumer: &JobConsumer) -> u128 {
    let delivery = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("a job in time")
        .expect("consumer open");
    delivery.ack().await;
    delivery.message.id.0.as_u128()
}

/// Runs `check` against each transport.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(distriqueue_broker::Broker::InProcess(Default::default())).await;
                }
            )*
        }
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(vhost) = distriqueue_testkit::TestVhost::create(stringify!($name)) else {
                        return;
                    };
                    let broker = super::amqp(&vhost).await;
                    super::$name(distriqueue_broker::Broker::Amqp(broker.clone())).await;
                    broker.close().await;
                }
            )*
        }
    };
}

conformance!(
    highest_priority_first_fifo_within,
    requeued_message_comes_back,
    control_reaches_its_worker_only,
    events_arrive_in_order,
    closed_consumer_hands_out_nothing,
    a_ready_higher_message_starts_before_a_held_lower_one,
);

async fn amqp(vhost: &TestVhost) -> AmqpBroker {
    AmqpBroker::connect(vhost.url(), "test", &[])
        .await
        .unwrap_or_else(|error| panic!("connect to {}: {error}", vhost.url()))
}

async fn highest_priority_first_fifo_within(broker: Broker) {
    let batch: Vec<JobMessage> = [
        ("LOW", 1),
        ("MEDIUM", 2),
        ("HIGH", 3),
        ("LOW", 4),
        ("CRITICAL", 5),
        ("HIGH", 6),
    ]
    .into_iter()
    .map(|(priority, n)| message(priority, n))
    .collect();
    broker.publish_jobs(&batch).await.expect("published");
    let consumer = broker.consume_jobs(&WorkerId("w1".into()), 10);
    wait_held(&consumer, 6).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(next_id(&consumer).await);
    }
    assert_eq!(order, [5, 3, 6, 2, 1, 4]);
}

async fn requeued_message_comes_back(broker: Broker) {
    broker
        .publish_jobs(&[message("MEDIUM", 7)])
        .await
        .expect("published");
    let consumer = broker.consume_jobs(&WorkerId("w1".into()), 1);
    let delivery = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("in time")
        .expect("a job");
    delivery.requeue().await;
    assert_eq!(next_id(&consumer).await, 7);
}

async fn control_reaches_its_worker_only(broker: Broker) {
    let worker = WorkerId("w-control".into());
    let mut controls = broker.consume_controls(&worker);
    let cancel = ControlMessage::Cancel {
        worker_id: worker.clone(),
        job_id: JobId(uuid::Uuid::from_u128(9)),
        attempt: 2,
    };
    // RabbitMQ binds the worker's queue asynchronously: publish until it is routed.
    tokio::time::timeout(DEADLINE, async {
        while !broker.publish_control(&cancel).await.expect("published") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the control queue is bound in time");
    let received = tokio::time::timeout(DEADLINE, controls.recv())
        .await
        .expect("in time")
        .expect("a control message");
    assert_eq!(received, cancel);
    let elsewhere = ControlMessage::Cancel {
        worker_id: WorkerId("nobody".into()),
        job_id: JobId(uuid::Uuid::from_u128(9)),
        attempt: 2,
    };
    assert!(!broker.publish_control(&elsewhere).await.expect("answered"));
}

async fn events_arrive_in_order(broker: Broker) {
    let mut receiver = broker
        .consume_events(EventQueue::ReadModel)
        .expect("the feed");
    let sent = events(50);
    broker.publish_events(&sent).await.expect("published");
    let mut seqs = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seqs.len() < sent.len() {
            let batch = receiver.recv_batch(16).await.expect("feed open");
            assert!(batch.len() <= 16);
            seqs.extend(batch.iter().map(|event| event.seq));
            receiver.acknowledge().await;
        }
    })
    .await
    .expect("every event in time");
    assert_eq!(seqs, sent.iter().map(|event| event.seq).collect::<Vec<_>>());
}

async fn a_ready_higher_message_starts_before_a_held_lower_one(broker: Broker) {
    broker
        .publish_jobs(&[message("LOW", 1)])
        .await
        .expect("published");
    // One slot: the worker holds the LOW message.
    let consumer = broker.consume_jobs(&WorkerId("w1".into()), 1);
    wait_held(&consumer, 1).await;
    broker
        .publish_jobs(&[message("HIGH", 2)])
        .await
        .expect("published");
    assert_eq!(next_id(&consumer).await, 2);
    assert_eq!(next_id(&consumer).await, 1);
}

async fn closed_consumer_hands_out_nothing(broker: Broker) {
    let consumer = broker.consume_jobs(&WorkerId("w1".into()), 4);
    consumer.close();
    assert!(tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("returns at once")
        .is_none());
}

async fn raw_channel(vhost: &TestVhost) -> lapin::Channel {
    distriqueue_testkit::raw_channel(vhost.url()).await
}

async fn get_from(
    channel: &lapin::Channel,
    queue: &str,
) -> Option<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if got.is_some() || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_job_messages_are_persistent_json_with_the_contract_priority() {
    let Some(vhost) = TestVhost::create("message_properties") else {
        return;
    };
    let broker = amqp(&vhost).await;
    broker
        .publish_jobs(&[
            message("CRITICAL", 1),
            message("HIGH", 2),
            message("LOW", 3),
        ])
        .await
        .expect("published");
    let channel = raw_channel(&vhost).await;
    for (queue, priority, id) in [("job.high", 10, 1), ("job.high", 9, 2), ("job.low", 1, 3)] {
        let got = get_from(&channel, queue).await.expect("a message");
        let properties = &got.delivery.properties;
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(properties.priority(), &Some(priority));
        assert_eq!(
            properties.content_type().as_ref().map(|kind| kind.as_str()),
            Some("application/json")
        );
        let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
        assert_eq!(body["id"], json!(uuid::Uuid::from_u128(id)));
        assert_eq!(body["attempt"], json!(1));
    }
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_undecodable_job_message_goes_to_job_dead() {
    let Some(vhost) = TestVhost::create("job_dead") else {
        return;
    };
    let broker = amqp(&vhost).await;
    let channel = raw_channel(&vhost).await;
    channel
        .basic_publish(
            "jobs.exchange",
            "job.medium",
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default(),
        )
        .await
        .expect("raw publish");
    broker
        .publish_jobs(&[message("MEDIUM", 4)])
        .await
        .expect("published");
    let consumer = Broker::Amqp(broker.clone()).consume_jobs(&WorkerId("w1".into()), 2);
    // The worker goes on with the next message.
    assert_eq!(next_id(&consumer).await, 4);
    let dead = get_from(&channel, "job.dead").await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"{not json");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_worker_holds_no_more_than_its_free_slots() {
    let Some(vhost) = TestVhost::create("prefetch") else {
        return;
    };
    let broker = amqp(&vhost).await;
    let batch: Vec<JobMessage> = (0..6).map(|n| message("MEDIUM", n)).collect();
    broker.publish_jobs(&batch).await.expect("published");
    let consumer = Broker::Amqp(broker.clone()).consume_jobs(&WorkerId("w1".into()), 2);
    wait_held(&consumer, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let JobConsumer::Amqp(jobs) = &consumer else {
        unreachable!("an AMQP consumer")
    };
    assert_eq!(jobs.n_held(), 2, "prefetch = free slots");
    // One slot busy (its message acked at the lease): one free slot, one message held.
    let started = consumer.next().await.expect("a job");
    consumer.slot_taken().await;
    started.ack().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jobs.n_held(), 1);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unacknowledged_events_are_delivered_again() {
    let Some(vhost) = TestVhost::create("event_redelivery") else {
        return;
    };
    let broker = amqp(&vhost).await;
    let sent = events(5);
    broker.publish_events(&sent).await.expect("published");
    let first = Broker::Amqp(broker.clone());
    let mut receiver = first.consume_events(EventQueue::ReadModel).expect("feed");
    let batch = tokio::time::timeout(DEADLINE, receiver.recv_batch(100))
        .await
        .expect("in time")
        .expect("events");
    assert!(!batch.is_empty());
    // Not acknowledged: a crash before storing loses nothing.
    broker.close().await;
    drop(receiver);
    let again = amqp(&vhost).await;
    let mut receiver = Broker::Amqp(again.clone())
        .consume_events(EventQueue::ReadModel)
        .expect("feed");
    let mut seqs = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seqs.len() < sent.len() {
            let batch = receiver.recv_batch(100).await.expect("open");
            seqs.extend(batch.iter().map(|event| event.seq));
        }
    })
    .await
    .expect("redelivered in time");
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_live_queue_sees_every_event_beside_the_read_model() {
    let Some(vhost) = TestVhost::create("live_events") else {
        return;
    };
    let broker = amqp(&vhost).await;
    let transport = Broker::Amqp(broker.clone());
    let mut live = transport.consume_events(EventQueue::Live).expect("live");
    // The private queue is bound asynchronously; publish until the live feed sees one.
    let sent = events(3);
    let first = tokio::time::timeout(DEADLINE, async {
        loop {
            transport.publish_events(&sent).await.expect("published");
            if let Ok(Some(batch)) =
                tokio::time::timeout(Duration::from_millis(200), live.recv_batch(10)).await
            {
                return batch;
            }
        }
    })
    .await
    .expect("live events in time");
    assert!(!first.is_empty());
    let channel = raw_channel(&vhost).await;
    // The read model's queue holds every publish as well.
    let queued = channel
        .queue_declare(
            "status.queue",
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("status.queue exists");
    assert!(queued.message_count() >= 3);
    broker.close().await;
}
