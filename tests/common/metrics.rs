//! Reading Prometheus text in tests: fetch a metrics route and read a series' value.

use std::collections::BTreeSet;
use std::time::Duration;

/// One scrape of a metrics route.
pub struct Scrape(pub String);

impl Scrape {
    /// The sum of the samples named `name` whose labels include every pair of `labels` (a
    /// partial match sums the others' series); `None` when no sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(key, value)| {
                    series_labels
                        .split(',')
                        .any(|pair| pair == format!("{key}=\"{value}\""))
                });
            if matches {
                let value: f64 = value.parse().expect("a sample value");
                found = Some(found.unwrap_or(0.0) + value);
            }
        }
        found
    }

    /// [`Scrape::value`], 0 when absent.
    pub fn or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// GETs a metrics route, which must answer 200 with the Prometheus text format.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Scrape {
    let response = client.get(url).send().await.expect("GET metrics");
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{url}: {content_type}"
    );
    Scrape(response.text().await.expect("metrics text"))
}

/// Scrapes `url` until `check` holds for the value of `name` with `labels` (gauges are
/// refreshed every second); panics with the last scrape after 60 s.
pub async fn wait_metric(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
    what: &str,
    check: impl Fn(f64) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let scrape = scrape(client, url).await;
        if check(scrape.or_zero(name, labels)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} never {what}; last scrape of {url}:\n{}",
            scrape.0
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Metrics that only a cluster has (a one-node `serve` replicates to nobody): the partition test
/// of `orchestrator_cluster.rs` checks that they exist.
pub const CLUSTER_ONLY: [&str; 1] = ["distriqueue_orchestrator_raft_replication_lag"];

/// Every `distriqueue_*` metric a file of the repository (`deploy/monitoring/...`) names,
/// without the `_bucket`/`_sum`/`_count` of a histogram's series.
pub fn metrics_named_in(file: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).expect("read a monitoring file");
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("distriqueue_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

/// The metric families of a scrape (its `# TYPE` lines).
pub fn families(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .0
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
