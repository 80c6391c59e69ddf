//! The topology of CONTRACT.md "RabbitMQ": exchange and queue names with their exact
//! arguments, declared by whichever role connects first (every later declaration is a no-op).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// `jobs.exchange`: direct, durable; routes to `job.high|medium|low`.
pub const JOBS_EXCHANGE: &str = "jobs.exchange";
/// Undecodable job messages end here (durable, no arguments).
pub const DEAD_QUEUE: &str = "job.dead";
/// `control.exchange`: direct, durable; routing key = worker id.
pub const CONTROL_EXCHANGE: &str = "control.exchange";
/// `status.exchange`: topic, durable; lifecycle events under [`STATUS_ROUTING_KEY`].
pub const STATUS_EXCHANGE: &str = "status.exchange";
/// The routing key of every lifecycle event.
pub const STATUS_ROUTING_KEY: &str = "status.update";
/// The read model's shared event queue (bound with `#`), dead-lettering to [`STATUS_DLQ`].
pub const STATUS_QUEUE: &str = "status.queue";
/// Where `status.queue` dead-letters events a gateway could not decode.
pub const STATUS_DLQ: &str = "status.dlq";

/// The job queues with their `x-max-priority`, highest first (CONTRACT.md).
pub(crate) const JOB_QUEUES: [(&str, i32); 3] =
    [("job.high", 10), ("job.medium", 5), ("job.low", 1)];

/// Declares the whole topology of CONTRACT.md "RabbitMQ" with the contract's arguments, so
/// whichever role connects first creates it and every later declaration is a no-op.
pub(crate) async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let none = FieldTable::default();
    channel
        .exchange_declare(
            JOBS_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            none.clone(),
        )
        .await?;
    for (queue, max_priority) in JOB_QUEUES {
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(max_priority));
        channel
            .queue_declare(queue, durable_queue, arguments)
            .await?;
        channel
            .queue_bind(
                queue,
                JOBS_EXCHANGE,
                queue,
                QueueBindOptions::default(),
                none.clone(),
            )
            .await?;
    }
    channel
        .queue_declare(DEAD_QUEUE, durable_queue, none.clone())
        .await?;
    channel
        .exchange_declare(
            CONTROL_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            none.clone(),
        )
        .await?;
    channel
        .exchange_declare(
            STATUS_EXCHANGE,
            ExchangeKind::Topic,
            durable_exchange,
            none.clone(),
        )
        .await?;
    channel
        .queue_declare(STATUS_DLQ, durable_queue, none.clone())
        .await?;
    let mut dead_letter = FieldTable::default();
    dead_letter.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    dead_letter.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(STATUS_DLQ)),
    );
    channel
        .queue_declare(STATUS_QUEUE, durable_queue, dead_letter)
        .await?;
    channel
        .queue_bind(
            STATUS_QUEUE,
            STATUS_EXCHANGE,
            "#",
            QueueBindOptions::default(),
            none,
        )
        .await?;
    Ok(())
}

/// An exclusive, auto-delete, server-named queue; returns its name.
pub(crate) async fn declare_private_queue(channel: &Channel) -> Result<String, lapin::Error> {
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.name().as_str().to_string())
}
