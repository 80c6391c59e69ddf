//! Reading a job request (CONTRACT.md, "Job submission") into a validated [`JobSpec`].
//!
//! Parsing walks a `serde_json::Value` by hand rather than deriving `Deserialize`, so every bad
//! field is reported by name in one answer (`{"error":"Validation failed","violations":{..}}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::{check_label, Priority};
use crate::time::{parse_client_time, Millis};

/// Default `maxRetries` of CONTRACT.md.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default `executionTimeout` of CONTRACT.md, in seconds.
pub const DEFAULT_EXECUTION_TIMEOUT_S: u64 = 300;
/// Largest accepted `executionTimeout`: 7 days, in seconds.
pub const MAX_EXECUTION_TIMEOUT_S: u64 = 7 * 24 * 3600;
/// Largest accepted `maxRetries`.
pub const MAX_MAX_RETRIES: u32 = 1000;

/// Request fields that a later issue implements. They are refused by name until then, never
/// silently ignored.
pub const NOT_YET_SUPPORTED: [&str; 1] = ["callbackUrl"];

/// Largest accepted `retryBackoffMs`: one day.
pub const MAX_RETRY_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// Largest accepted `delaySeconds`: one year.
pub const MAX_DELAY_S: u64 = 366 * 24 * 3600;
/// Largest `payload`, encoded as JSON: 1 MiB. The job message carries it (RabbitMQ 4 refuses
/// messages over 16 MiB by default) and the replicated state keeps it while the job lives.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most `tags` on a job.
pub const MAX_TAGS: usize = 64;
/// Most `metadata` entries on a job.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest `metadata` value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 4096;

/// What a client asked to run: the validated, immutable part of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSpec {
    /// The handler to run (`type`), 1..=255 characters, not blank.
    pub job_type: String,
    /// When to start it relative to other jobs (`jobPriority`, or `priority`).
    pub priority: Priority,
    /// The handler's input; always a JSON object (`{}` by default).
    pub payload: Map<String, Value>,
    /// Retries after the first attempt (`maxRetries`, default 3; 0 means one attempt).
    pub max_retries: u32,
    /// Seconds an attempt may run (`executionTimeout`, default 300).
    pub execution_timeout_s: u64,
    /// Free string-to-string pairs (`metadata`), kept as given.
    pub metadata: BTreeMap<String, String>,
    /// The parent job's id (`parentJobId`): free text, not checked against known jobs.
    pub parent_job_id: Option<String>,
    /// Free labels (`tags`), kept in the order given.
    pub tags: Vec<String>,
    /// When to run: no earlier than this time (`scheduleAt`) or this long after it is
    /// registered (`delaySeconds`). `None`: now.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// A repeat within the retention window answers with the first job (`idempotencyKey` or the
    /// `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Overrides the server's backoff base for this job (`retryBackoffMs`), milliseconds.
    #[serde(default)]
    pub retry_backoff_ms: Option<u64>,
}

impl JobSpec {
    /// The spec of a job as the read model holds it, for `POST /retry` of a job the
    /// orchestrator no longer holds (its schedule, key and backoff override are not kept there:
    /// a retry runs now).
    pub fn from_response(job: &crate::wire::JobResponse) -> JobSpec {
        JobSpec {
            job_type: job.job_type.clone(),
            priority: job.priority,
            payload: job.payload.clone(),
            max_retries: job.max_retries,
            execution_timeout_s: job.execution_timeout,
            metadata: job.metadata.clone(),
            parent_job_id: job.parent_job_id.clone(),
            tags: job.tags.clone(),
            schedule: None,
            idempotency_key: None,
            retry_backoff_ms: None,
        }
    }
}

impl JobSpec {
    /// The spec as a job request body that [`parse_job_request`] reads back to the same spec
    /// (what a gateway sends to the orchestrator's `POST /api/jobs/register`).
    pub fn to_request(&self) -> Value {
        let mut body = serde_json::json!({
            "type": self.job_type,
            "jobPriority": self.priority.as_str(),
            "payload": self.payload,
            "maxRetries": self.max_retries,
            "executionTimeout": self.execution_timeout_s,
            "metadata": self.metadata,
            "tags": self.tags,
            "parentJobId": self.parent_job_id,
            "idempotencyKey": self.idempotency_key,
            "retryBackoffMs": self.retry_backoff_ms,
        });
        match self.schedule {
            Some(Schedule::At(at)) => body["scheduleAt"] = Value::String(at.to_iso()),
            Some(Schedule::Delay(ms)) => body["delaySeconds"] = Value::from(ms / 1000),
            None => {}
        }
        body
    }
}

/// When a scheduled job becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Schedule {
    /// At this time (UTC).
    At(Millis),
    /// This many milliseconds after the job is registered (leader time).
    Delay(u64),
}

/// Field path (`type`, `jobs[0].type`) to a message saying what is wrong with it.
pub type Violations = BTreeMap<String, String>;

/// Reads a job request body. `prefix` is prepended to field paths (`"jobs[0]."` in a batch).
///
/// Accepts the aliases of CONTRACT.md (`priority` for `jobPriority`; priority names in any case
/// or the numbers 1, 5, 10, 15). Unknown fields are ignored. Errors: every violated field with
/// a message; the fields of [`NOT_YET_SUPPORTED`] are violations too.
pub fn parse_job_request(body: &Value, prefix: &str) -> Result<JobSpec, Violations> {
    let mut violations = Violations::new();
    let Some(fields) = body.as_object() else {
        let path = if prefix.is_empty() {
            "body".to_string()
        } else {
            prefix.trim_end_matches('.').to_string()
        };
        violations.insert(path, "must be a JSON object".to_string());
        return Err(violations);
    };
    let mut violation = |field: &str, message: &str| {
        violations.insert(format!("{prefix}{field}"), message.to_string());
    };
    let present = |name: &str| fields.get(name).filter(|value| !value.is_null());

    let job_type = match present("type") {
        Some(Value::String(text)) => match check_label(text) {
            Ok(()) => text.trim().to_string(),
            Err(message) => {
                violation("type", message);
                String::new()
            }
        },
        None => {
            violation("type", "is required");
            String::new()
        }
        Some(_) => {
            violation("type", "must be a string");
            String::new()
        }
    };

    let priority = match present("jobPriority").or_else(|| present("priority")) {
        None => {
            violation("jobPriority", "is required (LOW, MEDIUM, HIGH or CRITICAL)");
            Priority::Medium
        }
        Some(value) => {
            let parsed = match value {
                Value::String(text) => Priority::parse(text),
                Value::Number(number) => number.as_i64().and_then(Priority::from_number),
                _ => None,
            };
            parsed.unwrap_or_else(|| {
                violation(
                    "jobPriority",
                    "must be LOW, MEDIUM, HIGH or CRITICAL (any case) or 1, 5, 10, 15",
                );
                Priority::Medium
            })
        }
    };

    let payload = match present("payload") {
        None => Map::new(),
        Some(Value::Object(object)) if crate::encoded_len(object) > MAX_PAYLOAD_BYTES => {
            violation("payload", "must be at most 1048576 bytes of JSON");
            Map::new()
        }
        Some(Value::Object(object)) => object.clone(),
        Some(_) => {
            violation("payload", "must be a JSON object");
            Map::new()
        }
    };

    let max_retries = match present("maxRetries") {
        None => DEFAULT_MAX_RETRIES,
        Some(value) => match value.as_u64() {
            Some(n) if n <= u64::from(MAX_MAX_RETRIES) => n as u32,
            _ => {
                violation("maxRetries", "must be an integer from 0 to 1000");
                DEFAULT_MAX_RETRIES
            }
        },
    };

    let execution_timeout_s = match present("executionTimeout") {
        None => DEFAULT_EXECUTION_TIMEOUT_S,
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 && n <= MAX_EXECUTION_TIMEOUT_S => n,
            _ => {
                violation(
                    "executionTimeout",
                    "must be an integer number of seconds from 1 to 604800",
                );
                DEFAULT_EXECUTION_TIMEOUT_S
            }
        },
    };

    let metadata = match present("metadata") {
        None => BTreeMap::new(),
        Some(Value::Object(object)) if object.len() > MAX_METADATA_ENTRIES => {
            violation("metadata", "must have at most 64 entries");
            BTreeMap::new()
        }
        Some(Value::Object(object)) => {
            let entries: Option<BTreeMap<String, String>> = object
                .iter()
                .map(|(key, value)| value.as_str().map(|text| (key.clone(), text.to_string())))
                .collect();
            match entries {
                None => {
                    violation("metadata", "must be an object of string to string");
                    BTreeMap::new()
                }
                Some(entries) => {
                    let bad_key = entries.keys().find_map(|key| check_label(key).err());
                    let bad_value = entries.values().any(|value| {
                        value.contains('\0') || value.chars().count() > MAX_METADATA_VALUE_CHARS
                    });
                    if let Some(message) = bad_key {
                        violation("metadata", &format!("keys {message}"));
                    } else if bad_value {
                        violation(
                            "metadata",
                            "values must be at most 4096 characters, without NUL",
                        );
                    }
                    entries
                }
            }
        }
        Some(_) => {
            violation("metadata", "must be an object of string to string");
            BTreeMap::new()
        }
    };

    let parent_job_id = match present("parentJobId") {
        None => None,
        Some(Value::String(text)) => {
            if let Err(message) = check_label(text) {
                violation("parentJobId", message);
            }
            Some(text.clone())
        }
        Some(_) => {
            violation("parentJobId", "must be a string");
            None
        }
    };

    let tags = match present("tags") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_TAGS => {
            violation("tags", "must have at most 64 tags");
            Vec::new()
        }
        Some(Value::Array(items)) => {
            let tags: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect();
            let tags = tags.unwrap_or_else(|| {
                violation("tags", "must be an array of strings");
                Vec::new()
            });
            if let Some(message) = tags.iter().find_map(|tag| check_label(tag).err()) {
                violation("tags", &format!("each tag {message}"));
            }
            tags
        }
        Some(_) => {
            violation("tags", "must be an array of strings");
            Vec::new()
        }
    };

    let schedule_at = match present("scheduleAt") {
        None => None,
        Some(Value::String(text)) => parse_client_time(text).or_else(|| {
            violation(
                "scheduleAt",
                "must be an RFC 3339 time or an ISO local date-time (read as UTC)",
            );
            None
        }),
        Some(_) => {
            violation("scheduleAt", "must be a string with a date-time");
            None
        }
    };
    let delay_s = match present("delaySeconds") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(n) if n <= MAX_DELAY_S => Some(n),
            _ => {
                violation(
                    "delaySeconds",
                    "must be an integer number of seconds from 0 to 31622400",
                );
                None
            }
        },
    };
    let schedule = match (schedule_at, delay_s) {
        (Some(_), Some(_)) => {
            violation(
                "delaySeconds",
                "give either scheduleAt or delaySeconds, not both",
            );
            None
        }
        (Some(at), None) => Some(Schedule::At(at)),
        (None, Some(delay)) => Some(Schedule::Delay(delay * 1000)),
        (None, None) => None,
    };

    let idempotency_key = match present("idempotencyKey") {
        None => None,
        Some(Value::String(text)) => check_idempotency_key(text)
            .map_err(|message| violation("idempotencyKey", message))
            .ok(),
        Some(_) => {
            violation("idempotencyKey", "must be a string");
            None
        }
    };

    let retry_backoff_ms = match present("retryBackoffMs") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(n) if n <= MAX_RETRY_BACKOFF_MS => Some(n),
            _ => {
                violation(
                    "retryBackoffMs",
                    "must be an integer number of milliseconds from 0 to 86400000",
                );
                None
            }
        },
    };

    for field in NOT_YET_SUPPORTED {
        if present(field).is_some() {
            violation(
                field,
                "is not supported yet by this server; resend without it",
            );
        }
    }

    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(JobSpec {
        job_type,
        priority,
        payload,
        max_retries,
        execution_timeout_s,
        metadata,
        parent_job_id,
        tags,
        schedule,
        idempotency_key,
        retry_backoff_ms,
    })
}

/// Checks an idempotency key (body field or `Idempotency-Key` header): a label
/// ([`check_label`]: not blank, at most 255 characters, no control characters). Returns the key
/// as given, or the message of the violation.
pub fn check_idempotency_key(key: &str) -> Result<String, &'static str> {
    check_label(key).map(|()| key.to_string())
}

impl JobSpec {
    /// Checks a spec that arrived already parsed (a gateway's batch of registrations, or a
    /// retry's snapshot from the read model) against the bounds [`parse_job_request`] enforces,
    /// by reading its request form back. Errors: every violated field, prefixed by `prefix`.
    pub fn check(&self, prefix: &str) -> Result<(), Violations> {
        parse_job_request(&self.to_request(), prefix).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_ok(body: Value) -> JobSpec {
        match parse_job_request(&body, "") {
            Ok(spec) => spec,
            Err(violations) => panic!("expected a valid request, got {violations:?}"),
        }
    }

    #[test]
    fn to_request_reads_back_to_the_same_spec() {
        let full = check_ok(json!({
            "type": "report", "jobPriority": "critical", "payload": {"a": [1, 2]},
            "maxRetries": 7, "executionTimeout": 42, "metadata": {"team": "x"},
            "tags": ["t1", "t2"], "parentJobId": "p-1", "idempotencyKey": "k-1",
            "retryBackoffMs": 250, "scheduleAt": "2027-01-02T03:04:05.678Z",
        }));
        let delayed = check_ok(json!({"type": "echo", "priority": 1, "delaySeconds": 90}));
        let plain = check_ok(json!({"type": "echo", "priority": "HIGH"}));
        for spec in [full, delayed, plain] {
            assert_eq!(check_ok(spec.to_request()), spec);
        }
    }

    fn check_err(body: Value, expected_fields: &[&str]) {
        let violations = parse_job_request(&body, "").expect_err("expected violations");
        let fields: Vec<&str> = violations.keys().map(String::as_str).collect();
        assert_eq!(fields, expected_fields, "{violations:?}");
    }

    #[test]
    fn seed_example_reads_with_defaults() {
        let spec = check_ok(json!({
            "type": "calculate", "jobPriority": "HIGH",
            "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}
        }));
        assert_eq!(spec.job_type, "calculate");
        assert_eq!(spec.priority, Priority::High);
        assert_eq!(spec.max_retries, DEFAULT_MAX_RETRIES);
        assert_eq!(spec.execution_timeout_s, DEFAULT_EXECUTION_TIMEOUT_S);
        assert_eq!(spec.payload["numbers"], json!([1, 2, 3, 4, 5]));
    }

    #[test]
    fn aliases_are_read() {
        let spec = check_ok(json!({"type": "echo", "priority": 15}));
        assert_eq!(spec.priority, Priority::Critical);
        assert!(spec.payload.is_empty());
        let spec = check_ok(
            json!({"type": "echo", "jobPriority": "low", "metadata": {"a": "b"}, "tags": ["x"]}),
        );
        assert_eq!(spec.priority, Priority::Low);
        assert_eq!(spec.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(spec.tags, ["x"]);
    }

    #[test]
    fn bad_fields_are_named() {
        check_err(json!({"jobPriority": "HIGH"}), &["type"]);
        check_err(json!({"type": "  ", "jobPriority": "HIGH"}), &["type"]);
        check_err(
            json!({"type": "x".repeat(256), "jobPriority": "HIGH"}),
            &["type"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": "URGENT"}),
            &["jobPriority"],
        );
        check_err(json!({"type": "echo"}), &["jobPriority"]);
        check_err(
            json!({"type": "echo", "jobPriority": 1, "payload": [1]}),
            &["payload"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "maxRetries": -1}),
            &["maxRetries"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "executionTimeout": 0}),
            &["executionTimeout"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "metadata": {"a": 1}}),
            &["metadata"],
        );
        check_err(
            json!({"type": 5, "jobPriority": 1, "tags": "x"}),
            &["tags", "type"],
        );
        check_err(json!([1, 2]), &["body"]);
    }

    #[test]
    fn scheduling_idempotency_and_backoff_fields_are_read() {
        let spec = check_ok(
            json!({"type": "echo", "jobPriority": 1, "delaySeconds": 3, "idempotencyKey": "k-1", "retryBackoffMs": 50}),
        );
        assert_eq!(spec.schedule, Some(Schedule::Delay(3_000)));
        assert_eq!(spec.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(spec.retry_backoff_ms, Some(50));
        let spec = check_ok(
            json!({"type": "echo", "jobPriority": 1, "scheduleAt": "1970-01-01T00:00:02Z"}),
        );
        assert_eq!(spec.schedule, Some(Schedule::At(Millis(2_000))));
        check_ok(json!({"type": "echo", "jobPriority": 1, "delaySeconds": null}));
        check_err(
            json!({"type": "echo", "jobPriority": 1, "scheduleAt": "soon"}),
            &["scheduleAt"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "delaySeconds": -1}),
            &["delaySeconds"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "delaySeconds": 1, "scheduleAt": "1970-01-01T00:00:02Z"}),
            &["delaySeconds"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "idempotencyKey": " "}),
            &["idempotencyKey"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "retryBackoffMs": "x"}),
            &["retryBackoffMs"],
        );
    }

    #[test]
    fn callback_url_is_refused_by_name_until_webhooks_exist() {
        check_err(
            json!({"type": "echo", "jobPriority": 1, "callbackUrl": "http://x"}),
            &["callbackUrl"],
        );
    }

    #[test]
    fn batch_prefix_names_item_paths() {
        let violations =
            parse_job_request(&json!({"jobPriority": 1}), "jobs[3].").expect_err("invalid");
        assert!(violations.contains_key("jobs[3].type"));
    }
}
