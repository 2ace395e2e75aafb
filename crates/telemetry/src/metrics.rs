//! The process's metrics, in one registry: what this process observed (requests, claims, task
//! runs, database checkouts, package bytes), kept as counters and histograms for the life of the
//! process. What is true of the whole cluster (the queue, every node's state) is read from the
//! database when `/metrics` is scraped and written beside them through a [`Snapshot`].
//!
//! Names follow Prometheus' conventions: `cuttle_` prefix, base units (seconds, bytes),
//! `_total` on counters. Labels take bounded values only: a route's template, never its path; a
//! task's kind, never its id.

use std::sync::OnceLock;

use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The media type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Seconds from a task's enqueue to its start: from instant to an hour.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Seconds a task runs: a no-op to a long deployment.
const RUN_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];
/// Seconds a call waits for a database connection.
const DB_WAIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Seconds a request takes to answer.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric this process keeps. Cheap to use from any thread: each is an atomic.
pub struct Metrics {
    registry: Registry,
    /// `cuttle_task_queue_wait_seconds{kind}`: enqueue to start, on the database's clock,
    /// observed by the worker that claimed the task.
    pub task_queue_wait: HistogramVec,
    /// `cuttle_task_run_seconds{kind,outcome}`: start to end of the tasks this node ran.
    pub task_run: HistogramVec,
    /// `cuttle_deployments_total{outcome}`: deployments this node's worker finished.
    pub deployments: IntCounterVec,
    /// `cuttle_http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `cuttle_http_request_duration_seconds{method,route}`: until the answer's head is sent.
    pub http_duration: HistogramVec,
    /// `cuttle_grpc_requests_total{method,code}`: public gRPC calls by their status code name.
    pub grpc_requests: IntCounterVec,
    /// `cuttle_grpc_request_duration_seconds{method}`: until the call's status is sent.
    pub grpc_duration: HistogramVec,
    /// `cuttle_db_connection_wait_seconds`: how long calls waited for a pooled connection.
    pub db_wait: Histogram,
    /// `cuttle_db_errors_total{kind}`: database calls that failed (`unavailable`: unreachable or
    /// no answer in time; `error`: the database answered with an error).
    pub db_errors: IntCounterVec,
    /// `cuttle_package_bytes_total{direction}`: package bytes received (`in`) and served
    /// (`out`) by this node.
    pub package_bytes: IntCounterVec,
    /// `cuttle_certificate_expiry_timestamp_seconds{certificate}`: when each certificate this
    /// node presents stops being valid.
    pub certificate_expiry: IntGaugeVec,
    /// `cuttle_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("a valid histogram")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            task_queue_wait: histogram(
                "cuttle_task_queue_wait_seconds",
                "Time from a task's enqueue to its start (database clock), by kind.",
                &["kind"],
                QUEUE_WAIT_BUCKETS,
            ),
            task_run: histogram(
                "cuttle_task_run_seconds",
                "Time the tasks this node ran took, by kind and outcome.",
                &["kind", "outcome"],
                RUN_BUCKETS,
            ),
            deployments: counter(
                "cuttle_deployments_total",
                "Deployments this node finished, by outcome.",
                &["outcome"],
            ),
            http_requests: counter(
                "cuttle_http_requests_total",
                "HTTP requests this node answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                "cuttle_http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route template.",
                &["method", "route"],
                REQUEST_BUCKETS,
            ),
            grpc_requests: counter(
                "cuttle_grpc_requests_total",
                "Public gRPC calls this node answered, by method and status code.",
                &["method", "code"],
            ),
            grpc_duration: histogram(
                "cuttle_grpc_request_duration_seconds",
                "Time to answer a public gRPC call, by method.",
                &["method"],
                REQUEST_BUCKETS,
            ),
            db_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "cuttle_db_connection_wait_seconds",
                    "Time database calls waited for a pooled connection.",
                )
                .buckets(DB_WAIT_BUCKETS.to_vec()),
            )
            .expect("a valid histogram"),
            db_errors: counter(
                "cuttle_db_errors_total",
                "Database calls that failed: unavailable (unreachable, no answer in time) or \
                 error (the database refused the statement).",
                &["kind"],
            ),
            package_bytes: counter(
                "cuttle_package_bytes_total",
                "Package bytes this node received (in) and served (out).",
                &["direction"],
            ),
            certificate_expiry: IntGaugeVec::new(
                Opts::new(
                    "cuttle_certificate_expiry_timestamp_seconds",
                    "When each certificate this node presents expires (Unix time).",
                ),
                &["certificate"],
            )
            .expect("a valid gauge"),
            build_info: IntGaugeVec::new(
                Opts::new("cuttle_build_info", "This process's version; always 1."),
                &["version"],
            )
            .expect("a valid gauge"),
        };
        let r = &m.registry;
        let all: [Box<dyn prometheus::core::Collector>; 12] = [
            Box::new(m.task_queue_wait.clone()),
            Box::new(m.task_run.clone()),
            Box::new(m.deployments.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.grpc_requests.clone()),
            Box::new(m.grpc_duration.clone()),
            Box::new(m.db_wait.clone()),
            Box::new(m.db_errors.clone()),
            Box::new(m.package_bytes.clone()),
            Box::new(m.certificate_expiry.clone()),
            Box::new(m.build_info.clone()),
        ];
        for c in all {
            r.register(c).expect("metric names are unique");
        }
        // Both directions and both kinds exist from the start, so a rate over them is 0, not
        // absent, until the first byte or error.
        for d in ["in", "out"] {
            m.package_bytes.with_label_values(&[d]);
        }
        for k in ["unavailable", "error"] {
            m.db_errors.with_label_values(&[k]);
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics register once");
        m
    }

    /// The counter of package bytes this node serves.
    pub fn package_bytes_out(&self) -> IntCounter {
        self.package_bytes.with_label_values(&["out"])
    }

    /// Counts `n` package bytes received.
    pub fn package_bytes_in(&self, n: u64) {
        self.package_bytes.with_label_values(&["in"]).inc_by(n);
    }

    /// Records the version this process runs (`cuttle_build_info`).
    pub fn set_version(&self, version: &str) {
        self.build_info.with_label_values(&[version]).set(1);
    }

    /// The text format of every metric this process keeps, followed by `cluster`'s families.
    pub fn render(&self, cluster: Snapshot) -> String {
        let mut families = self.registry.gather();
        families.extend(cluster.registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("the text encoder writes to a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Metrics computed for one scrape (from the database, from a pool's state), rendered after the
/// process's own. Each name may be declared once.
pub struct Snapshot {
    registry: Registry,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::new()
    }
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot {
            registry: Registry::new(),
        }
    }

    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("a snapshot declares each name once");
        c
    }

    /// A gauge with `labels`, to set per label values.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
        self.add(prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge"))
    }

    /// A gauge without labels, set to `value`.
    pub fn value(&self, name: &str, help: &str, value: f64) {
        let g = self.add(prometheus::Gauge::new(name, help).expect("a valid gauge"));
        g.set(value);
    }

    /// A counter kept elsewhere (an atomic), written with its current `value`.
    pub fn counter(&self, name: &str, help: &str, value: u64) {
        let c = self.add(IntCounter::new(name, help).expect("a valid counter"));
        c.inc_by(value);
    }

    /// The families, for tests.
    pub fn families(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_metrics_and_a_snapshot_render_together() {
        let m = metrics();
        m.set_version("9.9.9");
        m.task_queue_wait.with_label_values(&["Noop"]).observe(0.3);
        m.package_bytes.with_label_values(&["in"]).inc_by(42);
        let s = Snapshot::new();
        s.gauge("cuttle_queue_tasks", "Tasks.", &["state", "kind"])
            .with_label_values(&["Queued", "Noop"])
            .set(3.0);
        s.counter("cuttle_db_commits_total", "Commits.", 7);
        let text = m.render(s);
        for line in [
            "cuttle_build_info{version=\"9.9.9\"} 1",
            "cuttle_task_queue_wait_seconds_bucket{kind=\"Noop\",le=\"0.5\"} 1",
            "cuttle_task_queue_wait_seconds_count{kind=\"Noop\"} 1",
            "cuttle_package_bytes_total{direction=\"in\"} 42",
            "cuttle_package_bytes_total{direction=\"out\"} 0",
            "cuttle_queue_tasks{kind=\"Noop\",state=\"Queued\"} 3",
            "# TYPE cuttle_db_commits_total counter",
            "cuttle_db_commits_total 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "each name once")]
    fn a_snapshot_refuses_a_name_twice() {
        let s = Snapshot::new();
        s.value("cuttle_x", "x", 1.0);
        s.value("cuttle_x", "x", 2.0);
    }
}
