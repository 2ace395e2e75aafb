//! An OpenTelemetry collector for the tests: it takes OTLP over HTTP/protobuf (`POST
//! /v1/traces`, on a plain HTTP/1.1 listener) and over gRPC (`TraceService/Export`), and keeps
//! every span it is sent, with the resource it came from and the headers it came with.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name` and `service.instance.id`.
    pub service: String,
    pub instance: String,
    pub name: String,
    /// 32 and 16 hex digits; the parent's is empty for a root.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    /// `http` or `grpc`.
    pub transport: &'static str,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// Every request's headers (lower-case names), in arrival order.
    headers: Vec<HashMap<String, String>>,
}

/// The collector; stops with the test.
pub struct Collector {
    pub http_port: u16,
    pub grpc_port: u16,
    received: Arc<Mutex<Received>>,
    _runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), v)
        })
        .collect()
}

fn take(
    received: &Mutex<Received>,
    request: ExportTraceServiceRequest,
    headers: HashMap<String, String>,
    transport: &'static str,
) {
    let mut r = received.lock().unwrap();
    r.headers.push(headers);
    for rs in request.resource_spans {
        let resource = text(&rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            for s in ss.spans {
                r.spans.push(ReceivedSpan {
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    instance: resource
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: text(&s.attributes),
                    transport,
                });
            }
        }
    }
}

struct Grpc(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        take(&self.0, request.into_inner(), headers, "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves one HTTP/1.1 connection: each `POST /v1/traces` decoded and answered 200.
fn serve_http(stream: TcpStream, received: &Mutex<Received>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(req) if path == "/v1/traces" => {
                take(received, req, headers, "http");
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        )?;
        out.flush()?;
    }
}

impl Collector {
    pub fn start() -> Collector {
        let received = Arc::new(Mutex::new(Received::default()));
        let http = TcpListener::bind("127.0.0.1:0").expect("bind the collector's HTTP port");
        let http_port = http.local_addr().unwrap().port();
        let r = received.clone();
        std::thread::spawn(move || {
            for stream in http.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || {
                    let _ = serve_http(stream, &r);
                });
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let grpc_port = crate::free_port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(Grpc(received.clone()));
        runtime.spawn(async move {
            let addr = ([127, 0, 0, 1], grpc_port).into();
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_shutdown(addr, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Collector {
            http_port,
            grpc_port,
            received,
            _runtime: runtime,
            stop: Some(stop),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    /// The headers of every export received so far.
    pub fn headers(&self) -> Vec<HashMap<String, String>> {
        self.received.lock().unwrap().headers.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
