//! The Prometheus metrics of `defsync serve` (`GET /metrics`, in the OpenMetrics text format that
//! Prometheus scrapes): requests by route template and status, their latency, commits by origin,
//! and the dispatch outbox.
//!
//! Counters are per process, as Prometheus expects; the outbox gauges are read from the store at
//! each scrape, so every process of a shared database reports the same depth.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{DispatchState, Store};

/// The content type of [`Metrics::encode`]'s answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The matched route template (`/v1/projects/{project}`), never the raw path: one series per
    /// route, however many projects there are.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s: a no-op read takes a millisecond, a 64 MiB commit some seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

/// The metrics of one `serve` process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    commits: Family<OriginLabels, Counter>,
    dispatch_failures: Counter,
    outbox: Family<StateLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("defsync");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by method and route template",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let commits = Family::<OriginLabels, Counter>::default();
        registry.register(
            "commits",
            "Commits answered 201 by this process, by origin type (an idempotent replay counts again)",
            commits.clone(),
        );
        let dispatch_failures = Counter::default();
        registry.register(
            "dispatch_failures",
            "Attempts to start the pull workflow that failed (each retry counts)",
            dispatch_failures.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        registry.register(
            "dispatch_outbox",
            "Rows of the dispatch outbox by state, read from the store at each scrape (pending is its depth)",
            outbox.clone(),
        );
        Metrics { registry, requests, latency, commits, dispatch_failures, outbox }
    }

    /// Counts one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { method: method.to_owned(), route: route.to_owned(), status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method: method.to_owned(), route: route.to_owned() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one commit answered 201.
    pub fn commit(&self, origin: &str) {
        self.commits.get_or_create(&OriginLabels { origin: origin.to_owned() }).inc();
    }

    /// Counts one failed dispatch attempt.
    pub fn dispatch_failed(&self) {
        self.dispatch_failures.inc();
    }

    /// Reads the outbox from `store` and renders every metric. Runs a store query: call it off
    /// the async threads.
    pub fn encode(&self, store: &Store) -> Result<String, crate::api::ApiError> {
        let counts = store.dispatch_counts()?;
        for state in [DispatchState::Pending, DispatchState::Done, DispatchState::Coalesced, DispatchState::Failed] {
            let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
            self.outbox
                .get_or_create(&StateLabels { state: state.as_str().to_owned() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| crate::api::ApiError::new(500, "internal", format!("cannot render the metrics: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_template_and_the_outbox_is_read_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let m = Metrics::new();
        m.request("GET", "/v1/projects/{project}", 200, Duration::from_millis(3));
        m.request("GET", "/v1/projects/{project}", 200, Duration::from_millis(5));
        m.commit("dashboard");
        m.dispatch_failed();
        let text = m.encode(&store).unwrap();
        assert!(
            text.contains(r#"defsync_http_requests_total{method="GET",route="/v1/projects/{project}",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains("defsync_http_request_duration_seconds_bucket{"), "{text}");
        assert!(text.contains(r#"defsync_commits_total{origin="dashboard"} 1"#), "{text}");
        assert!(text.contains("defsync_dispatch_failures_total 1"), "{text}");
        assert!(text.contains(r#"defsync_dispatch_outbox{state="pending"} 0"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
