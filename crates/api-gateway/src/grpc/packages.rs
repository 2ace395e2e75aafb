//! `cuttle.v1.Packages`: uploads through the upload operation REST's `…/packages/raw` uses
//! (hashed and written as the stream arrives, kept only once it checks out), downloads streamed
//! from the shared store, in flat memory both ways.

use std::pin::Pin;

use cuttle_proto::v1 as pb;
use cuttle_proto::v1::packages_server::{Packages as Service, PackagesServer};
use cuttle_proto::v1::upload_package_request::Part;
use cuttle_storage::PackageRecord;
use futures_util::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{caller, invalid, required, status, timestamp};
use super::files;
use crate::extract::limit_or_default;
use crate::resources::packages::{self as ops, drain, store_upload, Incoming, Wanted};
use crate::scoped::{Need, DEPLOYER, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Packages";

pub(super) const NEEDS: &[(&str, Need)] = &[
    // Replacing a version needs operator on top (checked with the name).
    ("Upload", DEPLOYER),
    ("Download", READER),
    ("List", READER),
    ("Get", READER),
    ("Delete", OPERATOR),
];

pub(super) fn server(s: AppState) -> PackagesServer<PackagesApi> {
    // An upload's data messages are up to 4 MiB each.
    PackagesServer::new(PackagesApi { s }).max_decoding_message_size(4 * 1024 * 1024 + 1024)
}

pub(super) struct PackagesApi {
    s: AppState,
}

fn package(p: &PackageRecord) -> pb::Package {
    pb::Package {
        id: format!("{}.{}", p.package_id, p.version),
        space_id: p.space.clone(),
        package_id: p.package_id.clone(),
        version: p.version.clone(),
        format: p.format.extension().to_owned(),
        size: p.size,
        sha256: p.sha256.clone(),
        uploaded_by: p.uploaded_by.clone(),
        uploaded_at: Some(timestamp(p.uploaded_at)),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::PackageChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Service for PackagesApi {
    async fn upload(
        &self,
        req: Request<Streaming<pb::UploadPackageRequest>>,
    ) -> Result<Response<pb::Package>, Status> {
        let caller = caller(&req)?;
        let s = &self.s;
        let _slot = s.uploads.enter(&caller.principal).map_err(status)?;
        let mut messages = req.into_inner();
        let idle = s.config.limits.body_timeout;
        let first = match tokio::time::timeout(idle, messages.message()).await {
            Err(_) => {
                return Err(invalid(
                    "header",
                    "no first message within the body timeout",
                ))
            }
            Ok(m) => m?,
        };
        let Some(pb::UploadPackageRequest {
            part: Some(Part::Header(h)),
        }) = first
        else {
            return Err(invalid("header", "the first message names the package"));
        };
        let sha = Some(h.sha256.as_str()).filter(|v| !v.is_empty());
        let named = (h.package_id.as_str(), h.version.as_str(), h.format.as_str());
        let checked = match required("header.space", &h.space) {
            Ok(space) => Incoming::raw(s, &caller, space, named, h.replace, sha)
                .await
                .map_err(status),
            Err(e) => Err(e),
        };
        let incoming = match checked {
            Ok(i) => i,
            Err(e) => {
                drain(&mut messages, idle, |m| m.encoded_len()).await;
                return Err(e);
            }
        };
        // Every later message is the file's next bytes; the stream's end is the file's.
        let mut data = messages.map(|m| match m {
            Ok(pb::UploadPackageRequest {
                part: Some(Part::Data(d)),
            }) => Ok(d),
            Ok(_) => Err("only data may follow the header".to_owned()),
            Err(e) => Err(e.message().to_owned()),
        });
        let p = store_upload(s, &caller, incoming, &mut data).await;
        match p {
            Ok(p) => Ok(Response::new(package(&p))),
            Err(e) => {
                drain(data.get_mut(), idle, |m| m.encoded_len()).await;
                Err(status(e))
            }
        }
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        req: Request<pb::DownloadPackageRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let p = ops::find(&self.s, space, &r.package_id, &r.version)
            .await
            .map_err(status)?;
        let range = files::range(p.size, r.offset, r.length)?;
        let path = self.s.shared.package_path(&p.file);
        let mut first = Some(package(&p));
        let chunks = files::chunks(
            path,
            range,
            "open a package to download",
            Some(cuttle_telemetry::metrics().package_bytes_out()),
        )
        .await?
        .map(move |c| {
            c.map(|(data, offset)| pb::PackageChunk {
                package: first.take(),
                data,
                offset,
            })
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list(
        &self,
        req: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::ListPackagesReply>, Status> {
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let limit = limit_or_default(r.limit).map_err(status)? as usize;
        let some = |v: String| Some(v).filter(|v| !v.trim().is_empty());
        let wanted = Wanted {
            package_id: some(r.package_id),
            filter: some(r.filter),
            latest: r.latest,
            limit,
            skip: usize::try_from(r.skip).map_err(|_| invalid("skip", "too large"))?,
        };
        let (items, total, next) = ops::list_packages(&self.s, space, &wanted)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListPackagesReply {
            items: items.iter().map(package).collect(),
            total: total as u64,
            next: next.map(|n| n as u64),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::Package>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let p = ops::find(&self.s, space, &r.package_id, &r.version)
            .await
            .map_err(status)?;
        Ok(Response::new(package(&p)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePackageRequest>,
    ) -> Result<Response<pb::Package>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let gone = ops::remove(&self.s, &caller, (space, &r.package_id, &r.version))
            .await
            .map_err(status)?;
        Ok(Response::new(package(&gone)))
    }
}
