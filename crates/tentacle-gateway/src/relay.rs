//! `TentacleRelay`: a worker on any node asks this gateway to call a tentacle it holds a
//! session with. Calls pass straight through; ending the relay call ends the tentacle call.

use cuttle_core::TargetId;
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_server::{TentacleRelay, TentacleRelayServer};
use cuttle_proto::v1::{
    CapabilitiesReply, ExtractPackageReply, FileChunk, PushFileReply, RelayCapabilities,
    RelayExtractPackage, RelayPullFile, RelayRunScript, ScriptEvent,
};
use cuttle_proto::TARGET_METADATA;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

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

#[tonic::async_trait]
impl TentacleRelay for TentacleRelayService {
    async fn capabilities(
        &self,
        request: Request<RelayCapabilities>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        let relayed = request.into_inner();
        let mut client = self.client(relayed.target_id).await?;
        client
            .capabilities(relayed.request.unwrap_or_default())
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
        let mut client = self.client(target).await?;
        // Chunks pass through as they arrive: flow control reaches back to the sender, so the
        // gateway holds a few chunks at most. An error upstream ends the stream early, and the
        // tentacle refuses the short file.
        let chunks = request.into_inner().map_while(Result::ok);
        client.push_file(chunks).await
    }

    type PullFileStream = Streaming<FileChunk>;

    async fn pull_file(
        &self,
        request: Request<RelayPullFile>,
    ) -> Result<Response<Streaming<FileChunk>>, Status> {
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let pull = req
            .request
            .ok_or_else(|| Status::invalid_argument("no pull request"))?;
        client.pull_file(pull).await
    }

    async fn extract_package(
        &self,
        request: Request<RelayExtractPackage>,
    ) -> Result<Response<ExtractPackageReply>, Status> {
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let extract = req
            .request
            .ok_or_else(|| Status::invalid_argument("no extract request"))?;
        client.extract_package(extract).await
    }

    type RunScriptStream = Streaming<ScriptEvent>;

    async fn run_script(
        &self,
        request: Request<RelayRunScript>,
    ) -> Result<Response<Streaming<ScriptEvent>>, Status> {
        let req = request.into_inner();
        let mut client = self.client(req.target_id).await?;
        let script = req
            .request
            .ok_or_else(|| Status::invalid_argument("no script request"))?;
        client.run_script(script).await
    }
}
