//! Built-in handlers of CONTRACT.md: calculate, transform, validate, sleep, echo, with their type aliases.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Map, Number, Value};

/// Why a handler failed. `Permanent` = bad input, never retried; `Retryable` = may succeed on a later attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Bad input: the job fails at once, whatever its `maxRetries`.
    #[error("{0}")]
    Permanent(String),
    /// A transient failure: the job may be retried.
    #[error("{0}")]
    Retryable(String),
}

/// Which built-in family a job type belongs to (None for an unknown type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `calculate` and its operation aliases.
    Calculate,
    /// `transform` and its operation aliases.
    Transform,
    /// `validate` and its rule aliases.
    Validate,
    /// `sleep`: waits `payload.ms` milliseconds.
    Sleep,
    /// `echo`: answers the payload.
    Echo,
}

const CALCULATE_TYPES: &[&str] = &[
    "calculate",
    "sum",
    "average",
    "min",
    "max",
    "sort",
    "aggregate",
    "statistics",
    "stddev",
];
const TRANSFORM_TYPES: &[&str] = &[
    "transform",
    "uppercase",
    "lowercase",
    "reverse",
    "filter",
    "normalize",
];
const VALIDATE_TYPES: &[&str] = &[
    "validate", "email", "phone", "numeric", "required", "range", "length", "regex",
];

/// The longest sleep `sleep_duration` answers: 24 hours.
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 60 * 60);

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\A[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\z")
        .expect("the email pattern is a valid regex")
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\A\+?[1-9][0-9]{1,14}\z").expect("the phone pattern is a valid regex")
});

impl Builtin {
    /// Maps a job `type` (case-insensitive, trimmed) to its family: "calculate" and aliases sum, average, min, max, sort, aggregate, statistics, stddev -> Calculate; "transform" and uppercase, lowercase, reverse, filter, normalize -> Transform; "validate" and email, phone, numeric, required, range, length, regex -> Validate; "sleep" -> Sleep; "echo" -> Echo.
    pub fn for_type(job_type: &str) -> Option<Builtin> {
        let name = job_type.trim().to_lowercase();
        [
            Self::Calculate,
            Self::Transform,
            Self::Validate,
            Self::Sleep,
            Self::Echo,
        ]
        .into_iter()
        .find(|family| family.type_names().contains(&name.as_str()))
    }

    /// Every type name this family answers to (the family name first).
    pub fn type_names(self) -> &'static [&'static str] {
        match self {
            Self::Calculate => CALCULATE_TYPES,
            Self::Transform => TRANSFORM_TYPES,
            Self::Validate => VALIDATE_TYPES,
            Self::Sleep => &["sleep"],
            Self::Echo => &["echo"],
        }
    }
}

fn permanent(message: impl Into<String>) -> HandlerError {
    HandlerError::Permanent(message.into())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as text: a string without quotes, anything else as its JSON text.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A finite f64 as JSON, or a Permanent error naming `what` when it overflowed.
fn float(x: f64, what: &str) -> Result<Value, HandlerError> {
    Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| permanent(format!("{what} overflows a 64-bit float")))
}

/// The operation named by `payload[field]` (trimmed, lowercase), else the one the job type
/// implies when it is one of `implied`; a missing or blank field with no implied name fails.
fn operation_name(
    job_type: &str,
    payload: &Map<String, Value>,
    field: &str,
    implied: &[&str],
    missing: &str,
) -> Result<String, HandlerError> {
    match payload.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_lowercase()),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            let name = job_type.trim().to_lowercase();
            if implied.contains(&name.as_str()) {
                Ok(name)
            } else {
                Err(permanent(missing))
            }
        }
        Some(other) => Err(permanent(format!(
            "payload.{field} must be a string, got {}",
            kind(other)
        ))),
    }
}

/// One input number: its JSON form, its f64 value and, for a JSON integer, its exact value.
struct Num {
    json: Number,
    float: f64,
    int: Option<i128>,
}

fn read_numbers(payload: &Map<String, Value>) -> Result<Vec<Num>, HandlerError> {
    const SHAPE: &str = "numbers must be a non-empty array of numbers";
    let items = match payload.get("numbers") {
        None | Some(Value::Null) => return Err(permanent(SHAPE)),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(permanent(format!("{SHAPE}, got an empty array")))
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(permanent(format!("{SHAPE}, got {}", kind(other)))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Number(n) => match n.as_f64().filter(|x| x.is_finite()) {
                Some(float) => Ok(Num {
                    json: n.clone(),
                    float,
                    int: n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
                }),
                None => Err(permanent(format!("numbers[{i}] is not a finite number"))),
            },
            _ => Err(permanent(format!("numbers[{i}] is not a number"))),
        })
        .collect()
}

/// The numbers of one calculate job, sorted ascending.
struct Numbers {
    sorted: Vec<Num>,
    all_integers: bool,
}

impl Numbers {
    fn new(mut sorted: Vec<Num>) -> Self {
        let all_integers = sorted.iter().all(|n| n.int.is_some());
        // One consistent total order: exact integers, or else f64 values.
        if all_integers {
            sorted.sort_by_key(|n| n.int);
        } else {
            sorted.sort_by(|a, b| a.float.total_cmp(&b.float));
        }
        Numbers {
            sorted,
            all_integers,
        }
    }

    fn count(&self) -> f64 {
        self.sorted.len() as f64
    }

    /// An input number as output: unchanged when every input is an integer, else as a float.
    fn out(&self, n: &Num) -> Result<Value, HandlerError> {
        if self.all_integers {
            Ok(Value::Number(n.json.clone()))
        } else {
            float(n.float, "number")
        }
    }

    fn min(&self) -> Result<Value, HandlerError> {
        self.sorted.first().map_or(Ok(Value::Null), |n| self.out(n))
    }

    fn max(&self) -> Result<Value, HandlerError> {
        self.sorted.last().map_or(Ok(Value::Null), |n| self.out(n))
    }

    fn sum(&self) -> Result<Value, HandlerError> {
        if self.all_integers {
            let total = self
                .sorted
                .iter()
                .try_fold(0i128, |acc, n| acc.checked_add(n.int.unwrap_or(0)))
                .ok_or_else(|| permanent("sum overflows"))?;
            if let Ok(small) = i64::try_from(total) {
                return Ok(json!(small));
            }
            if let Ok(big) = u64::try_from(total) {
                return Ok(json!(big));
            }
            return float(total as f64, "sum");
        }
        float(self.sorted.iter().map(|n| n.float).sum(), "sum")
    }

    fn mean(&self) -> Result<f64, HandlerError> {
        let sum: f64 = self.sorted.iter().map(|n| n.float).sum();
        let mean = if sum.is_finite() {
            sum / self.count()
        } else {
            self.sorted.iter().map(|n| n.float / self.count()).sum()
        };
        finite(mean, "average")
    }

    fn median(&self) -> Result<f64, HandlerError> {
        // Already ascending: i128 -> f64 is monotonic, so integer order is float order too.
        let floats: Vec<f64> = self.sorted.iter().map(|n| n.float).collect();
        let mid = floats.len() / 2;
        match (floats.get(mid.wrapping_sub(1)), floats.get(mid)) {
            (Some(a), Some(b)) if floats.len() % 2 == 0 => {
                let half_sum = (a + b) / 2.0;
                Ok(if half_sum.is_finite() {
                    half_sum
                } else {
                    a / 2.0 + b / 2.0
                })
            }
            (_, Some(b)) => Ok(*b),
            _ => Err(permanent("numbers must be a non-empty array of numbers")),
        }
    }

    /// Sample variance (n - 1); 0 for a single number.
    fn variance(&self, mean: f64) -> Result<f64, HandlerError> {
        if self.sorted.len() < 2 {
            return Ok(0.0);
        }
        let squares: f64 = self.sorted.iter().map(|n| (n.float - mean).powi(2)).sum();
        finite(squares / (self.count() - 1.0), "variance")
    }
}

fn finite(x: f64, what: &str) -> Result<f64, HandlerError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(permanent(format!("{what} overflows a 64-bit float")))
    }
}

/// Runs calculate: `job_type` may imply the operation (type "average" with no payload.operation computes the average). payload.operation wins when present.
///
/// Payload: `operation` (sum, average, min, max, sort, aggregate, statistics, stddev) and
/// `numbers` (non-empty array of JSON numbers). Results: sum `{sum, count}`; average
/// `{average, count}`; min `{min, count}`; max `{max, count}`; sort `{sorted, count}` (ascending);
/// aggregate `{sum, average, min, max, count}`; statistics `{mean, median, stdev, variance, count}`;
/// stddev `{mean, stddev, variance, count}` (sample variance, 0 for one number). sum, min, max and
/// sorted are JSON integers when every input is an integer; the other figures are floats.
///
/// Errors (all Permanent): no operation given nor implied, an unknown operation, a missing,
/// empty or non-array `numbers`, a non-number element, or a result that overflows f64.
pub fn calculate(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let operation = operation_name(
        job_type,
        payload,
        "operation",
        &CALCULATE_TYPES[1..],
        "payload.operation is required",
    )?;
    if !CALCULATE_TYPES[1..].contains(&operation.as_str()) {
        return Err(permanent(format!(
            "unknown calculate operation '{operation}'; expected one of {}",
            CALCULATE_TYPES[1..].join(", ")
        )));
    }
    let numbers = Numbers::new(read_numbers(payload)?);
    let count = numbers.sorted.len();
    Ok(match operation.as_str() {
        "sum" => json!({"sum": numbers.sum()?, "count": count}),
        "average" => json!({"average": numbers.mean()?, "count": count}),
        "min" => json!({"min": numbers.min()?, "count": count}),
        "max" => json!({"max": numbers.max()?, "count": count}),
        "sort" => {
            let sorted = numbers.sorted.iter().map(|n| numbers.out(n));
            json!({"sorted": sorted.collect::<Result<Vec<_>, _>>()?, "count": count})
        }
        "aggregate" => json!({
            "sum": numbers.sum()?, "average": numbers.mean()?,
            "min": numbers.min()?, "max": numbers.max()?, "count": count,
        }),
        "statistics" => {
            let mean = numbers.mean()?;
            let variance = numbers.variance(mean)?;
            json!({
                "mean": mean, "median": numbers.median()?,
                "stdev": variance.sqrt(), "variance": variance, "count": count,
            })
        }
        _ /* stddev, the only name left */ => {
            let mean = numbers.mean()?;
            let variance = numbers.variance(mean)?;
            json!({"mean": mean, "stddev": variance.sqrt(), "variance": variance, "count": count})
        }
    })
}

/// Runs transform: the operation is payload `operation`, else implied by `job_type`.
///
/// Payload: `operation` (uppercase, lowercase, reverse, filter, normalize), `data` (an object),
/// and for filter `filter_key`, `filter_value`. Results:
/// - uppercase/lowercase/reverse change keys and values as text (strings without quotes,
///   others as JSON text) -> `{transformed, operation}`; when two keys become one, the later
///   entry in iteration order wins.
/// - filter keeps entries whose key contains `filter_key` or whose value as text contains
///   `filter_value`; with neither given, the numeric values above 0 ->
///   `{filtered, original_count, filtered_count}`.
/// - normalize maps numeric values to (v - min) / (max - min) (range 1 when max = min), passes
///   the others through -> `{normalized, min, max}` (min, max null without numeric values).
///
/// Errors (all Permanent): no operation given nor implied, an unknown operation, `data`
/// missing or not an object.
pub fn transform(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let operation = operation_name(
        job_type,
        payload,
        "operation",
        &TRANSFORM_TYPES[1..],
        "payload.operation is required",
    )?;
    if !TRANSFORM_TYPES[1..].contains(&operation.as_str()) {
        return Err(permanent(format!(
            "unknown transform operation '{operation}'; expected one of {}",
            TRANSFORM_TYPES[1..].join(", ")
        )));
    }
    let data = match payload.get("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => return Err(permanent("payload.data is required (an object)")),
        Some(other) => {
            return Err(permanent(format!(
                "payload.data must be an object, got {}",
                kind(other)
            )))
        }
    };
    match operation.as_str() {
        "filter" => {
            let given = |key: &str| payload.get(key).filter(|v| !v.is_null()).map(text);
            let (key_part, value_part) = (given("filter_key"), given("filter_value"));
            let keep = |key: &String, value: &Value| match (&key_part, &value_part) {
                (None, None) => value.as_f64().is_some_and(|x| x > 0.0),
                (key_part, value_part) => {
                    key_part.as_deref().is_some_and(|part| key.contains(part))
                        || value_part.as_deref().is_some_and(|part| text(value).contains(part))
                }
            };
            let filtered: Map<String, Value> = data
                .iter()
                .filter(|(key, value)| keep(key, value))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let filtered_count = filtered.len();
            Ok(json!({
                "filtered": filtered,
                "original_count": data.len(),
                "filtered_count": filtered_count,
            }))
        }
        "normalize" => normalize(data),
        _ /* uppercase, lowercase, reverse */ => {
            let change = |s: &str| match operation.as_str() {
                "uppercase" => s.to_uppercase(),
                "lowercase" => s.to_lowercase(),
                _ => s.chars().rev().collect(),
            };
            let transformed: Map<String, Value> = data
                .iter()
                .map(|(key, value)| (change(key), Value::String(change(&text(value)))))
                .collect();
            Ok(json!({"transformed": transformed, "operation": operation}))
        }
    }
}

fn normalize(data: &Map<String, Value>) -> Result<Value, HandlerError> {
    let numeric = |value: &Value| value.as_f64().filter(|x| x.is_finite());
    let extreme = |pick_max: bool| {
        data.values()
            .filter_map(|value| numeric(value).map(|x| (value, x)))
            .reduce(|best, next| {
                let better = if pick_max {
                    next.1 > best.1
                } else {
                    next.1 < best.1
                };
                if better {
                    next
                } else {
                    best
                }
            })
    };
    let (low, high) = match (extreme(false), extreme(true)) {
        (Some(low), Some(high)) => (low, high),
        _ => return Ok(json!({"normalized": data, "min": null, "max": null})),
    };
    let range = high.1 - low.1;
    let mut normalized = Map::new();
    for (key, value) in data {
        let scaled = match numeric(value) {
            None => value.clone(),
            Some(_) if range == 0.0 => json!(0.0),
            // Halving keeps a range wider than f64::MAX finite.
            Some(x) if !range.is_finite() => {
                float((x / 2.0 - low.1 / 2.0) / (high.1 / 2.0 - low.1 / 2.0), key)?
            }
            Some(x) => float((x - low.1) / range, key)?,
        };
        normalized.insert(key.clone(), scaled);
    }
    Ok(json!({"normalized": normalized, "min": low.0, "max": high.0}))
}

/// Pass or fail of a validation rule, with its message.
type Verdict = (bool, String);

/// The value as text for the text rules, or the failing verdict for null, arrays and objects.
fn text_value(value: &Value) -> Result<String, Verdict> {
    match value {
        Value::Null => Err((false, "value is missing".into())),
        Value::Array(_) | Value::Object(_) => {
            Err((false, format!("value must be text, got {}", kind(value))))
        }
        other => Ok(text(other)),
    }
}

/// The value as a finite number: a JSON number, or a string that parses as one.
fn number_value(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// A numeric bound from the payload (default when missing or null) as (JSON, f64).
fn number_bound(
    payload: &Map<String, Value>,
    key: &str,
    default: i64,
) -> Result<(Value, f64), HandlerError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok((json!(default), default as f64)),
        Some(Value::Number(n)) => match n.as_f64().filter(|x| x.is_finite()) {
            Some(x) => Ok((Value::Number(n.clone()), x)),
            None => Err(permanent(format!("{key} must be a finite number"))),
        },
        Some(other) => Err(permanent(format!(
            "{key} must be a number, got {}",
            kind(other)
        ))),
    }
}

fn length_bound(
    payload: &Map<String, Value>,
    key: &str,
    default: u64,
) -> Result<u64, HandlerError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| permanent(format!("{key} must be a non-negative integer"))),
    }
}

fn verdict(valid: bool, pass: &str, fail: &str) -> Verdict {
    (valid, if valid { pass } else { fail }.to_string())
}

/// For validate: the rule is payload "type", or implied by job_type (type "email" validates an email).
///
/// Payload: `type` (email, phone, numeric, required, range, length, regex), `value`, and the
/// bounds `min`, `max` (range; defaults 0, 100), `min_length`, `max_length` (length; defaults
/// 0, 255), `pattern` (regex). Result `{valid, type, value, message}` plus the bounds used
/// (range: `min, max`; length: `min_length, max_length`; regex: `pattern`). A value that fails
/// the rule is not an error: it answers `valid: false` with a message.
///
/// Errors (all Permanent): no rule given nor implied, an unknown rule, a bound of the wrong
/// type or min above max, and for regex a missing, non-string or invalid `pattern`.
pub fn validate(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let rule = operation_name(
        job_type,
        payload,
        "type",
        &VALIDATE_TYPES[1..],
        "payload.type (the validation rule) is required",
    )?;
    let value = payload.get("value").unwrap_or(&Value::Null);
    let mut bounds = Map::new();
    let (valid, message) = match rule.as_str() {
        "email" | "phone" => match text_value(value) {
            Err(failed) => failed,
            Ok(text) if rule == "email" => verdict(
                EMAIL.is_match(&text),
                "valid email address",
                "value is not a valid email address",
            ),
            Ok(text) => {
                let digits: String = text.chars().filter(|c| !" -()".contains(*c)).collect();
                verdict(
                    PHONE.is_match(&digits),
                    "valid phone number",
                    "value is not a valid phone number",
                )
            }
        },
        "numeric" => verdict(
            number_value(value).is_some(),
            "value is a finite number",
            "value is not a finite number",
        ),
        "required" => match value {
            Value::Null => (false, "value is required".into()),
            Value::String(s) if s.trim().is_empty() => (false, "value is blank".into()),
            _ => (true, "value is present".into()),
        },
        "range" => {
            let (min_json, min) = number_bound(payload, "min", 0)?;
            let (max_json, max) = number_bound(payload, "max", 100)?;
            if min > max {
                return Err(permanent(format!(
                    "min ({min}) must not exceed max ({max})"
                )));
            }
            bounds.insert("min".into(), min_json.clone());
            bounds.insert("max".into(), max_json.clone());
            match number_value(value) {
                None => (false, "value is not a number".into()),
                Some(x) if (min..=max).contains(&x) => {
                    (true, format!("value is within [{min_json}, {max_json}]"))
                }
                Some(_) => (false, format!("value is outside [{min_json}, {max_json}]")),
            }
        }
        "length" => {
            let min_length = length_bound(payload, "min_length", 0)?;
            let max_length = length_bound(payload, "max_length", 255)?;
            if min_length > max_length {
                return Err(permanent(format!(
                    "min_length ({min_length}) must not exceed max_length ({max_length})"
                )));
            }
            bounds.insert("min_length".into(), json!(min_length));
            bounds.insert("max_length".into(), json!(max_length));
            match text_value(value) {
                Err(failed) => failed,
                Ok(text) => {
                    let length = text.chars().count() as u64;
                    let within = (min_length..=max_length).contains(&length);
                    let relation = if within { "within" } else { "outside" };
                    (
                        within,
                        format!("length {length} is {relation} [{min_length}, {max_length}]"),
                    )
                }
            }
        }
        "regex" => {
            let pattern = match payload.get("pattern") {
                Some(Value::String(pattern)) => pattern,
                None | Some(Value::Null) => {
                    return Err(permanent("pattern is required for the regex rule"))
                }
                Some(other) => {
                    return Err(permanent(format!(
                        "pattern must be a string, got {}",
                        kind(other)
                    )))
                }
            };
            // Compile alone first, so "a)|(b" fails instead of changing meaning once anchored.
            let invalid = |e: regex::Error| permanent(format!("invalid pattern: {e}"));
            Regex::new(pattern).map_err(invalid)?;
            let whole = Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(invalid)?;
            bounds.insert("pattern".into(), json!(pattern));
            match text_value(value) {
                Err(failed) => failed,
                Ok(text) => verdict(
                    whole.is_match(&text),
                    "value matches the pattern",
                    "value does not match the pattern",
                ),
            }
        }
        other => {
            return Err(permanent(format!(
                "unknown validation rule '{other}'; expected one of {}",
                VALIDATE_TYPES[1..].join(", ")
            )))
        }
    };
    let mut result = Map::new();
    result.insert("valid".into(), json!(valid));
    result.insert("type".into(), json!(rule));
    result.insert("value".into(), value.clone());
    result.insert("message".into(), json!(message));
    result.extend(bounds);
    Ok(Value::Object(result))
}

/// Reads payload `ms` (non-negative integer, default 0; cap it at, say, 24 h; a non-number is Permanent error) and returns the Duration to sleep; the caller sleeps.
///
/// A missing or null `ms` is 0; an integral float such as `5.0` is accepted; values above
/// [`MAX_SLEEP`] are capped to it. Errors (Permanent): `ms` negative, fractional or not a number.
pub fn sleep_duration(payload: &Map<String, Value>) -> Result<Duration, HandlerError> {
    let max_ms = MAX_SLEEP.as_secs() * 1000;
    let bad = |got: &str| permanent(format!("ms must be a non-negative integer, got {got}"));
    let ms = match payload.get("ms") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => ms,
            (None, Some(x)) if x >= 0.0 && x.fract() == 0.0 => x.min(max_ms as f64) as u64,
            _ => return Err(bad(&n.to_string())),
        },
        Some(other) => return Err(bad(kind(other))),
    };
    Ok(Duration::from_millis(ms.min(max_ms)))
}

/// Sleep's result after sleeping: `{"slept_ms": ms}`.
pub fn sleep_result(ms: u64) -> Value {
    json!({ "slept_ms": ms })
}

/// echo: result `{"echo": <payload object>}`.
pub fn echo(payload: &Map<String, Value>) -> Value {
    json!({ "echo": payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a job of `job_type` the way the worker dispatches it.
    fn run(job_type: &str, payload: Value) -> Result<Value, HandlerError> {
        let Value::Object(payload) = payload else {
            panic!("test payload must be an object")
        };
        match Builtin::for_type(job_type) {
            Some(Builtin::Calculate) => calculate(job_type, &payload),
            Some(Builtin::Transform) => transform(job_type, &payload),
            Some(Builtin::Validate) => validate(job_type, &payload),
            Some(Builtin::Sleep) => sleep_duration(&payload)
                .map(|d| sleep_result(u64::try_from(d.as_millis()).expect("capped at 24 h"))),
            Some(Builtin::Echo) => Ok(echo(&payload)),
            None => panic!("no built-in for {job_type}"),
        }
    }

    fn check(job_type: &str, payload: Value, expected: Value) {
        assert_eq!(
            run(job_type, payload.clone()),
            Ok(expected),
            "{job_type} {payload}"
        );
    }

    fn check_err(job_type: &str, payload: Value, message: &str) {
        let expected = Err(HandlerError::Permanent(message.to_string()));
        assert_eq!(
            run(job_type, payload.clone()),
            expected,
            "{job_type} {payload}"
        );
    }

    #[test]
    fn every_type_name_maps_to_its_family() {
        let families = [
            Builtin::Calculate,
            Builtin::Transform,
            Builtin::Validate,
            Builtin::Sleep,
            Builtin::Echo,
        ];
        for family in families {
            for name in family.type_names() {
                assert_eq!(Builtin::for_type(name), Some(family));
            }
        }
        assert_eq!(Builtin::Calculate.type_names()[0], "calculate");
        assert_eq!(Builtin::for_type("  AVERAGE "), Some(Builtin::Calculate));
        assert_eq!(Builtin::for_type("Email"), Some(Builtin::Validate));
        assert_eq!(Builtin::for_type("nope"), None);
        assert_eq!(Builtin::for_type(""), None);
    }

    #[test]
    fn calculate_operations_and_aliases() {
        let five = json!([3, 1, 5, 2, 4]);
        let cases = [
            (
                "sum",
                json!({"numbers": five}),
                json!({"sum": 15, "count": 5}),
            ),
            (
                "average",
                json!({"numbers": five}),
                json!({"average": 3.0, "count": 5}),
            ),
            (
                "min",
                json!({"numbers": five}),
                json!({"min": 1, "count": 5}),
            ),
            (
                "max",
                json!({"numbers": five}),
                json!({"max": 5, "count": 5}),
            ),
            (
                "sort",
                json!({"numbers": five}),
                json!({"sorted": [1, 2, 3, 4, 5], "count": 5}),
            ),
            (
                "aggregate",
                json!({"numbers": five}),
                json!({"sum": 15, "average": 3.0, "min": 1, "max": 5, "count": 5}),
            ),
            (
                "calculate",
                json!({"operation": "sum", "numbers": [1.5, 2.5]}),
                json!({"sum": 4.0, "count": 2}),
            ),
            (
                "calculate",
                json!({"operation": " MAX ", "numbers": [1, 2.5, -7]}),
                json!({"max": 2.5, "count": 3}),
            ),
            (
                "sort",
                json!({"numbers": [2, -1.5, 0]}),
                json!({"sorted": [-1.5, 0.0, 2.0], "count": 3}),
            ),
            (
                "sum",
                json!({"numbers": [u64::MAX, u64::MAX]}),
                json!({"sum": 2.0 * u64::MAX as f64, "count": 2}),
            ),
            (
                "sum",
                json!({"numbers": [-5, 2]}),
                json!({"sum": -3, "count": 2}),
            ),
            // payload.operation wins over the type's implied operation.
            (
                "sum",
                json!({"operation": "min", "numbers": five}),
                json!({"min": 1, "count": 5}),
            ),
            (
                "average",
                json!({"operation": null, "numbers": [1, 2]}),
                json!({"average": 1.5, "count": 2}),
            ),
            (
                "average",
                json!({"numbers": [1e308, 1e308]}),
                json!({"average": 1e308, "count": 2}),
            ),
        ];
        for (job_type, payload, expected) in cases {
            check(job_type, payload, expected);
        }
    }

    #[test]
    fn sum_of_integers_is_a_json_integer() {
        let result = run("sum", json!({"numbers": [1, 2, 3, 4, 5]})).expect("valid input");
        assert_eq!(result["sum"], json!(15));
        assert!(result["sum"].is_i64());
    }

    #[test]
    fn statistics_and_stddev_use_the_sample_variance() {
        let numbers = json!([2, 4, 4, 4, 5, 5, 7, 9]);
        let variance = 32.0_f64 / 7.0;
        check(
            "statistics",
            json!({"numbers": numbers}),
            json!({"mean": 5.0, "median": 4.5, "stdev": variance.sqrt(), "variance": variance, "count": 8}),
        );
        check(
            "stddev",
            json!({"numbers": numbers}),
            json!({"mean": 5.0, "stddev": variance.sqrt(), "variance": variance, "count": 8}),
        );
        check(
            "statistics",
            json!({"numbers": [9, 1, 5]}),
            json!({"mean": 5.0, "median": 5.0, "stdev": 4.0, "variance": 16.0, "count": 3}),
        );
        check(
            "statistics",
            json!({"numbers": [3]}),
            json!({"mean": 3.0, "median": 3.0, "stdev": 0.0, "variance": 0.0, "count": 1}),
        );
        check(
            "calculate",
            json!({"operation": "stddev", "numbers": [7.5]}),
            json!({"mean": 7.5, "stddev": 0.0, "variance": 0.0, "count": 1}),
        );
    }

    #[test]
    fn calculate_rejects_bad_input_permanently() {
        let shape = "numbers must be a non-empty array of numbers";
        let cases = [
            (
                "calculate",
                json!({"numbers": [1]}),
                "payload.operation is required".to_string(),
            ),
            (
                "calculate",
                json!({"operation": " ", "numbers": [1]}),
                "payload.operation is required".into(),
            ),
            (
                "calculate",
                json!({"operation": 3}),
                "payload.operation must be a string, got number".into(),
            ),
            (
                "calculate",
                json!({"operation": "median", "numbers": [1]}),
                "unknown calculate operation 'median'; expected one of sum, average, min, max, \
                 sort, aggregate, statistics, stddev"
                    .into(),
            ),
            ("sum", json!({}), shape.into()),
            ("sum", json!({"numbers": null}), shape.into()),
            (
                "average",
                json!({"numbers": []}),
                format!("{shape}, got an empty array"),
            ),
            (
                "min",
                json!({"numbers": "1,2"}),
                format!("{shape}, got string"),
            ),
            (
                "max",
                json!({"numbers": {"a": 1}}),
                format!("{shape}, got object"),
            ),
            (
                "sort",
                json!({"numbers": [1, 2, "3"]}),
                "numbers[2] is not a number".into(),
            ),
            (
                "aggregate",
                json!({"numbers": [null]}),
                "numbers[0] is not a number".into(),
            ),
            (
                "statistics",
                json!({"numbers": [1, true]}),
                "numbers[1] is not a number".into(),
            ),
            (
                "sum",
                json!({"numbers": [1e308, 1e308]}),
                "sum overflows a 64-bit float".into(),
            ),
            (
                "stddev",
                json!({"numbers": [1e300, -1e300]}),
                "variance overflows a 64-bit float".into(),
            ),
        ];
        for (job_type, payload, message) in cases {
            check_err(job_type, payload, &message);
        }
    }

    #[test]
    fn transform_changes_keys_and_values_as_text() {
        let data = json!({"Name": "Ada", "n": 12, "ok": true, "none": null, "list": [1, "a"]});
        check(
            "uppercase",
            json!({"data": data}),
            json!({"transformed": {"NAME": "ADA", "N": "12", "OK": "TRUE", "NONE": "NULL", "LIST": "[1,\"A\"]"},
                   "operation": "uppercase"}),
        );
        check(
            "transform",
            json!({"operation": "lowercase", "data": {"Name": "ADA", "x": 1.5}}),
            json!({"transformed": {"name": "ada", "x": "1.5"}, "operation": "lowercase"}),
        );
        check(
            "reverse",
            json!({"data": {"abc": "héllo", "n": 123}}),
            json!({"transformed": {"cba": "olléh", "n": "321"}, "operation": "reverse"}),
        );
        check(
            "uppercase",
            json!({"operation": "reverse", "data": {}}),
            json!({"transformed": {}, "operation": "reverse"}),
        );
    }

    #[test]
    fn filter_keeps_matching_keys_or_values() {
        let data =
            json!({"apple": 3, "banana": -1, "cherry": "ripe apple", "date": 0, "fig": "1.5"});
        let cases = [
            (json!({"filter_key": "an"}), json!({"banana": -1})),
            (
                json!({"filter_value": "apple"}),
                json!({"cherry": "ripe apple"}),
            ),
            (json!({"filter_value": 3}), json!({"apple": 3})),
            (
                json!({"filter_key": "date", "filter_value": "ripe"}),
                json!({"cherry": "ripe apple", "date": 0}),
            ),
            (json!({"filter_key": null}), json!({"apple": 3})),
            (json!({}), json!({"apple": 3})),
        ];
        for (mut payload, filtered) in cases {
            payload["data"] = data.clone();
            let filtered_count = filtered.as_object().map_or(0, Map::len);
            check(
                "filter",
                payload,
                json!({"filtered": filtered, "original_count": 5, "filtered_count": filtered_count}),
            );
        }
    }

    #[test]
    fn normalize_scales_numeric_values() {
        check(
            "normalize",
            json!({"data": {"a": 10, "b": 20, "c": 15, "label": "x"}}),
            json!({"normalized": {"a": 0.0, "b": 1.0, "c": 0.5, "label": "x"}, "min": 10, "max": 20}),
        );
        check(
            "transform",
            json!({"operation": "normalize", "data": {"a": 4, "b": 4}}),
            json!({"normalized": {"a": 0.0, "b": 0.0}, "min": 4, "max": 4}),
        );
        check(
            "normalize",
            json!({"data": {"s": "text"}}),
            json!({"normalized": {"s": "text"}, "min": null, "max": null}),
        );
        check(
            "normalize",
            json!({"data": {"lo": -1e308, "hi": 1e308, "mid": 0}}),
            json!({"normalized": {"lo": 0.0, "hi": 1.0, "mid": 0.5}, "min": -1e308, "max": 1e308}),
        );
    }

    #[test]
    fn transform_rejects_bad_input_permanently() {
        let cases = [
            (
                "transform",
                json!({"data": {}}),
                "payload.operation is required",
            ),
            (
                "transform",
                json!({"operation": "shout", "data": {}}),
                "unknown transform operation 'shout'; expected one of uppercase, lowercase, \
                 reverse, filter, normalize",
            ),
            (
                "uppercase",
                json!({}),
                "payload.data is required (an object)",
            ),
            (
                "filter",
                json!({"data": [1, 2]}),
                "payload.data must be an object, got array",
            ),
            (
                "normalize",
                json!({"data": "x"}),
                "payload.data must be an object, got string",
            ),
        ];
        for (job_type, payload, message) in cases {
            check_err(job_type, payload, message);
        }
    }

    /// The validate result for `rule`, with `extra` bounds merged in.
    fn verdict_json(rule: &str, value: Value, valid: bool, message: &str, extra: Value) -> Value {
        let mut result = json!({"valid": valid, "type": rule, "value": value, "message": message});
        if let (Some(result), Value::Object(extra)) = (result.as_object_mut(), extra) {
            result.extend(extra);
        }
        result
    }

    #[test]
    fn validate_rules_answer_valid_or_invalid() {
        let none = json!({});
        let cases = [
            (
                "email",
                json!("a.b+c@example.co.uk"),
                true,
                "valid email address",
                none.clone(),
            ),
            (
                "email",
                json!("user@host.c"),
                false,
                "value is not a valid email address",
                none.clone(),
            ),
            (
                "email",
                json!("no-at-sign.com"),
                false,
                "value is not a valid email address",
                none.clone(),
            ),
            (
                "email",
                json!("a@.com"),
                false,
                "value is not a valid email address",
                none.clone(),
            ),
            (
                "email",
                json!(null),
                false,
                "value is missing",
                none.clone(),
            ),
            (
                "phone",
                json!("+1 (555) 123-4567"),
                true,
                "valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!("12"),
                true,
                "valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!(5551234567_u64),
                true,
                "valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!("0123456"),
                false,
                "value is not a valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!("1"),
                false,
                "value is not a valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!("1234567890123456"),
                false,
                "value is not a valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!("555.123.4567"),
                false,
                "value is not a valid phone number",
                none.clone(),
            ),
            (
                "phone",
                json!(["1"]),
                false,
                "value must be text, got array",
                none.clone(),
            ),
            (
                "numeric",
                json!(" -1.5e3 "),
                true,
                "value is a finite number",
                none.clone(),
            ),
            (
                "numeric",
                json!(42),
                true,
                "value is a finite number",
                none.clone(),
            ),
            (
                "numeric",
                json!("inf"),
                false,
                "value is not a finite number",
                none.clone(),
            ),
            (
                "numeric",
                json!("NaN"),
                false,
                "value is not a finite number",
                none.clone(),
            ),
            (
                "numeric",
                json!("12abc"),
                false,
                "value is not a finite number",
                none.clone(),
            ),
            (
                "numeric",
                json!(true),
                false,
                "value is not a finite number",
                none.clone(),
            ),
            (
                "required",
                json!("x"),
                true,
                "value is present",
                none.clone(),
            ),
            ("required", json!(0), true, "value is present", none.clone()),
            (
                "required",
                json!(" \t"),
                false,
                "value is blank",
                none.clone(),
            ),
            (
                "required",
                json!(null),
                false,
                "value is required",
                none.clone(),
            ),
        ];
        for (rule, value, valid, message, extra) in cases {
            let expected = verdict_json(rule, value.clone(), valid, message, extra);
            check(rule, json!({"value": value}), expected.clone());
            check("validate", json!({"type": rule, "value": value}), expected);
        }
        check(
            "required",
            json!({}),
            verdict_json("required", json!(null), false, "value is required", none),
        );
    }

    #[test]
    fn validate_bounded_rules_report_the_bounds_used() {
        let cases = [
            (
                json!({"type": "range", "value": 50}),
                true,
                "value is within [0, 100]",
                json!({"min": 0, "max": 100}),
            ),
            (
                json!({"type": "range", "value": "100"}),
                true,
                "value is within [0, 100]",
                json!({"min": 0, "max": 100}),
            ),
            (
                json!({"type": "range", "value": 101}),
                false,
                "value is outside [0, 100]",
                json!({"min": 0, "max": 100}),
            ),
            (
                json!({"type": "range", "value": -2.5, "min": -3.5, "max": 1}),
                true,
                "value is within [-3.5, 1]",
                json!({"min": -3.5, "max": 1}),
            ),
            (
                json!({"type": "range", "value": "x"}),
                false,
                "value is not a number",
                json!({"min": 0, "max": 100}),
            ),
            (
                json!({"type": "length", "value": "héllo"}),
                true,
                "length 5 is within [0, 255]",
                json!({"min_length": 0, "max_length": 255}),
            ),
            (
                json!({"type": "length", "value": "ab", "min_length": 3, "max_length": 5}),
                false,
                "length 2 is outside [3, 5]",
                json!({"min_length": 3, "max_length": 5}),
            ),
            (
                json!({"type": "length", "value": 12345, "max_length": 4}),
                false,
                "length 5 is outside [0, 4]",
                json!({"min_length": 0, "max_length": 4}),
            ),
            (
                json!({"type": "regex", "value": "abc123", "pattern": "[a-z]+[0-9]+"}),
                true,
                "value matches the pattern",
                json!({"pattern": "[a-z]+[0-9]+"}),
            ),
            (
                json!({"type": "regex", "value": "abc123!", "pattern": "[a-z]+[0-9]+"}),
                false,
                "value does not match the pattern",
                json!({"pattern": "[a-z]+[0-9]+"}),
            ),
            (
                json!({"type": "regex", "value": "ab", "pattern": "a|ab"}),
                true,
                "value matches the pattern",
                json!({"pattern": "a|ab"}),
            ),
        ];
        for (payload, valid, message, bounds) in cases {
            let rule = payload["type"].as_str().unwrap_or_default().to_string();
            let expected = verdict_json(&rule, payload["value"].clone(), valid, message, bounds);
            check("validate", payload, expected);
        }
    }

    #[test]
    fn validate_rejects_bad_rules_and_bounds_permanently() {
        let cases = [
            (
                "validate",
                json!({"value": 1}),
                "payload.type (the validation rule) is required",
            ),
            (
                "validate",
                json!({"type": "zip", "value": 1}),
                "unknown validation rule 'zip'; expected one of email, phone, numeric, required, \
                 range, length, regex",
            ),
            (
                "range",
                json!({"value": 1, "min": "0"}),
                "min must be a number, got string",
            ),
            (
                "range",
                json!({"value": 1, "min": 5, "max": 1}),
                "min (5) must not exceed max (1)",
            ),
            (
                "length",
                json!({"value": "a", "min_length": -1}),
                "min_length must be a non-negative integer",
            ),
            (
                "length",
                json!({"value": "a", "max_length": 2.5}),
                "max_length must be a non-negative integer",
            ),
            (
                "length",
                json!({"value": "a", "min_length": 3, "max_length": 2}),
                "min_length (3) must not exceed max_length (2)",
            ),
            (
                "regex",
                json!({"value": "a"}),
                "pattern is required for the regex rule",
            ),
            (
                "regex",
                json!({"value": "a", "pattern": 1}),
                "pattern must be a string, got number",
            ),
        ];
        for (job_type, payload, message) in cases {
            check_err(job_type, payload, message);
        }
        for pattern in ["a)|(b", "(", "[z-a]"] {
            let result = run("regex", json!({"value": "a", "pattern": pattern}));
            assert!(
                matches!(&result, Err(HandlerError::Permanent(m)) if m.starts_with("invalid pattern: ")),
                "{pattern}: {result:?}"
            );
        }
    }

    #[test]
    fn sleep_reads_ms_and_caps_it() {
        let cases = [
            (json!({}), 0),
            (json!({"ms": null}), 0),
            (json!({"ms": 250}), 250),
            (json!({"ms": 5.0}), 5),
            (json!({"ms": u64::MAX}), 86_400_000),
            (json!({"ms": 1e300}), 86_400_000),
        ];
        for (payload, ms) in cases {
            check("sleep", payload, json!({"slept_ms": ms}));
        }
        let cases = [
            (
                json!({"ms": -1}),
                "ms must be a non-negative integer, got -1",
            ),
            (
                json!({"ms": 1.5}),
                "ms must be a non-negative integer, got 1.5",
            ),
            (
                json!({"ms": "10"}),
                "ms must be a non-negative integer, got string",
            ),
        ];
        for (payload, message) in cases {
            check_err("sleep", payload, message);
        }
    }

    #[test]
    fn echo_answers_the_payload() {
        check("echo", json!({}), json!({"echo": {}}));
        check(
            "ECHO",
            json!({"a": [1, {"b": null}]}),
            json!({"echo": {"a": [1, {"b": null}]}}),
        );
    }

    #[test]
    fn errors_display_their_message() {
        assert_eq!(HandlerError::Permanent("bad".into()).to_string(), "bad");
        assert_eq!(HandlerError::Retryable("later".into()).to_string(), "later");
    }
}
