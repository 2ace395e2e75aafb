//! `TentacleRelay`: a worker on any node asks this gateway to call a tentacle it holds a
//! session with. Calls pass straight through; ending the relay call ends the tentacle call.

use cuttle_core::TargetId;
use cuttle_proto::v1::tentacle_client::TentacleClient;
use cuttle_proto::v1::tentacle_relay_server::{TentacleRelay, TentacleRelayServer};
use cuttle_proto::v1::{
    CapabilitiesReply, CapabilitiesRequest, RelayCapabilities, RelayRunScript, ScriptEvent,
};
use tonic::{Request, Response, Status, Streaming};

use crate::Sessions;

pub struct TentacleRelayService {
    sessions: Sessions,
    node: String,
}

impl TentacleRelayService {
    pub fn new(sessions: Sessions, node: String) -> TentacleRelayServer<Self> {
        TentacleRelayServer::new(TentacleRelayService { sessions, node })
    }

    fn client(&self, id: i64) -> Result<TentacleClient<cuttle_proto::wire::Channel>, Status> {
        let id = TargetId(id);
        self.sessions
            .get(id)
            .filter(|c| !c.is_closed())
            .map(TentacleClient::new)
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "node {} holds no session with target {id}",
                    self.node
                ))
            })
    }
}

#[tonic::async_trait]
impl TentacleRelay for TentacleRelayService {
    async fn capabilities(
        &self,
        request: Request<RelayCapabilities>,
    ) -> Result<Response<CapabilitiesReply>, Status> {
        let mut client = self.client(request.into_inner().target_id)?;
        client.capabilities(CapabilitiesRequest {}).await
    }

    type RunScriptStream = Streaming<ScriptEvent>;

    async fn run_script(
        &self,
        request: Request<RelayRunScript>,
    ) -> Result<Response<Streaming<ScriptEvent>>, Status> {
        let req = request.into_inner();
        let mut client = self.client(req.target_id)?;
        let script = req
            .request
            .ok_or_else(|| Status::invalid_argument("no script request"))?;
        client.run_script(script).await
    }
}
