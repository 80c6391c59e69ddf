//! Built-in handlers of CONTRACT.md: calculate, transform, validate, sleep, echo, with their type
//! aliases; pure functions from a payload to a result, so the worker only dispatches and sleeps.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Map, Number, Value};

/// Why a handler failed. `Permanent` = bad input, never retried; `Retryable` = may succeed on a
/// later attempt. The message is the job's `errorMessage`.
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
    /// `flaky`: fails the first `payload.failTimes` attempts, then succeeds (tests and demos).
    Flaky,
}

#[rustfmt::skip]
const CALCULATE_TYPES: &[&str] =
    &["calculate", "sum", "average", "min", "max", "sort", "aggregate", "statistics", "stddev"];
#[rustfmt::skip]
const TRANSFORM_TYPES: &[&str] =
    &["transform", "uppercase", "lowercase", "reverse", "filter", "normalize"];
#[rustfmt::skip]
const VALIDATE_TYPES: &[&str] =
    &["validate", "email", "phone", "numeric", "required", "range", "length", "regex"];

const OPERATION_MISSING: &str = "payload.operation is required";
const RULE_MISSING: &str = "payload.type (the validation rule) is required";

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
    /// Maps a job `type` (case-insensitive, trimmed) to its family: "calculate" and aliases sum,
    /// average, min, max, sort, aggregate, statistics, stddev -> Calculate; "transform" and
    /// uppercase, lowercase, reverse, filter, normalize -> Transform; "validate" and email, phone,
    /// numeric, required, range, length, regex -> Validate; "sleep" -> Sleep; "echo" -> Echo.
    pub fn for_type(job_type: &str) -> Option<Builtin> {
        let name = job_type.trim().to_lowercase();
        let families = [
            Self::Calculate,
            Self::Transform,
            Self::Validate,
            Self::Sleep,
            Self::Echo,
            Self::Flaky,
        ];
        families
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
            Self::Flaky => &["flaky"],
        }
    }
}

fn permanent(message: impl Into<String>) -> HandlerError {
    HandlerError::Permanent(message.into())
}

/// "`what` must be `expected`, got <kind of value>".
fn wrong(what: &str, expected: &str, value: &Value) -> HandlerError {
    let got = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(a) if a.is_empty() => "an empty array",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    permanent(format!("{what} must be {expected}, got {got}"))
}

/// A value as text: a string without quotes, anything else as its JSON text.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `x` when finite, else a Permanent error saying `what` overflowed.
fn finite(x: f64, what: &str) -> Result<f64, HandlerError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(permanent(format!("{what} overflows a 64-bit float")))
    }
}

/// The operation of a `family` job (calculate, transform or validate): the one named by the
/// payload field (`type` for validate, else `operation`; trimmed, any case), else the one the
/// job type implies. It is one of the family's type names after the first.
fn operation(
    family: Builtin,
    job_type: &str,
    payload: &Map<String, Value>,
) -> Result<&'static str, HandlerError> {
    let (field, what, missing) = match family {
        Builtin::Validate => ("type", "validation rule", RULE_MISSING),
        Builtin::Transform => ("operation", "transform operation", OPERATION_MISSING),
        _ => ("operation", "calculate operation", OPERATION_MISSING),
    };
    let (given, implied) = match payload.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => (true, s.trim().to_lowercase()),
        None | Some(Value::Null | Value::String(_)) => (false, job_type.trim().to_lowercase()),
        Some(other) => return Err(wrong(&format!("payload.{field}"), "a string", other)),
    };
    let known = family.type_names().get(1..).unwrap_or_default();
    match known.iter().find(|name| **name == implied) {
        Some(name) => Ok(name),
        None if given => Err(permanent(format!(
            "unknown {what} '{implied}'; expected one of {}",
            known.join(", ")
        ))),
        None => Err(permanent(missing)),
    }
}

/// One input number: its JSON form, its f64 value and, for a JSON integer, its exact value.
struct Num {
    json: Number,
    float: f64,
    int: Option<i128>,
}

/// The numbers of one calculate job, sorted ascending.
struct Numbers {
    sorted: Vec<Num>,
    all_integers: bool,
}

impl Numbers {
    fn read(payload: &Map<String, Value>) -> Result<Self, HandlerError> {
        const SHAPE: &str = "a non-empty array of numbers";
        let items = match payload.get("numbers") {
            None | Some(Value::Null) => return Err(permanent(format!("numbers must be {SHAPE}"))),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(other) => return Err(wrong("numbers", SHAPE, other)),
        };
        let mut sorted = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Number(n) = item else {
                return Err(permanent(format!("numbers[{i}] is not a number")));
            };
            let float = n.as_f64().filter(|x| x.is_finite());
            let float = float.ok_or_else(|| permanent(format!("numbers[{i}] is not finite")))?;
            let int = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            sorted.push(Num {
                json: n.clone(),
                float,
                int,
            });
        }
        let all_integers = sorted.iter().all(|n| n.int.is_some());
        // One consistent total order: exact integers, or else f64 values.
        if all_integers {
            sorted.sort_by_key(|n| n.int);
        } else {
            sorted.sort_by(|a, b| a.float.total_cmp(&b.float));
        }
        Ok(Numbers {
            sorted,
            all_integers,
        })
    }

    fn count(&self) -> f64 {
        self.sorted.len() as f64
    }

    /// The `i`-th smallest number as output: unchanged when every input is an integer, else a
    /// float (null only if `i` is out of range, which `read` rules out).
    fn out(&self, i: usize) -> Value {
        match self.sorted.get(i) {
            Some(n) if self.all_integers => Value::Number(n.json.clone()),
            Some(n) => json!(n.float),
            None => Value::Null,
        }
    }

    fn sum(&self) -> Result<Value, HandlerError> {
        if !self.all_integers {
            let sum = self.sorted.iter().map(|n| n.float).sum();
            return Ok(json!(finite(sum, "sum")?));
        }
        // i128 cannot overflow: it would take 2^63 inputs of u64::MAX.
        let total: i128 = self.sorted.iter().filter_map(|n| n.int).sum();
        Ok(match (i64::try_from(total), u64::try_from(total)) {
            (Ok(small), _) => json!(small),
            (_, Ok(big)) => json!(big),
            _ => json!(total as f64),
        })
    }

    fn mean(&self) -> Result<f64, HandlerError> {
        let sum: f64 = self.sorted.iter().map(|n| n.float).sum();
        if sum.is_finite() {
            return Ok(sum / self.count());
        }
        // The sum overflowed: divide first.
        let mean = self.sorted.iter().map(|n| n.float / self.count()).sum();
        finite(mean, "average")
    }

    fn median(&self) -> f64 {
        let len = self.sorted.len();
        let at = |i: usize| self.sorted.get(i).map_or(0.0, |n| n.float);
        let (low, high) = (at(len.saturating_sub(1) / 2), at(len / 2));
        // Halves first, so two huge middles cannot overflow.
        if len % 2 == 1 {
            high
        } else {
            low / 2.0 + high / 2.0
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

/// Runs calculate: `job_type` may imply the operation (type "average" with no
/// payload.operation computes the average). payload.operation wins when present.
///
/// Payload: `operation` (sum, average, min, max, sort, aggregate, statistics, stddev) and
/// `numbers` (non-empty array of JSON numbers). Results: sum `{sum, count}`; average
/// `{average, count}`; min `{min, count}`; max `{max, count}`; sort `{sorted, count}`
/// (ascending); aggregate `{sum, average, min, max, count}`; statistics `{mean, median, stdev,
/// variance, count}`; stddev `{mean, stddev, variance, count}` (sample variance, 0 for one
/// number). sum, min, max and sorted are JSON integers when every input is an integer; the
/// other figures are floats.
///
/// Errors (all Permanent): no operation given nor implied ("payload.operation is required"), an
/// unknown operation, `numbers` missing, empty or not an array, an element that is not a number,
/// or a sum, average or variance that overflows f64.
pub fn calculate(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let operation = operation(Builtin::Calculate, job_type, payload)?;
    let numbers = Numbers::read(payload)?;
    let (count, last) = (numbers.sorted.len(), numbers.sorted.len().saturating_sub(1));
    let (min, max) = (numbers.out(0), numbers.out(last));
    Ok(match operation {
        "sum" => json!({"sum": numbers.sum()?, "count": count}),
        "average" => json!({"average": numbers.mean()?, "count": count}),
        "min" => json!({"min": min, "count": count}),
        "max" => json!({"max": max, "count": count}),
        "sort" => {
            let sorted: Vec<Value> = (0..count).map(|i| numbers.out(i)).collect();
            json!({"sorted": sorted, "count": count})
        }
        "aggregate" => json!({
            "sum": numbers.sum()?, "average": numbers.mean()?,
            "min": min, "max": max, "count": count,
        }),
        "statistics" => {
            let mean = numbers.mean()?;
            let variance = numbers.variance(mean)?;
            json!({
                "mean": mean, "median": numbers.median(),
                "stdev": variance.sqrt(), "variance": variance, "count": count,
            })
        }
        _ => {
            // Stddev, the only name left.
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
///   `filter_value` (a non-null filter of another type is taken as text); with neither given,
///   the numeric values above 0 -> `{filtered, original_count, filtered_count}`.
/// - normalize maps numeric values to (v - min) / (max - min) (range 1 when max = min), passes
///   the others through -> `{normalized, min, max}` (min, max null without numeric values).
///
/// Errors (all Permanent): no operation given nor implied ("payload.operation is required"), an
/// unknown operation, `data` missing or not an object.
pub fn transform(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let operation = operation(Builtin::Transform, job_type, payload)?;
    let data = match payload.get("data") {
        Some(Value::Object(data)) => data,
        None | Some(Value::Null) => return Err(permanent("payload.data is required (an object)")),
        Some(other) => return Err(wrong("payload.data", "an object", other)),
    };
    match operation {
        "filter" => {
            let given = |key: &str| payload.get(key).filter(|v| !v.is_null()).map(text);
            let (key_part, value_part) = (given("filter_key"), given("filter_value"));
            let keep = |key: &String, value: &Value| match (&key_part, &value_part) {
                (None, None) => value.as_f64().is_some_and(|x| x > 0.0),
                (key_part, value_part) => {
                    key_part.as_deref().is_some_and(|part| key.contains(part))
                        || value_part
                            .as_deref()
                            .is_some_and(|part| text(value).contains(part))
                }
            };
            let filtered: Map<String, Value> = data
                .iter()
                .filter(|(key, value)| keep(key, value))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let (original_count, filtered_count) = (data.len(), filtered.len());
            Ok(json!({
                "filtered": filtered,
                "original_count": original_count,
                "filtered_count": filtered_count,
            }))
        }
        "normalize" => Ok(normalize(data)),
        _ => {
            // Uppercase, lowercase, reverse.
            let change = |s: &str| match operation {
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

fn normalize(data: &Map<String, Value>) -> Value {
    let numeric = |value: &Value| value.as_f64().filter(|x| x.is_finite());
    let values = || {
        data.values()
            .filter_map(|value| numeric(value).map(|x| (value, x)))
    };
    let (Some(low), Some(high)) = (
        values().min_by(|a, b| a.1.total_cmp(&b.1)),
        values().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) else {
        return json!({"normalized": data, "min": null, "max": null});
    };
    // Halves keep a range wider than f64::MAX finite; each ratio lies in [0, 1].
    let range = high.1 / 2.0 - low.1 / 2.0;
    let normalized: Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            let scaled = match numeric(value) {
                None => value.clone(),
                Some(_) if range == 0.0 => json!(0.0),
                Some(x) => json!((x / 2.0 - low.1 / 2.0) / range),
            };
            (key.clone(), scaled)
        })
        .collect();
    json!({"normalized": normalized, "min": low.0, "max": high.0})
}

/// Pass or fail of a validation rule, with its message.
type Verdict = (bool, String);

fn verdict(valid: bool, pass: &str, fail: &str) -> Verdict {
    (valid, if valid { pass } else { fail }.to_string())
}

/// The value as text for the text rules, or the failing verdict for null, arrays and objects.
fn text_value(value: &Value) -> Result<String, Verdict> {
    match value {
        Value::Null => Err((false, "value is missing".into())),
        Value::Array(_) | Value::Object(_) => Err((false, "value must be text".into())),
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

/// A numeric bound (`default` when missing or null) as (its JSON, its value).
fn number_bound(
    payload: &Map<String, Value>,
    key: &str,
    default: i64,
) -> Result<(Value, f64), HandlerError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok((json!(default), default as f64)),
        Some(value) => match number_value(value) {
            Some(x) if value.is_number() => Ok((value.clone(), x)),
            _ => Err(wrong(key, "a number", value)),
        },
    }
}

/// A length bound (`default` when missing or null).
fn length_bound(
    payload: &Map<String, Value>,
    key: &str,
    default: u64,
) -> Result<u64, HandlerError> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| wrong(key, "a non-negative integer", value)),
    }
}

/// For validate: the rule is payload "type", or implied by job_type (type "email" validates an
/// email).
///
/// Payload: `type` (email, phone, numeric, required, range, length, regex), `value`, and the
/// bounds `min`, `max` (range; defaults 0, 100), `min_length`, `max_length` (length; defaults
/// 0, 255), `pattern` (regex). Result `{valid, type, value, message}` plus the bounds used
/// (range: `min, max`; length: `min_length, max_length`; regex: `pattern`). A value that fails
/// the rule is not an error: it answers `valid: false` with a message.
///
/// Errors (all Permanent): no rule given nor implied ("payload.type (the validation rule) is
/// required"), an unknown rule, a bound of the wrong type or a minimum above its maximum, and
/// for regex a missing, non-string or invalid `pattern`.
pub fn validate(job_type: &str, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let rule = operation(Builtin::Validate, job_type, payload)?;
    let value = payload.get("value").unwrap_or(&Value::Null);
    let mut result = Map::new();
    let (valid, message) = match rule {
        "email" => match text_value(value) {
            Ok(text) => verdict(
                EMAIL.is_match(&text),
                "valid email address",
                "value is not a valid email address",
            ),
            Err(failed) => failed,
        },
        "phone" => match text_value(value) {
            Ok(text) => {
                let digits: String = text.chars().filter(|c| !" -()".contains(*c)).collect();
                verdict(
                    PHONE.is_match(&digits),
                    "valid phone number",
                    "value is not a valid phone number",
                )
            }
            Err(failed) => failed,
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
                    "min ({min_json}) must not exceed max ({max_json})"
                )));
            }
            let bounds = format!("[{min_json}, {max_json}]");
            result.extend([("min".to_string(), min_json), ("max".to_string(), max_json)]);
            match number_value(value) {
                None => (false, "value is not a number".into()),
                Some(x) if (min..=max).contains(&x) => (true, format!("value is within {bounds}")),
                Some(_) => (false, format!("value is outside {bounds}")),
            }
        }
        "length" => {
            let min = length_bound(payload, "min_length", 0)?;
            let max = length_bound(payload, "max_length", 255)?;
            if min > max {
                return Err(permanent(format!(
                    "min_length ({min}) must not exceed max_length ({max})"
                )));
            }
            result.extend([
                ("min_length".to_string(), json!(min)),
                ("max_length".to_string(), json!(max)),
            ]);
            match text_value(value).map(|text| text.chars().count() as u64) {
                Ok(length) if (min..=max).contains(&length) => {
                    (true, format!("length {length} is within [{min}, {max}]"))
                }
                Ok(length) => (false, format!("length {length} is outside [{min}, {max}]")),
                Err(failed) => failed,
            }
        }
        _ => {
            // Regex, the only rule left.
            let pattern = match payload.get("pattern") {
                Some(Value::String(pattern)) => pattern,
                None | Some(Value::Null) => {
                    return Err(permanent("pattern is required for the regex rule"))
                }
                Some(other) => return Err(wrong("pattern", "a string", other)),
            };
            // Compile alone first, so "a)|(b" fails instead of changing meaning once anchored.
            let invalid = |e: regex::Error| {
                // A syntax error is several lines (pattern, caret, "error: why"); keep the why.
                let detail = e.to_string();
                let mut lines = detail.lines().rev();
                let why = lines.find_map(|line| line.trim().strip_prefix("error: "));
                permanent(format!(
                    "invalid pattern '{pattern}': {}",
                    why.unwrap_or(detail.trim())
                ))
            };
            Regex::new(pattern).map_err(invalid)?;
            let whole = Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(invalid)?;
            result.insert("pattern".into(), json!(pattern));
            match text_value(value) {
                Ok(text) => verdict(
                    whole.is_match(&text),
                    "value matches the pattern",
                    "value does not match the pattern",
                ),
                Err(failed) => failed,
            }
        }
    };
    result.insert("valid".into(), json!(valid));
    result.insert("type".into(), json!(rule));
    result.insert("value".into(), value.clone());
    result.insert("message".into(), json!(message));
    Ok(Value::Object(result))
}

/// Reads payload `ms` (non-negative integer, default 0, capped at [`MAX_SLEEP`]) and returns the
/// Duration to sleep; the caller sleeps, then answers [`sleep_result`].
///
/// A missing or null `ms` is 0; an integral float such as `5.0` is accepted; values above
/// [`MAX_SLEEP`] are capped to it. Errors (Permanent): `ms` negative, fractional or not a number.
pub fn sleep_duration(payload: &Map<String, Value>) -> Result<Duration, HandlerError> {
    let max_ms = MAX_SLEEP.as_secs() * 1000;
    let ms = match payload.get("ms") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(ms), _) => ms,
            (None, Some(x)) if x >= 0.0 && x.fract() == 0.0 => x.min(max_ms as f64) as u64,
            _ => {
                return Err(permanent(format!(
                    "ms must be a non-negative integer, got {n}"
                )))
            }
        },
        Some(other) => return Err(wrong("ms", "a non-negative integer", other)),
    };
    Ok(Duration::from_millis(ms.min(max_ms)))
}

/// Sleep's result after sleeping: `{"slept_ms": ms}`.
pub fn sleep_result(ms: u64) -> Value {
    json!({ "slept_ms": ms })
}

/// flaky: attempt `attempt` (from 1) fails with a retryable error while it is at most
/// `payload.failTimes` (a non-negative integer, default 1), and then succeeds with
/// `{"attempt", "failTimes"}`. A `failTimes` that is not a non-negative integer is a permanent
/// error.
pub fn flaky(attempt: u32, payload: &Map<String, Value>) -> Result<Value, HandlerError> {
    let fail_times = match payload.get("failTimes") {
        None | Some(Value::Null) => 1,
        Some(value) => value.as_u64().ok_or_else(|| {
            HandlerError::Permanent("failTimes must be a non-negative integer".to_string())
        })?,
    };
    if u64::from(attempt) <= fail_times {
        return Err(HandlerError::Retryable(format!(
            "flaky: attempt {attempt} fails ({fail_times} failing attempts asked)"
        )));
    }
    Ok(json!({"attempt": attempt, "failTimes": fail_times}))
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
            panic!("payload must be an object")
        };
        match Builtin::for_type(job_type) {
            Some(Builtin::Calculate) => calculate(job_type, &payload),
            Some(Builtin::Transform) => transform(job_type, &payload),
            Some(Builtin::Validate) => validate(job_type, &payload),
            Some(Builtin::Sleep) => sleep_duration(&payload)
                .map(|d| sleep_result(u64::try_from(d.as_millis()).expect("capped at 24 h"))),
            Some(Builtin::Echo) => Ok(echo(&payload)),
            Some(Builtin::Flaky) => flaky(1, &payload),
            None => panic!("no built-in handler for {job_type}"),
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

    /// Runs `check` on every `[job_type, payload, expected result]` row.
    fn check_table(rows: Value) {
        for row in rows.as_array().expect("rows") {
            check(
                row[0].as_str().expect("job type"),
                row[1].clone(),
                row[2].clone(),
            );
        }
    }

    /// Runs `check_err` on every `[job_type, payload, error message]` row.
    fn check_err_table(rows: Value) {
        for row in rows.as_array().expect("rows") {
            let (job_type, message) = (row[0].as_str(), row[2].as_str());
            check_err(
                job_type.expect("job type"),
                row[1].clone(),
                message.expect("message"),
            );
        }
    }

    #[test]
    fn every_type_name_maps_to_its_family() {
        use Builtin::*;
        for family in [Calculate, Transform, Validate, Sleep, Echo] {
            for name in family.type_names() {
                assert_eq!(Builtin::for_type(name), Some(family), "{name}");
            }
        }
        assert_eq!(Calculate.type_names()[0], "calculate");
        assert_eq!(Builtin::for_type("  AVERAGE "), Some(Calculate));
        assert_eq!(Builtin::for_type("Email"), Some(Validate));
        assert_eq!(Builtin::for_type("nope"), None);
        assert_eq!(Builtin::for_type(""), None);
    }

    #[test]
    fn calculate_operations_aliases_and_implied_operation() {
        let max = u64::MAX as f64;
        check_table(json!([
            ["sum", {"numbers": [3, 1, 5, 2, 4]}, {"sum": 15, "count": 5}],
            ["average", {"numbers": [3, 1, 5, 2, 4]}, {"average": 3.0, "count": 5}],
            ["min", {"numbers": [3, 1, 5, 2, 4]}, {"min": 1, "count": 5}],
            ["max", {"numbers": [3, 1, 5, 2, 4]}, {"max": 5, "count": 5}],
            ["sort", {"numbers": [3, 1, 5, 2, 4]}, {"sorted": [1, 2, 3, 4, 5], "count": 5}],
            ["aggregate", {"numbers": [3, 1, 5, 2, 4]},
             {"sum": 15, "average": 3.0, "min": 1, "max": 5, "count": 5}],
            ["calculate", {"operation": "sum", "numbers": [1.5, 2.5]}, {"sum": 4.0, "count": 2}],
            ["calculate", {"operation": " MAX ", "numbers": [1, 2.5]}, {"max": 2.5, "count": 2}],
            ["calculate", {"operation": "min", "numbers": [1, 2.5, -7]}, {"min": -7.0, "count": 3}],
            ["sort", {"numbers": [2, -1.5, 0]}, {"sorted": [-1.5, 0.0, 2.0], "count": 3}],
            ["sum", {"numbers": [-5, 2]}, {"sum": -3, "count": 2}],
            ["sum", {"numbers": [9007199254740993_u64, 1]}, {"sum": 9007199254740994_u64,
             "count": 2}],
            ["sum", {"numbers": [u64::MAX, u64::MAX]}, {"sum": 2.0 * max, "count": 2}],
            ["sum", {"operation": "min", "numbers": [2, 1]}, {"min": 1, "count": 2}],
            ["average", {"operation": null, "numbers": [1, 2]}, {"average": 1.5, "count": 2}],
            ["average", {"numbers": [1e308, 1e308]}, {"average": 1e308, "count": 2}],
        ]));
    }

    #[test]
    fn sum_of_integers_is_a_json_integer() {
        let result = run("sum", json!({"numbers": [1, 2, 3, 4, 5]})).expect("valid input");
        assert_eq!(result["sum"], json!(15));
        assert!(result["sum"].is_i64());
    }

    #[test]
    fn statistics_and_stddev_use_the_sample_variance() {
        let (variance, stdev) = (32.0_f64 / 7.0, (32.0_f64 / 7.0).sqrt());
        let numbers = json!([2, 4, 4, 4, 5, 5, 7, 9]);
        check_table(json!([
            ["statistics", {"numbers": numbers},
             {"mean": 5.0, "median": 4.5, "stdev": stdev, "variance": variance, "count": 8}],
            ["stddev", {"numbers": numbers},
             {"mean": 5.0, "stddev": stdev, "variance": variance, "count": 8}],
            ["statistics", {"numbers": [9, 1, 5]},
             {"mean": 5.0, "median": 5.0, "stdev": 4.0, "variance": 16.0, "count": 3}],
            ["statistics", {"numbers": [3]},
             {"mean": 3.0, "median": 3.0, "stdev": 0.0, "variance": 0.0, "count": 1}],
            ["calculate", {"operation": "stddev", "numbers": [7.5]},
             {"mean": 7.5, "stddev": 0.0, "variance": 0.0, "count": 1}],
            ["statistics", {"numbers": [1.7e308, 1.7e308]},
             {"mean": 1.7e308, "median": 1.7e308, "stdev": 0.0, "variance": 0.0, "count": 2}],
        ]));
    }

    #[test]
    fn calculate_rejects_bad_input_permanently() {
        check_err_table(json!([
            ["calculate", {"numbers": [1]}, "payload.operation is required"],
            ["calculate", {"operation": " ", "numbers": [1]}, "payload.operation is required"],
            ["calculate", {"operation": 3}, "payload.operation must be a string, got number"],
            ["calculate", {"operation": "median", "numbers": [1]}, "unknown calculate operation \
              'median'; expected one of sum, average, min, max, sort, aggregate, statistics, \
              stddev"],
            ["sum", {}, "numbers must be a non-empty array of numbers"],
            ["sum", {"numbers": null}, "numbers must be a non-empty array of numbers"],
            ["average", {"numbers": []},
             "numbers must be a non-empty array of numbers, got an empty array"],
            ["min", {"numbers": "1,2"}, "numbers must be a non-empty array of numbers, got string"],
            ["max", {"numbers": {}}, "numbers must be a non-empty array of numbers, got object"],
            ["sort", {"numbers": [1, 2, "3"]}, "numbers[2] is not a number"],
            ["aggregate", {"numbers": [null]}, "numbers[0] is not a number"],
            ["statistics", {"numbers": [1, true]}, "numbers[1] is not a number"],
            ["sum", {"numbers": [1e308, 1e308]}, "sum overflows a 64-bit float"],
            ["stddev", {"numbers": [1e300, -1e300]}, "variance overflows a 64-bit float"],
        ]));
    }

    #[test]
    fn transform_changes_keys_and_values_as_text() {
        check_table(json!([
            ["uppercase", {"data": {"Name": "Ada", "n": 12, "ok": true, "no": null, "l": [1, "a"]}},
             {"transformed":
                {"NAME": "ADA", "N": "12", "OK": "TRUE", "NO": "NULL", "L": "[1,\"A\"]"},
              "operation": "uppercase"}],
            ["transform", {"operation": "lowercase", "data": {"Name": "ADA", "x": 1.5}},
             {"transformed": {"name": "ada", "x": "1.5"}, "operation": "lowercase"}],
            ["reverse", {"data": {"abc": "héllo", "n": 123}},
             {"transformed": {"cba": "olléh", "n": "321"}, "operation": "reverse"}],
            ["uppercase", {"operation": "Reverse", "data": {}},
             {"transformed": {}, "operation": "reverse"}],
        ]));
    }

    #[test]
    fn filter_keeps_matching_keys_or_values() {
        let data = json!({"apple": 3, "banana": -1, "cherry": "ripe apple", "date": 0, "x": "1"});
        // [filters, entries kept]
        let rows = json!([
            [{"filter_key": "an"}, {"banana": -1}],
            [{"filter_value": "apple"}, {"cherry": "ripe apple"}],
            [{"filter_value": 3}, {"apple": 3}],
            [{"filter_key": "dat", "filter_value": "ripe"}, {"cherry": "ripe apple", "date": 0}],
            [{"filter_key": "zzz"}, {}],
            [{"filter_key": null}, {"apple": 3}],
            [{}, {"apple": 3}],
        ]);
        for row in rows.as_array().expect("rows") {
            let (mut payload, filtered) = (row[0].clone(), row[1].clone());
            payload["data"] = data.clone();
            let count = filtered.as_object().map_or(0, Map::len);
            let expected =
                json!({"filtered": filtered, "original_count": 5, "filtered_count": count});
            check("filter", payload, expected);
        }
    }

    #[test]
    fn normalize_scales_numeric_values() {
        check_table(json!([
            ["normalize", {"data": {"a": 10, "b": 20, "c": 15, "s": "x"}},
             {"normalized": {"a": 0.0, "b": 1.0, "c": 0.5, "s": "x"}, "min": 10, "max": 20}],
            ["transform", {"operation": "normalize", "data": {"a": 4, "b": 4}},
             {"normalized": {"a": 0.0, "b": 0.0}, "min": 4, "max": 4}],
            ["normalize", {"data": {"s": "text"}},
             {"normalized": {"s": "text"}, "min": null, "max": null}],
            ["normalize", {"data": {"lo": -1e308, "hi": 1e308, "mid": 0}},
             {"normalized": {"lo": 0.0, "hi": 1.0, "mid": 0.5}, "min": -1e308, "max": 1e308}],
        ]));
    }

    #[test]
    fn transform_rejects_bad_input_permanently() {
        check_err_table(json!([
            ["transform", {"data": {}}, "payload.operation is required"],
            ["transform", {"operation": "shout", "data": {}},
             "unknown transform operation 'shout'; \
              expected one of uppercase, lowercase, reverse, filter, normalize"],
            ["uppercase", {}, "payload.data is required (an object)"],
            ["lowercase", {"data": null}, "payload.data is required (an object)"],
            ["filter", {"data": [1, 2]}, "payload.data must be an object, got array"],
            ["normalize", {"data": "x"}, "payload.data must be an object, got string"],
        ]));
    }

    /// Runs every `[rule, payload, valid, message, bounds]` row as type `rule` and as type
    /// "validate", expecting `{valid, type, value, message}` plus the bounds.
    fn check_validate_table(rows: Value) {
        for row in rows.as_array().expect("rows") {
            let (rule, mut payload) = (row[0].as_str().expect("rule"), row[1].clone());
            let mut expected = json!({"valid": row[2], "type": rule, "message": row[3]});
            expected["value"] = payload.get("value").cloned().unwrap_or_default();
            for (key, bound) in row[4].as_object().into_iter().flatten() {
                expected[key] = bound.clone();
            }
            check(rule, payload.clone(), expected.clone());
            payload["type"] = json!(rule);
            check("validate", payload, expected);
        }
    }

    #[test]
    fn validate_rules_answer_valid_or_invalid() {
        check_validate_table(json!([
            ["email", {"value": "a.b+c@example.co.uk"}, true, "valid email address", {}],
            ["email", {"value": "user@host.c"}, false, "value is not a valid email address", {}],
            ["email", {"value": "no-at-sign.com"}, false, "value is not a valid email address", {}],
            ["email", {"value": "a@.com"}, false, "value is not a valid email address", {}],
            ["email", {}, false, "value is missing", {}],
            ["phone", {"value": "+1 (555) 123-4567"}, true, "valid phone number", {}],
            ["phone", {"value": "12"}, true, "valid phone number", {}],
            ["phone", {"value": 5551234567_u64}, true, "valid phone number", {}],
            ["phone", {"value": "0123456"}, false, "value is not a valid phone number", {}],
            ["phone", {"value": "1"}, false, "value is not a valid phone number", {}],
            ["phone", {"value": "1234567890123456"}, false,
             "value is not a valid phone number", {}],
            ["phone", {"value": "555.123.4567"}, false, "value is not a valid phone number", {}],
            ["phone", {"value": ["1"]}, false, "value must be text", {}],
            ["numeric", {"value": " -1.5e3 "}, true, "value is a finite number", {}],
            ["numeric", {"value": 42}, true, "value is a finite number", {}],
            ["numeric", {"value": "inf"}, false, "value is not a finite number", {}],
            ["numeric", {"value": "NaN"}, false, "value is not a finite number", {}],
            ["numeric", {"value": "12abc"}, false, "value is not a finite number", {}],
            ["numeric", {"value": true}, false, "value is not a finite number", {}],
            ["required", {"value": "x"}, true, "value is present", {}],
            ["required", {"value": 0}, true, "value is present", {}],
            ["required", {"value": " \t"}, false, "value is blank", {}],
            ["required", {"value": null}, false, "value is required", {}],
            ["required", {}, false, "value is required", {}],
        ]));
    }

    #[test]
    fn validate_bounded_rules_report_the_bounds_used() {
        let (range, length) = (
            json!({"min": 0, "max": 100}),
            json!({"min_length": 0, "max_length": 255}),
        );
        check_validate_table(json!([
            ["range", {"value": 50}, true, "value is within [0, 100]", range],
            ["range", {"value": "100"}, true, "value is within [0, 100]", range],
            ["range", {"value": 101}, false, "value is outside [0, 100]", range],
            ["range", {"value": "x"}, false, "value is not a number", range],
            ["range", {"value": -2.5, "min": -3.5, "max": 1}, true, "value is within [-3.5, 1]",
             {"min": -3.5, "max": 1}],
            ["length", {"value": "héllo"}, true, "length 5 is within [0, 255]", length],
            ["length", {"value": "ab", "min_length": 3, "max_length": 5}, false,
             "length 2 is outside [3, 5]", {"min_length": 3, "max_length": 5}],
            ["length", {"value": 12345, "max_length": 4}, false, "length 5 is outside [0, 4]",
             {"min_length": 0, "max_length": 4}],
            ["length", {}, false, "value is missing", length],
            ["regex", {"value": "abc123", "pattern": "[a-z]+[0-9]+"}, true,
             "value matches the pattern", {"pattern": "[a-z]+[0-9]+"}],
            ["regex", {"value": "abc123!", "pattern": "[a-z]+[0-9]+"}, false,
             "value does not match the pattern", {"pattern": "[a-z]+[0-9]+"}],
            ["regex", {"value": "ab", "pattern": "a|ab"}, true, "value matches the pattern",
             {"pattern": "a|ab"}],
            ["regex", {"value": "AB", "pattern": "(?i)ab"}, true, "value matches the pattern",
             {"pattern": "(?i)ab"}],
        ]));
    }

    #[test]
    fn validate_rejects_bad_rules_and_bounds_permanently() {
        check_err_table(json!([
            ["validate", {"value": 1}, "payload.type (the validation rule) is required"],
            ["validate", {"type": "zip", "value": 1}, "unknown validation rule 'zip'; expected one \
              of email, phone, numeric, required, range, length, regex"],
            ["range", {"value": 1, "min": "0"}, "min must be a number, got string"],
            ["range", {"value": 1, "min": 5, "max": 1}, "min (5) must not exceed max (1)"],
            ["length", {"value": "a", "min_length": -1},
             "min_length must be a non-negative integer, got number"],
            ["length", {"value": "a", "max_length": 2.5},
             "max_length must be a non-negative integer, got number"],
            ["length", {"value": "a", "min_length": 3, "max_length": 2},
             "min_length (3) must not exceed max_length (2)"],
            ["regex", {"value": "a"}, "pattern is required for the regex rule"],
            ["regex", {"value": "a", "pattern": 1}, "pattern must be a string, got number"],
        ]));
        check_err_table(json!([
            ["regex", {"value": "a", "pattern": "a)|(b"},
             "invalid pattern 'a)|(b': unopened group"],
            ["regex", {"value": "a", "pattern": "("}, "invalid pattern '(': unclosed group"],
            ["regex", {"value": "a", "pattern": "[z-a]"},
             "invalid pattern '[z-a]': invalid character class range, \
              the start must be <= the end"],
        ]));
        // Too big to compile: an error too, whose wording names the regex crate's limit.
        let result = run("regex", json!({"value": "a", "pattern": "a{1000}{1000}"}));
        let prefix = "invalid pattern 'a{1000}{1000}': ";
        let failed = matches!(&result, Err(HandlerError::Permanent(m)) if m.starts_with(prefix));
        assert!(failed, "{result:?}");
    }

    #[test]
    fn sleep_reads_ms_and_caps_it_at_a_day() {
        check_table(json!([
            ["sleep", {}, {"slept_ms": 0}],
            ["sleep", {"ms": null}, {"slept_ms": 0}],
            ["sleep", {"ms": 250}, {"slept_ms": 250}],
            ["sleep", {"ms": 5.0}, {"slept_ms": 5}],
            ["sleep", {"ms": u64::MAX}, {"slept_ms": 86_400_000}],
            ["sleep", {"ms": 1e300}, {"slept_ms": 86_400_000}],
        ]));
        check_err_table(json!([
            ["sleep", {"ms": -1}, "ms must be a non-negative integer, got -1"],
            ["sleep", {"ms": 1.5}, "ms must be a non-negative integer, got 1.5"],
            ["sleep", {"ms": "10"}, "ms must be a non-negative integer, got string"],
        ]));
    }

    #[test]
    fn echo_answers_the_payload() {
        check_table(json!([
            ["echo", {}, {"echo": {}}],
            ["ECHO", {"a": [1, {"b": null}]}, {"echo": {"a": [1, {"b": null}]}}],
        ]));
    }

    #[test]
    fn errors_display_their_message() {
        assert_eq!(HandlerError::Permanent("bad".into()).to_string(), "bad");
        assert_eq!(HandlerError::Retryable("later".into()).to_string(), "later");
    }

    #[test]
    fn flaky_fails_the_first_attempts_then_succeeds() {
        let payload = json!({"failTimes": 2});
        let payload = payload.as_object().expect("object");
        assert!(matches!(flaky(1, payload), Err(HandlerError::Retryable(_))));
        assert!(matches!(flaky(2, payload), Err(HandlerError::Retryable(_))));
        assert_eq!(flaky(3, payload), Ok(json!({"attempt": 3, "failTimes": 2})));
        let bad = json!({"failTimes": "two"});
        assert!(matches!(
            flaky(1, bad.as_object().expect("object")),
            Err(HandlerError::Permanent(_))
        ));
        assert_eq!(Builtin::for_type("Flaky"), Some(Builtin::Flaky));
    }
}
