//! Reading a job request (CONTRACT.md, "Job submission") into a validated [`JobSpec`].
//!
//! Parsing walks a `serde_json::Value` by hand rather than deriving `Deserialize`, so every bad
//! field is reported by name in one answer (`{"error":"Validation failed","violations":{..}}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Priority;

/// Default `maxRetries` of CONTRACT.md.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default `executionTimeout` of CONTRACT.md, in seconds.
pub const DEFAULT_EXECUTION_TIMEOUT_S: u64 = 300;
/// Longest accepted `type`, in characters (CONTRACT.md).
pub const MAX_TYPE_CHARS: usize = 255;
/// Largest accepted `executionTimeout`: 7 days, in seconds.
pub const MAX_EXECUTION_TIMEOUT_S: u64 = 7 * 24 * 3600;
/// Largest accepted `maxRetries`.
pub const MAX_MAX_RETRIES: u32 = 1000;

/// Request fields that a later issue implements. They are refused by name until then, never
/// silently ignored (issue 2).
pub const NOT_YET_SUPPORTED: [&str; 4] = [
    "scheduleAt",
    "delaySeconds",
    "idempotencyKey",
    "callbackUrl",
];

/// What a client asked to run: the validated, immutable part of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The handler to run (`type`), 1..=255 characters, not blank.
    pub job_type: String,
    pub priority: Priority,
    /// The handler's input; always a JSON object (`{}` by default).
    pub payload: Map<String, Value>,
    /// Retries after the first attempt (`maxRetries`, default 3).
    pub max_retries: u32,
    /// Seconds an attempt may run (`executionTimeout`, default 300).
    pub execution_timeout_s: u64,
    pub metadata: BTreeMap<String, String>,
    pub parent_job_id: Option<String>,
    pub tags: Vec<String>,
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

    let job_type = match fields.get("type") {
        Some(Value::String(text)) if text.trim().is_empty() => {
            violation("type", "must not be blank");
            None
        }
        Some(Value::String(text)) if text.chars().count() > MAX_TYPE_CHARS => {
            violation("type", "must be at most 255 characters");
            None
        }
        Some(Value::String(text)) => Some(text.trim().to_string()),
        None | Some(Value::Null) => {
            violation("type", "is required");
            None
        }
        Some(_) => {
            violation("type", "must be a string");
            None
        }
    };

    let priority = match fields.get("jobPriority").or_else(|| fields.get("priority")) {
        None | Some(Value::Null) => {
            violation("jobPriority", "is required (LOW, MEDIUM, HIGH or CRITICAL)");
            None
        }
        Some(value) => {
            let parsed = match value {
                Value::String(text) => Priority::parse(text),
                Value::Number(number) => number.as_i64().and_then(Priority::from_number),
                _ => None,
            };
            if parsed.is_none() {
                violation(
                    "jobPriority",
                    "must be LOW, MEDIUM, HIGH or CRITICAL (any case) or 1, 5, 10, 15",
                );
            }
            parsed
        }
    };

    let payload = match fields.get("payload") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(object)) => Some(object.clone()),
        Some(_) => {
            violation("payload", "must be a JSON object");
            None
        }
    };

    let max_retries = match fields.get("maxRetries") {
        None | Some(Value::Null) => Some(DEFAULT_MAX_RETRIES),
        Some(value) => match value.as_u64() {
            Some(n) if n <= u64::from(MAX_MAX_RETRIES) => Some(n as u32),
            _ => {
                violation("maxRetries", "must be an integer from 0 to 1000");
                None
            }
        },
    };

    let execution_timeout_s = match fields.get("executionTimeout") {
        None | Some(Value::Null) => Some(DEFAULT_EXECUTION_TIMEOUT_S),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 && n <= MAX_EXECUTION_TIMEOUT_S => Some(n),
            _ => {
                violation(
                    "executionTimeout",
                    "must be an integer number of seconds from 1 to 604800",
                );
                None
            }
        },
    };

    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => Some(BTreeMap::new()),
        Some(Value::Object(object)) => {
            let entries: Option<BTreeMap<String, String>> = object
                .iter()
                .map(|(key, value)| value.as_str().map(|text| (key.clone(), text.to_string())))
                .collect();
            if entries.is_none() {
                violation("metadata", "must be an object of string to string");
            }
            entries
        }
        Some(_) => {
            violation("metadata", "must be an object of string to string");
            None
        }
    };

    let parent_job_id = match fields.get("parentJobId") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text.clone())),
        Some(_) => {
            violation("parentJobId", "must be a string");
            None
        }
    };

    let tags = match fields.get("tags") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let tags: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect();
            if tags.is_none() {
                violation("tags", "must be an array of strings");
            }
            tags
        }
        Some(_) => {
            violation("tags", "must be an array of strings");
            None
        }
    };

    for field in NOT_YET_SUPPORTED {
        if fields.get(field).is_some_and(|value| !value.is_null()) {
            violation(
                field,
                "is not supported yet by this server; resend without it",
            );
        }
    }

    match (
        job_type,
        priority,
        payload,
        max_retries,
        execution_timeout_s,
        metadata,
        parent_job_id,
        tags,
    ) {
        (
            Some(job_type),
            Some(priority),
            Some(payload),
            Some(max_retries),
            Some(execution_timeout_s),
            Some(metadata),
            Some(parent_job_id),
            Some(tags),
        ) if violations.is_empty() => Ok(JobSpec {
            job_type,
            priority,
            payload,
            max_retries,
            execution_timeout_s,
            metadata,
            parent_job_id,
            tags,
        }),
        _ => Err(violations),
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
    fn later_fields_are_refused_by_name() {
        check_err(
            json!({"type": "echo", "jobPriority": 1, "delaySeconds": 3}),
            &["delaySeconds"],
        );
        check_err(
            json!({"type": "echo", "jobPriority": 1, "scheduleAt": "2030-01-01T00:00:00Z", "idempotencyKey": "k", "callbackUrl": "http://x"}),
            &["callbackUrl", "idempotencyKey", "scheduleAt"],
        );
        check_ok(json!({"type": "echo", "jobPriority": 1, "delaySeconds": null}));
    }

    #[test]
    fn batch_prefix_names_item_paths() {
        let violations =
            parse_job_request(&json!({"jobPriority": 1}), "jobs[3].").expect_err("invalid");
        assert!(violations.contains_key("jobs[3].type"));
    }
}
