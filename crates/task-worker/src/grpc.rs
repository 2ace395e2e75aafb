use cuttle_proto::v1::worker_control_server::{WorkerControl, WorkerControlServer};
use cuttle_proto::v1::{wake_request::Reason, WakeReply, WakeRequest};
use tonic::{Request, Response, Status};

use crate::WorkerHandle;

/// The `WorkerControl` gRPC service over a local worker.
pub struct WorkerControlService {
    handle: WorkerHandle,
}

impl WorkerControlService {
    pub fn new(handle: WorkerHandle) -> WorkerControlServer<Self> {
        WorkerControlServer::new(WorkerControlService { handle })
    }
}

#[tonic::async_trait]
impl WorkerControl for WorkerControlService {
    async fn wake(&self, request: Request<WakeRequest>) -> Result<Response<WakeReply>, Status> {
        match request.into_inner().reason() {
            Reason::Cancelled => self.handle.wake_reconcile(),
            Reason::SettingsChanged => self.handle.settings_changed(),
            Reason::Enqueued | Reason::Unspecified => self.handle.wake_claim(),
        }
        Ok(Response::new(WakeReply {}))
    }
}
