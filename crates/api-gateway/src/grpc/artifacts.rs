//! `cuttle.v1.Artifacts`: a task's artifacts, listed and streamed from the shared store through
//! what REST's artifact routes use.

use std::pin::Pin;

use cuttle_proto::v1 as pb;
use cuttle_proto::v1::artifacts_server::{Artifacts as Service, ArtifactsServer};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::convert::{status, timestamp};
use super::files;
use crate::resources::artifacts::{artifact_file, list_artifacts, ms};
use crate::scoped::{Need, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Artifacts";

pub(super) const NEEDS: &[(&str, Need)] = &[("List", READER), ("Download", READER)];

pub(super) fn server(s: AppState) -> ArtifactsServer<ArtifactsApi> {
    ArtifactsServer::new(ArtifactsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct ArtifactsApi {
    s: AppState,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Service for ArtifactsApi {
    async fn list(
        &self,
        req: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsReply>, Status> {
        let (_, found) = list_artifacts(&self.s, &req.get_ref().task_id)
            .await
            .map_err(status)?;
        let items = found
            .into_iter()
            .map(|a| {
                let created = ms(a.created);
                pb::Artifact {
                    id: a.id,
                    name: a.name,
                    source: a.source,
                    size: a.size,
                    created_at: Some(timestamp(created)),
                }
            })
            .collect();
        Ok(Response::new(pb::ListArtifactsReply { items }))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        req: Request<pb::DownloadArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let (path, meta) = artifact_file(&self.s, &r.task_id, &r.id)
            .await
            .map_err(status)?;
        let range = files::range(meta.len(), r.offset, r.length)?;
        let chunks = files::chunks(path, range, "open an artifact to download", None)
            .await?
            .map(|c| c.map(|(data, offset)| pb::ArtifactChunk { data, offset }));
        Ok(Response::new(Box::pin(chunks)))
    }
}
