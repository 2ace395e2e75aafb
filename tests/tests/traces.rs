//! docs/operations.md, "Traces": one deployment is one trace across the node that took the
//! request, the node that ran it and the tentacle that ran its script, continuing the trace
//! the client sent; exported over OTLP as the standard variables say (HTTP/protobuf from the
//! nodes, gRPC from the tentacle), the collector's credentials sent to it and to nothing else.

use std::time::Duration;

use cuttle_e2e::{wait_until, Cluster, Collector, NodeOptions, ReceivedSpan, Tentacle};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);
/// The client's own trace, which the deployment must continue.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| pred(s))
        .unwrap_or_else(|| panic!("no {what} among\n{spans:#?}"))
}

#[test]
fn one_deployment_is_one_trace_across_two_nodes_and_a_tentacle() {
    let collector = Collector::start();
    let cluster = Cluster::postgres();
    let traced = |name: &str, cap: u32| {
        let mut o = NodeOptions::named(name, cap);
        o.env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{}", collector.http_port),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS".into(),
                "x-collector-key=node%20secret".into(),
            ),
        ];
        o
    };
    // n1 takes the request and never claims; n2 runs the deployment.
    let n1 = cluster.start(traced("n1", 0));
    let _n2 = cluster.start(traced("n2", 2));
    let dir = cuttle_e2e::temp_dir("traces");
    let mut web = Tentacle::polling(dir.path(), "web1", &n1, "web", &["Development"]);
    web.env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{}", collector.grpc_port),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-collector-key=tentacle".into(),
        ),
    ];
    web.start();
    wait_until("the tentacle connected", MIN, || {
        let (_, targets) = n1.get("/api/targets");
        (targets["items"][0]["connected_nodes"]
            .as_array()
            .map(Vec::len)
            == Some(2))
        .then_some(())
    });

    let dev = n1.environment("Development");
    // The script shows what it was given: the trace (to carry on), never the credentials.
    let script = "echo \"trace=$TRACEPARENT headers=${OTEL_EXPORTER_OTLP_HEADERS:-none}\"";
    let project = n1.script_project("Shop", "Say", &["web"], script);
    let (status, release) = n1.post(&format!("{project}/releases"), &json!({"version": "1.0.0"}));
    assert_eq!(status, 201, "{release}");
    let body = json!({"release_id": id(&release), "environment_id": dev}).to_string();
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let (status, d) = n1.request_with_headers(
        &n1.api_key(),
        "POST",
        "/api/spaces/default/deployments",
        Some(&body),
        &[("traceparent", &traceparent)],
    );
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap().to_owned();
    let t = n1.wait_finished(&task, MIN);
    assert_eq!(t["state"], "Success", "{t}");
    let log = n1.task_log(&task);
    assert!(
        log.contains(&format!("trace=00-{TRACE}-")) && log.contains("headers=none"),
        "the script's environment:\n{log}"
    );

    // Each process exports on its own schedule: wait for the last of them.
    let expected = [
        "POST /api/spaces/{space}/deployments",
        "task Deploy",
        "queued",
        "step",
        "target",
        "relay RunScript",
        "run script",
    ];
    let spans = wait_until("every process's spans", MIN, || {
        let spans = collector.spans();
        expected
            .iter()
            .all(|e| spans.iter().any(|s| s.trace_id == TRACE && s.name == *e))
            .then_some(spans)
    });
    let ours: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE)
        .cloned()
        .collect();
    let request = find(&ours, "the request's span on n1", |s| {
        s.instance == "n1" && s.name == "POST /api/spaces/{space}/deployments"
    });
    assert_eq!(
        request.parent_span_id, CLIENT_SPAN,
        "it continues the client's span"
    );
    assert_eq!(request.attributes["http.response.status_code"], "201");
    assert_eq!(request.transport, "http");
    find(&ours, "a database call in the request", |s| {
        s.instance == "n1" && s.name == "db enqueue" && s.parent_span_id == request.span_id
    });
    let task_span = find(&ours, "the task's span on n2", |s| {
        s.instance == "n2" && s.name == "task Deploy"
    });
    assert_eq!(
        task_span.parent_span_id, request.span_id,
        "queued by the request"
    );
    assert_eq!(task_span.attributes["cuttle.task.id"], task);
    find(&ours, "its wait in the queue", |s| {
        s.name == "queued" && s.parent_span_id == task_span.span_id
    });
    let step = find(&ours, "the step's span", |s| {
        s.name == "step" && s.attributes.get("cuttle.step").map(String::as_str) == Some("Say")
    });
    assert_eq!(step.parent_span_id, task_span.span_id);
    assert_eq!(step.attributes["cuttle.step"], "Say");
    let target = find(&ours, "the target's span", |s| {
        s.name == "target" && s.attributes.get("cuttle.target").map(String::as_str) == Some("web1")
    });
    assert_eq!(target.parent_span_id, step.span_id);
    assert_eq!(target.attributes["cuttle.target"], "web1");
    let script = find(&ours, "the script's span on the tentacle", |s| {
        s.service == "cuttle-tentacle" && s.name == "run script"
    });
    assert_eq!(script.instance, "web1");
    assert_eq!(script.attributes["cuttle.target"], "web1");
    assert_eq!(script.attributes["exit_code"], "0");
    assert_eq!(script.transport, "grpc");
    // Through whichever gateway held the session: a relay span between the target and the
    // script.
    let relay = find(&ours, "the gateway's relay span", |s| {
        s.name == "relay RunScript" && s.span_id == script.parent_span_id
    });
    assert_eq!(relay.parent_span_id, target.span_id);
    // Every span of the deployment is in the one trace: none of them started another.
    let stray: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.trace_id != TRACE
                && (s.name == "step"
                    || s.name == "target"
                    || s.name == "task Deploy"
                    || s.name == "run script")
        })
        .collect();
    assert!(stray.is_empty(), "outside the trace: {stray:#?}");
    // The collector's credentials went to the collector.
    let headers = collector.headers();
    for (key, transport) in [("node secret", "http"), ("tentacle", "grpc")] {
        assert!(
            headers
                .iter()
                .any(|h| h.get("x-collector-key").map(String::as_str) == Some(key)),
            "{transport} exports without their header: {headers:?}"
        );
    }
    // …and nothing else: the node wiped them from its environment once read.
    let environ = std::fs::read(format!("/proc/{}/environ", n1.pid().unwrap())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("OTEL_EXPORTER_OTLP_ENDPOINT="),
        "{environ}"
    );
    assert!(
        !environ.contains("node%20secret"),
        "the node's environment: {environ}"
    );
    // Health checks and scrapes make no trace.
    for path in ["/api/nodes/ping", "/metrics"] {
        let _ = n1.get(path);
    }
    n1.wait_finished(
        &n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}})),
        MIN,
    );
    wait_until("the Sleep task's trace", MIN, || {
        collector
            .spans()
            .iter()
            .any(|s| s.name == "task Sleep")
            .then_some(())
    });
    let names: Vec<String> = collector.spans().into_iter().map(|s| s.name).collect();
    for untraced in ["GET /api/nodes/ping", "GET /metrics"] {
        assert!(
            !names.iter().any(|n| n == untraced),
            "{untraced} was traced"
        );
    }
    web.stop();
}

/// "`http/json` is refused at start; anything but `otlp` or `none` in `OTEL_TRACES_EXPORTER`
/// too": a node that cannot export as told exits at once, naming the variable, rather than
/// running without the traces someone is counting on.
#[test]
fn a_node_refuses_export_settings_it_cannot_honour() {
    let cluster = Cluster::sqlite();
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        let mut opts = NodeOptions::named("n1", 0);
        opts.env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "http://127.0.0.1:4318".into(),
            ),
            (var.into(), value.into()),
        ];
        let cmd = cluster.command(&opts, cuttle_e2e::free_port(), cuttle_e2e::free_port());
        let (status, _, err) = cuttle_e2e::run_to_exit(cmd, MIN).unwrap();
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(var) && err.contains(value), "{err}");
    }
}
