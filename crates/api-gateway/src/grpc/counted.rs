//! Every public gRPC call counted in `cuttle_grpc_requests_total{method,code}` and timed in
//! `cuttle_grpc_request_duration_seconds{method}`, until its status is sent: in the answer's
//! head for a refusal (trailers-only), in the trailers after the last message otherwise. A call
//! whose client goes away before the status is `Cancelled`. Each call (but the health service's)
//! runs in a `call` span continuing the caller's trace (`traceparent` metadata).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use tracing::Instrument;

use super::{Guard, KEYLESS};

/// The keyless methods that exist (any other path under their services is `unknown`).
const KEYLESS_METHODS: [&str; 2] = ["Check", "Watch"];

pub(super) async fn count_call(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let known = g.needs.contains_key(path)
        || KEYLESS.iter().any(|svc| {
            path.strip_prefix(svc)
                .is_some_and(|m| KEYLESS_METHODS.contains(&m) || m == "ServerReflectionInfo")
        });
    // Only methods that exist become labels: a client's made-up paths are all `unknown`.
    let method = if known {
        path.trim_start_matches('/').to_owned()
    } else {
        "unknown".to_owned()
    };
    // The health service (polled by load balancers) makes no trace.
    let span = if known && !path.starts_with("/grpc.") {
        let span = tracing::info_span!(
            "call",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        cuttle_telemetry::trace::continued(span, req.headers())
    } else {
        tracing::Span::none()
    };
    let call = Call {
        method,
        started: Instant::now(),
        done: false,
        span: span.clone(),
    };
    let mut resp = next.run(req).instrument(span).await;
    if let Some(code) = code_in(resp.headers()) {
        let mut call = call;
        call.record(code);
        return resp;
    }
    let body = std::mem::take(resp.body_mut());
    *resp.body_mut() = Body::new(Counted { inner: body, call });
    resp
}

struct Call {
    method: String,
    started: Instant,
    done: bool,
    /// Ends when the call is recorded (its status sent).
    span: tracing::Span,
}

impl Call {
    fn record(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        self.span.record("rpc.grpc.status_code", code);
        self.span = tracing::Span::none();
        let m = cuttle_telemetry::metrics();
        m.grpc_requests
            .with_label_values(&[&self.method, code])
            .inc();
        m.grpc_duration
            .with_label_values(&[&self.method])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record("Cancelled");
    }
}

/// The status code's name (`OK`, `NotFound`, …) in `grpc-status`, if the headers carry one.
fn code_in(headers: &HeaderMap) -> Option<&'static str> {
    let n: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(code_name(tonic::Code::from_i32(n)))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// An answer's body that records the call when its trailers pass.
struct Counted {
    inner: Body,
    call: Call,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_in) {
                    self.call.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.call.record("Unknown"),
            Poll::Ready(None) => self.call.record("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        let mut h = HeaderMap::new();
        assert_eq!(code_in(&h), None);
        h.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(code_in(&h), Some("OK"));
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(code_in(&h), Some("NotFound"));
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(code_in(&h), Some("Unauthenticated"));
    }
}
