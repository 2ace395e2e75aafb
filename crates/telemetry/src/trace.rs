//! Traces: OpenTelemetry spans from `tracing` spans, exported over OTLP when the standard
//! `OTEL_*` variables name a collector, and W3C trace context (`traceparent`) carried between
//! processes — from a request into the task it queues, from a worker to the gateway and the
//! tentacle — so one deployment is one trace across every process it touched.
//!
//! A tracer provider is always installed, exporting or not: every span then has a trace id,
//! which log lines carry and which crosses process boundaries, so logs of one deployment can be
//! joined across nodes even without a collector.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The instrumentation scope every Cuttle span is reported under.
pub const SCOPE: &str = "cuttle";

/// What the environment says about exporting traces, read once at start.
#[derive(Clone, Default)]
pub struct ExportSettings {
    /// `key=value,…` headers for the collector (credentials).
    headers: Option<String>,
}

impl std::fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the headers' values: they are credentials.
        f.debug_struct("ExportSettings")
            .field("headers", &self.headers.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ExportSettings {
    /// Reads the collector's headers (the server then wipes them from its environment, as it
    /// does its other secrets; scripts, on nodes and tentacles, start from a clean one).
    pub fn from_env() -> ExportSettings {
        ExportSettings {
            headers: var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS")),
        }
    }
}

/// Who is tracing: `service.name` (unless `OTEL_SERVICE_NAME` says otherwise),
/// `service.instance.id` (a node's or a target's name) and `service.version`.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub instance: String,
    pub version: &'static str,
}

/// Where spans go: nowhere but log lines, or an OTLP collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Trace ids and propagation only (no collector named, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`).
    None,
    /// OTLP over gRPC to this endpoint.
    Grpc(String),
    /// OTLP over HTTP (protobuf) to this endpoint (the traces URL, `…/v1/traces`).
    HttpProtobuf(String),
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads the standard variables: where, and how, spans are exported. An unsupported exporter
/// or protocol is an error naming the variable.
pub fn destination() -> Result<Destination, String> {
    destination_from(var)
}

fn destination_from(var: impl Fn(&str) -> Option<String>) -> Result<Destination, String> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Destination::None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(Destination::None),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other:?} is not supported: otlp or none"
            ))
        }
    }
    let signal = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let generic = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    if signal.is_none() && generic.is_none() {
        return Ok(Destination::None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p))
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)));
    let endpoint = |base: Option<String>, path: &str| match (&signal, base) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => format!("{}{path}", b.trim_end_matches('/')),
        (None, None) => unreachable!("one of the two is set"),
    };
    for e in signal.iter().chain(&generic) {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(format!(
                "the OTLP endpoint {e:?} must start with http:// or https://"
            ));
        }
    }
    match protocol {
        // The specification's default.
        None => Ok(Destination::HttpProtobuf(endpoint(generic, "/v1/traces"))),
        Some((_, p)) if p == "http/protobuf" => {
            Ok(Destination::HttpProtobuf(endpoint(generic, "/v1/traces")))
        }
        Some((_, p)) if p == "grpc" => Ok(Destination::Grpc(endpoint(generic, ""))),
        Some((name, p)) => Err(format!(
            "{name}={p:?} is not supported: grpc or http/protobuf"
        )),
    }
}

/// `k1=v1,k2=v2`, as `OTEL_EXPORTER_OTLP_HEADERS` writes them; the values still
/// percent-encoded (the HTTP exporter decodes them itself; the gRPC one is given them decoded).
fn parse_headers(s: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| "OTEL_EXPORTER_OTLP_HEADERS: each header is name=value".to_owned())?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// How long one export may take: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `…_TIMEOUT`, in
/// milliseconds, 10 s by default.
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|n| var(n).and_then(|v| v.trim().parse::<u64>().ok()))
    .map_or(Duration::from_secs(10), Duration::from_millis)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The tracer provider, installed as the global one; flushes what is left when dropped.
pub struct Tracing {
    provider: SdkTracerProvider,
    pub destination: Destination,
}

impl Tracing {
    /// Builds the provider for `service` sending to `destination`. Call it inside the tokio
    /// runtime (the gRPC exporter runs on it).
    pub fn start(
        service: &Service,
        destination: Destination,
        settings: &ExportSettings,
    ) -> Result<Tracing, String> {
        let mut resource = Resource::builder().with_attributes([
            KeyValue::new("service.instance.id", service.instance.clone()),
            KeyValue::new("service.version", service.version),
        ]);
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.name);
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        let headers = match &settings.headers {
            Some(h) => parse_headers(h)?,
            None => HashMap::new(),
        };
        match &destination {
            Destination::None => {}
            Destination::HttpProtobuf(url) => {
                builder = builder.with_batch_exporter(exporters::http(url, headers)?);
            }
            Destination::Grpc(url) => {
                builder = builder.with_batch_exporter(exporters::grpc(url, headers)?);
            }
        }
        let provider = builder.build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Tracing {
            provider,
            destination,
        })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SCOPE))
    }

    /// Sends what is still buffered (at most `OTEL_BSP_EXPORT_TIMEOUT`).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The `traceparent` of `span` (W3C trace context), for a process it calls or a task it queues;
/// `None` outside any trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The current span's `traceparent`.
pub fn traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the trace `traceparent` names (ignored when it is malformed). Call
/// it before the span is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the trace the `traceparent` header (or gRPC metadata) names.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        continue_trace(span, tp);
    }
}

/// `span` (a request's, which declares a `trace_id` field) continuing the trace the request's
/// headers carry, its `trace_id` recorded for the log lines written in it.
pub fn continued(span: tracing::Span, headers: &http::HeaderMap) -> tracing::Span {
    continue_from_headers(&span, headers);
    record_trace_id(&span);
    span
}

/// Records `span`'s trace id in its `trace_id` field (for its log lines).
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id_of(span) {
        span.record("trace_id", id.as_str());
    }
}

/// Makes `span` a child of the trace a gRPC call's `traceparent` metadata names.
pub fn continue_from_metadata(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    if let Some(tp) = metadata.get("traceparent").and_then(|v| v.to_str().ok()) {
        continue_trace(span, tp);
    }
}

/// A gRPC request carrying the current span's trace (`traceparent` metadata).
pub fn grpc_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(v) = traceparent().and_then(|tp| tp.parse().ok()) {
        request.metadata_mut().insert("traceparent", v);
    }
    request
}

/// The trace id of `span` (32 hex digits); `None` outside any trace.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Records, under `parent`, a span that already happened: `name`, ending now, that lasted
/// `took` (a task's wait in the queue, measured on the database's clock).
pub fn record_past(
    parent: &tracing::Span,
    name: &'static str,
    took: Duration,
    attributes: &[(&'static str, String)],
) {
    let attributes: Vec<KeyValue> = attributes
        .iter()
        .map(|(k, v)| KeyValue::new(*k, v.clone()))
        .collect();
    let cx: Context = parent.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(SCOPE);
    let end = SystemTime::now();
    let start = end.checked_sub(took).unwrap_or(end);
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, &cx);
    span.end_with_timestamp(end);
}

mod exporters {
    //! The two OTLP transports: gRPC (tonic, the node's own HTTP/2 stack) and HTTP/protobuf
    //! (ureq, blocking, on the batch processor's own thread). Both verify the collector's
    //! certificate against the public roots, or `OTEL_EXPORTER_OTLP_CERTIFICATE`'s.

    use std::collections::HashMap;

    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};

    fn certificate_file() -> Option<(&'static str, String)> {
        [
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ]
        .into_iter()
        .find_map(|n| super::var(n).map(|v| (n, v)))
    }

    fn read_certificate() -> Result<Option<Vec<u8>>, String> {
        match certificate_file() {
            None => Ok(None),
            Some((name, path)) => std::fs::read(&path)
                .map(Some)
                .map_err(|e| format!("{name} {path}: {e}")),
        }
    }

    pub(super) fn grpc(
        url: &str,
        headers: HashMap<String, String>,
    ) -> Result<SpanExporter, String> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in headers {
            let v = super::percent_decode(&v);
            let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                format!("OTEL_EXPORTER_OTLP_HEADERS: {k:?} is not a header name")
            })?;
            let value = v.parse().map_err(|_| {
                format!("OTEL_EXPORTER_OTLP_HEADERS: the value of {k} is not valid")
            })?;
            metadata.insert(key, value);
        }
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = read_certificate()? {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        let mut builder = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(super::export_timeout())
            .with_metadata(metadata);
        if url.starts_with("https://") {
            builder = builder.with_tls_config(tls);
        }
        builder
            .build()
            .map_err(|e| format!("OTLP gRPC exporter: {e}"))
    }

    pub(super) fn http(
        url: &str,
        headers: HashMap<String, String>,
    ) -> Result<SpanExporter, String> {
        let client = Ureq::new(read_certificate()?)?;
        SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(super::export_timeout())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_headers(headers)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("OTLP HTTP exporter: {e}"))
    }

    /// The HTTP client: ureq, rustls, bounded answers.
    #[derive(Debug)]
    struct Ureq(ureq::Agent);

    impl Ureq {
        fn new(ca_pem: Option<Vec<u8>>) -> Result<Ureq, String> {
            use ureq::tls::{PemItem, RootCerts, TlsConfig};
            let mut tls = TlsConfig::builder();
            if let Some(pem) = ca_pem {
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err("OTEL_EXPORTER_OTLP_CERTIFICATE holds no PEM certificate".into());
                }
                tls = tls.root_certs(RootCerts::new_with_certs(&certs));
            }
            // The SDK's batch processor waits for each export: one that never ends would stop
            // every span after it.
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(super::export_timeout()))
                .tls_config(tls.build())
                .build()
                .new_agent();
            Ok(Ureq(agent))
        }
    }

    /// The most of a collector's answer read.
    const MAX_ANSWER: u64 = 4 << 20;

    #[tonic::async_trait]
    impl HttpClient for Ureq {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            // Blocking: the batch span processor calls this on a thread of its own.
            let request = request.map(|b| b.to_vec());
            let mut answer = self.0.run(request)?;
            let body = answer
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_vec()?;
            let (parts, _) = answer.into_parts();
            Ok(Response::from_parts(parts, Bytes::from(body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Destination, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        destination_from(|n| vars.get(n).cloned())
    }

    #[test]
    fn the_standard_variables_choose_where_spans_go() {
        assert_eq!(from(&[]), Ok(Destination::None));
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
        assert_eq!(
            from(&[base]),
            Ok(Destination::HttpProtobuf(
                "http://collector:4318/v1/traces".into()
            ))
        );
        assert_eq!(
            from(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(Destination::Grpc("http://collector:4318".into()))
        );
        // The signal's own variables win, used as given.
        assert_eq!(
            from(&[
                base,
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://traces:443/in"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
            Ok(Destination::HttpProtobuf("https://traces:443/in".into()))
        );
        assert_eq!(
            from(&[base, ("OTEL_SDK_DISABLED", "true")]),
            Ok(Destination::None)
        );
        assert_eq!(
            from(&[base, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Destination::None)
        );
        for (k, v) in [
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ] {
            let e = from(&[base, (k, v)]).unwrap_err();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
        assert!(from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).is_err());
    }

    #[test]
    fn headers_are_read_as_the_specification_writes_them() {
        let h = parse_headers("api-key=secret%3D1, x-tenant = acme ,").unwrap();
        assert_eq!(
            h["api-key"], "secret%3D1",
            "decoded by the exporter that sends it"
        );
        assert_eq!(percent_decode(&h["api-key"]), "secret=1");
        assert_eq!(h["x-tenant"], "acme");
        assert!(parse_headers("novalue").is_err());
    }
}
