//! The job model: ids, priorities and the lifecycle states of CONTRACT.md.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A job's id: a UUID minted by the gateway (CONTRACT.md, "The id is a server-made UUID").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    /// Parses the hyphenated or simple UUID text form.
    fn from_str(text: &str) -> Result<JobId, uuid::Error> {
        Uuid::parse_str(text.trim()).map(JobId)
    }
}

/// A worker's id as it reports itself (`workerId`): a name ([`check_name`]: 1 to 255 bytes, no
/// control characters), since it is also the AMQP routing key of its control messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct WorkerId(pub String);

/// Longest name (`type`, `workerId`, tag, metadata key, idempotency key), in bytes: an AMQP
/// short string (a routing key) holds at most 255 bytes (AMQP 0-9-1, section 4.2.5.3).
pub const MAX_NAME_BYTES: usize = 255;

/// Longest label ([`check_label`]), in characters: CONTRACT.md's bound on `type`.
pub const MAX_LABEL_CHARS: usize = 255;

/// Checks a label a client gives (`type`, a tag, a metadata key, an idempotency key, a parent
/// id): not blank, at most 255 characters (CONTRACT.md's bound on `type`), no control characters
/// (PostgreSQL refuses NUL in text; newlines and escapes forge log lines). Errors: the message
/// of the violation, without the field's name.
pub fn check_label(text: &str) -> Result<(), &'static str> {
    if text.trim().is_empty() {
        Err("must not be blank")
    } else if text.chars().count() > MAX_LABEL_CHARS {
        Err("must be at most 255 characters")
    } else if text.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(())
    }
}

/// Checks a name that travels as an AMQP routing key (a worker id): a label ([`check_label`])
/// of at most [`MAX_NAME_BYTES`] bytes of UTF-8. Errors: the message of the violation.
pub fn check_name(text: &str) -> Result<(), &'static str> {
    check_label(text)?;
    if text.len() > MAX_NAME_BYTES {
        Err("must be at most 255 bytes")
    } else {
        Ok(())
    }
}

impl WorkerId {
    /// Checks a worker id read from the network with [`check_name`]. Errors: the 400 message.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.0).map_err(|message| format!("workerId {message}"))
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's priority. Order: `Low < Medium < High < Critical`.
///
/// Wire forms (CONTRACT.md): the names in any case, or the numbers 1, 5, 10, 15; responses use
/// the upper-case name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    /// `LOW`, number 1: queue `job.low`, AMQP priority 1.
    Low,
    /// `MEDIUM`, number 5: queue `job.medium`, AMQP priority 5.
    Medium,
    /// `HIGH`, number 10: queue `job.high`, AMQP priority 9.
    High,
    /// `CRITICAL`, number 15: queue `job.high`, AMQP priority 10.
    Critical,
}

impl Priority {
    /// All priorities, highest first: the order a worker starts them in.
    pub const HIGHEST_FIRST: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];

    /// The upper-case name (`"HIGH"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "LOW",
            Priority::Medium => "MEDIUM",
            Priority::High => "HIGH",
            Priority::Critical => "CRITICAL",
        }
    }

    /// The original system's number: LOW 1, MEDIUM 5, HIGH 10, CRITICAL 15.
    pub fn number(self) -> u8 {
        match self {
            Priority::Low => 1,
            Priority::Medium => 5,
            Priority::High => 10,
            Priority::Critical => 15,
        }
    }

    /// Reads a number of the original system (1, 5, 10, 15).
    pub fn from_number(number: i64) -> Option<Priority> {
        match number {
            1 => Some(Priority::Low),
            5 => Some(Priority::Medium),
            10 => Some(Priority::High),
            15 => Some(Priority::Critical),
            _ => None,
        }
    }

    /// Reads a name in any case, or a number as text ("10").
    pub fn parse(text: &str) -> Option<Priority> {
        let text = text.trim();
        match text.to_ascii_uppercase().as_str() {
            "LOW" => Some(Priority::Low),
            "MEDIUM" => Some(Priority::Medium),
            "HIGH" => Some(Priority::High),
            "CRITICAL" => Some(Priority::Critical),
            _ => text.parse::<i64>().ok().and_then(Priority::from_number),
        }
    }

    /// The RabbitMQ queue of CONTRACT.md: CRITICAL and HIGH share `job.high`.
    pub fn queue_name(self) -> &'static str {
        match self {
            Priority::Critical | Priority::High => "job.high",
            Priority::Medium => "job.medium",
            Priority::Low => "job.low",
        }
    }

    /// The AMQP message priority of CONTRACT.md: CRITICAL 10, HIGH 9, MEDIUM 5, LOW 1.
    pub fn amqp_priority(self) -> u8 {
        match self {
            Priority::Critical => 10,
            Priority::High => 9,
            Priority::Medium => 5,
            Priority::Low => 1,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's lifecycle state (CONTRACT.md and DESIGN.md "Lifecycle").
///
/// `PENDING -> QUEUED -> RUNNING -> COMPLETED`; `RUNNING -> RETRYING -> QUEUED`;
/// `RUNNING -> FAILED | TIMEOUT`; any non-terminal `-> CANCELLED`. `ASSIGNED` is kept for
/// compatibility with the original system and never entered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Scheduled (`scheduleAt` or `delaySeconds`); becomes QUEUED when due.
    Pending,
    /// An attempt is dispatched and waits for a worker.
    Queued,
    /// Kept for compatibility with the original system; never entered.
    Assigned,
    /// A worker holds the current attempt's lease.
    Running,
    /// An attempt failed with retries left; QUEUED again after the backoff.
    Retrying,
    /// Terminal: the handler succeeded.
    Completed,
    /// Terminal: the last attempt failed (handler error or worker lost) with no retries left, or
    /// failed permanently.
    Failed,
    /// Terminal: the last attempt ran past `executionTimeout` with no retries left.
    Timeout,
    /// Terminal: cancelled by a client.
    Cancelled,
}

impl JobStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Assigned,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Timeout,
        JobStatus::Cancelled,
    ];

    /// The upper-case name (`"RUNNING"`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Queued => "QUEUED",
            JobStatus::Assigned => "ASSIGNED",
            JobStatus::Running => "RUNNING",
            JobStatus::Retrying => "RETRYING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Timeout => "TIMEOUT",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Reads a name in any case.
    pub fn parse(text: &str) -> Option<JobStatus> {
        let upper = text.trim().to_ascii_uppercase();
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == upper)
    }

    /// Terminal states are final: COMPLETED, FAILED, TIMEOUT, CANCELLED (DESIGN.md, rule 5).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_reads_names_in_any_case_and_numbers() {
        for (text, expected) in [
            ("high", Some(Priority::High)),
            ("Critical", Some(Priority::Critical)),
            (" LOW ", Some(Priority::Low)),
            ("5", Some(Priority::Medium)),
            ("15", Some(Priority::Critical)),
            ("7", None),
            ("urgent", None),
        ] {
            assert_eq!(Priority::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn priority_maps_to_contract_queues() {
        let routes: Vec<_> = Priority::HIGHEST_FIRST
            .iter()
            .map(|p| (p.queue_name(), p.amqp_priority(), p.number()))
            .collect();
        assert_eq!(
            routes,
            [
                ("job.high", 10, 15),
                ("job.high", 9, 10),
                ("job.medium", 5, 5),
                ("job.low", 1, 1)
            ]
        );
    }

    #[test]
    fn status_parse_and_terminality() {
        assert_eq!(JobStatus::parse("completed"), Some(JobStatus::Completed));
        assert_eq!(JobStatus::parse("nope"), None);
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                JobStatus::Completed,
                JobStatus::Failed,
                JobStatus::Timeout,
                JobStatus::Cancelled
            ]
        );
    }
}
