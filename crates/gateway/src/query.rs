//! Reading the query parameters of `GET /api/jobs` (CONTRACT.md, "Other routes") into the
//! store's [`JobQuery`], naming every bad parameter.

use distriqueue_core::request::Violations;
use distriqueue_core::time::parse_client_time;
use distriqueue_core::{JobStatus, Millis, Priority};
use distriqueue_store::{JobQuery, SortBy, SortDirection, StatsQuery};

/// Page size when `size` is absent.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest accepted `size`.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A time parameter (RFC 3339, or an ISO local date-time read as UTC; CONTRACT.md), or a
/// violation naming it.
fn time_parameter(text: Option<&str>, name: &str, violations: &mut Violations) -> Option<Millis> {
    let time = parse_client_time(text?);
    if time.is_none() {
        violations.insert(
            name.to_string(),
            "must be an RFC 3339 or ISO local date-time (read as UTC)".to_string(),
        );
    }
    time
}

/// Reads the parameters of `GET /api/jobs/statistics`: `from` and `to` (times, inclusive) and
/// `type`. Unknown parameters are ignored; an empty value reads as absent.
pub(crate) fn parse_stats_query(pairs: &[(String, String)]) -> Result<StatsQuery, Violations> {
    let value = |name: &str| value_of(pairs, name);
    let mut violations = Violations::new();
    let (from, to) = time_range(value("from"), value("to"), ["from", "to"], &mut violations);
    let query = StatsQuery {
        from,
        to,
        job_type: value("type").map(str::to_string),
    };
    if violations.is_empty() {
        Ok(query)
    } else {
        Err(violations)
    }
}

/// The first non-blank value of parameter `name`, trimmed.
fn value_of<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, value)| key == name && !value.trim().is_empty())
        .map(|(_, value)| value.trim())
}

/// A time range from its two parameters (`names`: the start's and the end's), either open; an
/// end before the start is a violation of the end.
fn time_range(
    start: Option<&str>,
    end: Option<&str>,
    names: [&str; 2],
    violations: &mut Violations,
) -> (Option<Millis>, Option<Millis>) {
    let start = time_parameter(start, names[0], violations);
    let end = time_parameter(end, names[1], violations);
    if let (Some(start), Some(end)) = (start, end) {
        if start > end {
            violations.insert(
                names[1].to_string(),
                format!("must not be before {}", names[0]),
            );
        }
    }
    (start, end)
}

/// Reads the list parameters. Unknown parameters are ignored; an empty value reads as absent.
/// Where the contract accepts two spellings (`jobPriority|priority`, `jobStatus|status`) the
/// first wins when both are given, and a violation names the spelling the client used.
pub(crate) fn parse_list_query(pairs: &[(String, String)]) -> Result<JobQuery, Violations> {
    let value = |name: &str| value_of(pairs, name);
    let first_of = |names: [&'static str; 2]| {
        names
            .into_iter()
            .find_map(|name| value(name).map(|text| (name, text)))
    };
    let mut violations = Violations::new();
    let mut query = JobQuery {
        page: 0,
        size: DEFAULT_PAGE_SIZE,
        ..JobQuery::default()
    };

    query.job_type = value("type").map(str::to_string);
    query.worker_id = value("workerId").map(str::to_string);
    if let Some(tag) = value("tag") {
        match distriqueue_core::model::check_label(tag) {
            Ok(()) => query.tag = Some(tag.to_string()),
            Err(problem) => {
                violations.insert("tag".to_string(), problem.to_string());
            }
        }
    }

    if let Some((name, text)) = first_of(["jobPriority", "priority"]) {
        match Priority::parse(text) {
            Some(priority) => query.priority = Some(priority),
            None => {
                violations.insert(
                    name.to_string(),
                    "must be LOW, MEDIUM, HIGH or CRITICAL (any case) or 1, 5, 10, 15".to_string(),
                );
            }
        }
    }
    if let Some((name, text)) = first_of(["jobStatus", "status"]) {
        match JobStatus::parse(text) {
            Some(status) => query.status = Some(status),
            None => {
                let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                violations.insert(
                    name.to_string(),
                    format!("must be one of {} (any case)", names.join(", ")),
                );
            }
        }
    }
    (query.created_from, query.created_to) = time_range(
        value("createdFrom"),
        value("createdTo"),
        ["createdFrom", "createdTo"],
        &mut violations,
    );
    if let Some(text) = value("page") {
        match text.parse::<u32>() {
            Ok(page) => query.page = page,
            Err(_) => {
                violations.insert(
                    "page".to_string(),
                    format!("must be an integer between 0 and {}", u32::MAX),
                );
            }
        }
    }
    if let Some(text) = value("size") {
        match text.parse::<i64>() {
            Ok(size) if (1..=i64::from(MAX_PAGE_SIZE)).contains(&size) => {
                query.size = size as u32;
            }
            _ => {
                violations.insert(
                    "size".to_string(),
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                );
            }
        }
    }
    if let Some(text) = value("sortBy") {
        match SortBy::parse(text) {
            Some(sort_by) => query.sort_by = sort_by,
            None => {
                violations.insert(
                    "sortBy".to_string(),
                    "must be one of createdAt, priority, status, type, startedAt, completedAt"
                        .to_string(),
                );
            }
        }
    }
    if let Some(text) = value("sortDirection") {
        match SortDirection::parse(text) {
            Some(direction) => query.direction = direction,
            None => {
                violations.insert(
                    "sortDirection".to_string(),
                    "must be asc or desc".to_string(),
                );
            }
        }
    }

    if violations.is_empty() {
        Ok(query)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use distriqueue_core::Millis;

    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn check_ok(query: &[(&str, &str)]) -> JobQuery {
        match parse_list_query(&pairs(query)) {
            Ok(parsed) => parsed,
            Err(violations) => panic!("expected a valid query, got {violations:?}"),
        }
    }

    fn check_err(query: &[(&str, &str)], expected_fields: &[&str]) {
        let violations = parse_list_query(&pairs(query)).expect_err("expected violations");
        let fields: Vec<&str> = violations.keys().map(String::as_str).collect();
        assert_eq!(fields, expected_fields, "{violations:?}");
    }

    #[test]
    fn defaults() {
        let query = check_ok(&[]);
        assert_eq!((query.page, query.size), (0, DEFAULT_PAGE_SIZE));
        assert!(matches!(query.sort_by, SortBy::CreatedAt));
        assert!(matches!(query.direction, SortDirection::Desc));
        assert!(query.job_type.is_none() && query.status.is_none());
    }

    #[test]
    fn filters_and_aliases_are_read() {
        let query = check_ok(&[
            ("type", "echo"),
            ("priority", "high"),
            ("status", "completed"),
            ("workerId", "w-1"),
            ("createdFrom", "1970-01-01T00:00:01Z"),
            ("createdTo", "1970-01-01T00:00:02"),
            ("page", "2"),
            ("size", "100"),
            ("sortBy", "priority"),
            ("sortDirection", "asc"),
            ("unknown", "ignored"),
            ("jobStatus", ""),
        ]);
        assert_eq!(query.job_type.as_deref(), Some("echo"));
        assert_eq!(query.priority, Some(Priority::High));
        assert_eq!(query.status, Some(JobStatus::Completed));
        assert_eq!(query.worker_id.as_deref(), Some("w-1"));
        assert_eq!(query.created_from, Some(Millis(1000)));
        assert_eq!(query.created_to, Some(Millis(2000)));
        assert_eq!((query.page, query.size), (2, 100));
        assert!(matches!(query.sort_by, SortBy::Priority));
        assert!(matches!(query.direction, SortDirection::Asc));
    }

    #[test]
    fn bad_values_are_named() {
        check_err(&[("size", "1000")], &["size"]);
        check_err(&[("size", "0")], &["size"]);
        check_err(&[("size", "ten")], &["size"]);
        check_err(&[("page", "-1")], &["page"]);
        check_err(&[("sortBy", "color")], &["sortBy"]);
        check_err(&[("sortDirection", "up")], &["sortDirection"]);
        check_err(&[("status", "DONE")], &["status"]);
        check_err(&[("jobPriority", "URGENT")], &["jobPriority"]);
        check_err(&[("createdFrom", "yesterday")], &["createdFrom"]);
        check_err(
            &[
                ("createdFrom", "2026-12-04T00:00:00Z"),
                ("createdTo", "2026-12-01T00:00:00Z"),
            ],
            &["createdTo"],
        );
        check_err(
            &[("createdTo", "soon"), ("size", "-5"), ("sortBy", "x")],
            &["createdTo", "size", "sortBy"],
        );
    }
}
