//! The read model's query language: the filters, paging and sorting of CONTRACT.md
//! `GET /api/jobs`, already parsed and validated by the caller, and the page it answers.

use distriqueue_core::model::{JobStatus, Priority};
use distriqueue_core::time::Millis;
use distriqueue_core::wire::JobResponse;

/// One page request against the job read model. Every filter that is `Some` must match; `None`
/// matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobQuery {
    /// Exact job type (`type`).
    pub job_type: Option<String>,
    /// Exact priority (`jobPriority`).
    pub priority: Option<Priority>,
    /// Exact lifecycle state (`jobStatus`).
    pub status: Option<JobStatus>,
    /// Exact worker id (`workerId`); jobs never assigned to a worker never match.
    pub worker_id: Option<String>,
    /// Jobs carrying this tag among their `tags` (`tag`).
    pub tag: Option<String>,
    /// Jobs created at or after this time (inclusive, epoch ms).
    pub created_from: Option<Millis>,
    /// Jobs created at or before this time (inclusive, epoch ms).
    pub created_to: Option<Millis>,
    /// Page number, from 0.
    pub page: u32,
    /// Page size; the caller keeps it in 1..=100 (0 yields an empty page with the total).
    pub size: u32,
    /// Sort key; ties are broken by job id in the same direction, so paging is stable.
    pub sort_by: SortBy,
    /// Sort direction (default descending).
    pub direction: SortDirection,
}

/// A sort key of `GET /api/jobs` (`sortBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Creation time (the default).
    #[default]
    CreatedAt,
    /// Priority by weight: LOW < MEDIUM < HIGH < CRITICAL.
    Priority,
    /// Lifecycle order of [`JobStatus::ALL`] (PENDING first, CANCELLED last), not the name.
    Status,
    /// Job type, by byte order of the text.
    Type,
    /// Start of the current attempt; jobs not started sort last in both directions.
    StartedAt,
    /// Completion time; jobs not completed sort last in both directions.
    CompletedAt,
}

impl SortBy {
    /// Reads the contract's names `createdAt`, `priority`, `status`, `type`, `startedAt`,
    /// `completedAt` in any case, also snake_case (`created_at`) and the JobResponse field names
    /// `jobPriority`, `jobStatus`. Surrounding whitespace is ignored. `None` when unknown.
    pub fn parse(text: &str) -> Option<SortBy> {
        let key: String = text
            .trim()
            .chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match key.as_str() {
            "createdat" => Some(SortBy::CreatedAt),
            "priority" | "jobpriority" => Some(SortBy::Priority),
            "status" | "jobstatus" => Some(SortBy::Status),
            "type" => Some(SortBy::Type),
            "startedat" => Some(SortBy::StartedAt),
            "completedat" => Some(SortBy::CompletedAt),
            _ => None,
        }
    }

    /// The column this key sorts on, and whether it may be NULL. Fixed text, never user input.
    pub(crate) fn column(self) -> (&'static str, bool) {
        match self {
            SortBy::CreatedAt => ("created_at", false),
            SortBy::Priority => ("priority", false),
            SortBy::Status => ("status_rank", false),
            SortBy::Type => ("job_type", false),
            SortBy::StartedAt => ("started_at", true),
            SortBy::CompletedAt => ("completed_at", true),
        }
    }
}

/// A sort direction (`sortDirection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDirection {
    /// Smallest first.
    Asc,
    /// Largest first (the default).
    #[default]
    Desc,
}

impl SortDirection {
    /// Reads `asc` or `desc` in any case, ignoring surrounding whitespace. `None` otherwise.
    pub fn parse(text: &str) -> Option<SortDirection> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("asc") {
            Some(SortDirection::Asc)
        } else if text.eq_ignore_ascii_case("desc") {
            Some(SortDirection::Desc)
        } else {
            None
        }
    }

    /// `ASC` or `DESC`.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            SortDirection::Asc => "ASC",
            SortDirection::Desc => "DESC",
        }
    }
}

/// One page of a [`JobQuery`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The jobs of the requested page, in sort order; at most `size` of them.
    pub content: Vec<JobResponse>,
    /// How many jobs match the filters over all pages.
    pub total_elements: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_by_reads_contract_names_in_any_case() {
        for (text, expected) in [
            ("createdAt", Some(SortBy::CreatedAt)),
            ("created_at", Some(SortBy::CreatedAt)),
            ("CREATEDAT", Some(SortBy::CreatedAt)),
            ("priority", Some(SortBy::Priority)),
            ("jobPriority", Some(SortBy::Priority)),
            ("Status", Some(SortBy::Status)),
            ("jobStatus", Some(SortBy::Status)),
            ("type", Some(SortBy::Type)),
            ("startedAt", Some(SortBy::StartedAt)),
            (" started_at ", Some(SortBy::StartedAt)),
            ("completedAt", Some(SortBy::CompletedAt)),
            ("COMPLETED_AT", Some(SortBy::CompletedAt)),
            ("id", None),
            ("created at", None),
            ("", None),
            ("created_at; DROP TABLE jobs", None),
        ] {
            assert_eq!(SortBy::parse(text), expected, "{text:?}");
        }
    }

    #[test]
    fn sort_direction_reads_asc_and_desc_in_any_case() {
        for (text, expected) in [
            ("asc", Some(SortDirection::Asc)),
            ("ASC", Some(SortDirection::Asc)),
            ("Desc", Some(SortDirection::Desc)),
            (" desc ", Some(SortDirection::Desc)),
            ("ascending", None),
            ("", None),
        ] {
            assert_eq!(SortDirection::parse(text), expected, "{text:?}");
        }
    }

    #[test]
    fn defaults_sort_newest_first() {
        let query = JobQuery::default();
        assert_eq!(query.sort_by, SortBy::CreatedAt);
        assert_eq!(query.direction, SortDirection::Desc);
    }
}
