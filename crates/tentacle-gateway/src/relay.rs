//! `TentacleRelay`: a worker on any node asks this gateway to call a tentacle it holds a
//! session with. Calls pass straight through; ending the relay call ends the tentacle call. Each
//! call runs in a `relay` span that continues the worker's trace and carries it to the tentacle.

use cuttle_core::TargetId;
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_server::{TentacleRelay, TentacleRelayServer};
use cuttle_proto::v1::{
    CapabilitiesReply, ExtractPackageReply, FileChunk, PushFileReply, RelayCapabilities,
    RelayExtractPackage, RelayPullFile, RelayRunScript, ScriptEvent,
};
use cuttle_proto::TARGET_METADATA;
use cuttle_telemetry::trace::{continue_from_metadata, grpc_request};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::Sessions;

pub struct TentacleRelayService {
    sessions: Sessions,
    node: String,
    store: cuttle_storage::Store,
}

impl TentacleRelayService {
    pub fn new(
        sessions: Sessions,
        node: String,
        store: cuttle_storage::Store,
    ) -> TentacleRelayServer<Self> {
        TentacleRelayServer::new(TentacleRelayService {
            sessions,
            node,
            store,
        })
    }

    /// The session with target `id`, once the database confirms its tentacle's certificate is
    /// still the one registered: work never goes to a certificate that was replaced or
    /// revoked, even before the next trust refresh cuts its session.
    async fn client(&self, id: i64) -> Result<TentacleClient<cuttle_proto::wire::Channel>, Status> {
        let id = TargetId(id);
        let none = || {
            Status::unavailable(format!(
                "node {} holds no session with target {id}",
                self.node
            ))
        };
        let (channel, presented) = self
            .sessions
            .get(id)
            .filter(|(c, _)| !c.is_closed())
            .ok_or_else(none)?;
        let registered = self
            .store
            .get_target(id, std::time::Duration::ZERO)
            .await
            .map_err(|e| Status::unavailable(format!("look up target {id}: {e}")))?
            .and_then(|t| t.thumbprint.parse::<cuttle_tls::Thumbprint>().ok());
        if registered != Some(presented) {
            self.sessions.cut_unless(|t, p| t != id || *p != presented);
            return Err(Status::permission_denied(format!(
                "target {id}'s certificate is no longer the one registered; its session was cut"
            )));
        }
        Ok(TentacleClient::new(channel))
    }
}

/// The span of one relayed call, continuing the worker's trace; the call to the tentacle made
/// in it carries the trace on.
fn relay_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    let span = tracing::info_span!(
        "relay",
        otel.name = %format!("relay {method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
    );
    continue_from_metadata(&span, metadata);
    span
}

#[tonic::async_trait]
impl TentacleRelay for TentacleRelayService {
    async fn capabilities(
        &self,
        request: Request<RelayCapabilities>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        let span = relay_span("Capabilities", request.metadata());
        let relayed = request.into_inner();
        async {
            let mut client = self.client(relayed.target_id).await?;
            client
                .capabilities(grpc_request(relayed.request.unwrap_or_default()))
                .await
        }
        .instrument(span)
        .await
    }

    async fn push_file(
        &self,
        request: Request<Streaming<FileChunk>>,
    ) -> Result<Response<PushFileReply>, Status> {
        let target = request
            .metadata()
            .get(TARGET_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("no {TARGET_METADATA} metadata")))?;
        let span = relay_span("PushFile", request.metadata());
        let mut client = self.client(target).await?;
        // Chunks pass through as they arrive: flow control reaches back to the sender, so the
        // gateway holds a few chunks at most. An error upstream ends the stream early, and the
        // tentacle refuses the short file.
        let chunks = request.into_inner().map_while(Result::ok);
        async { client.push_file(grpc_request(chunks)).await }
            .instrument(span)
            .await
    }

    type PullFileStream = Streaming<FileChunk>;

    async fn pull_file(
        &self,
        request: Request<RelayPullFile>,
    ) -> Result<Response<Streaming<FileChunk>>, Status> {
        let span = relay_span("PullFile", request.metadata());
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let pull = req
            .request
            .ok_or_else(|| Status::invalid_argument("no pull request"))?;
        async { client.pull_file(grpc_request(pull)).await }
            .instrument(span)
            .await
    }

    async fn extract_package(
        &self,
        request: Request<RelayExtractPackage>,
    ) -> Result<Response<ExtractPackageReply>, Status> {
        let span = relay_span("ExtractPackage", request.metadata());
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let extract = req
            .request
            .ok_or_else(|| Status::invalid_argument("no extract request"))?;
        async { client.extract_package(grpc_request(extract)).await }
            .instrument(span)
            .await
    }

    type RunScriptStream = Streaming<ScriptEvent>;

    async fn run_script(
        &self,
        request: Request<RelayRunScript>,
    ) -> Result<Response<Streaming<ScriptEvent>>, Status> {
        let span = relay_span("RunScript", request.metadata());
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let script = req
            .request
            .ok_or_else(|| Status::invalid_argument("no script request"))?;
        async { client.run_script(grpc_request(script)).await }
            .instrument(span)
            .await
    }
}
