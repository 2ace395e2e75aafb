//! `cuttle.v1.ApiKeys`: an admin's keys, through the operations REST's `/api/keys` uses. A
//! key's secret is in the reply that made it, and nowhere else, ever.

use cuttle_core::{format_rfc3339_ms, ApiKeyRequest, Scope};
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::api_keys_server::{ApiKeys as Service, ApiKeysServer};
use cuttle_storage::ApiKeyRow;
use tonic::{Request, Response, Status};

use super::convert::{caller, invalid, status, timestamp, timestamp_opt};
use crate::auth::now_ms;
use crate::resources::keys::{create_key, revoke_key, ID_PREFIX};
use crate::scoped::{Need, ADMIN};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.ApiKeys";

pub(super) const NEEDS: &[(&str, Need)] = &[("List", ADMIN), ("Create", ADMIN), ("Revoke", ADMIN)];

pub(super) fn server(s: AppState) -> ApiKeysServer<ApiKeysApi> {
    ApiKeysServer::new(ApiKeysApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct ApiKeysApi {
    s: AppState,
}

/// A key as shown: never its secret or hash, only the prefix it starts with.
fn key(k: &ApiKeyRow) -> pb::ApiKey {
    let grant = k.grant.clone().unwrap_or_default();
    pb::ApiKey {
        id: format!("{ID_PREFIX}{}", k.id),
        name: k.name.clone(),
        scope: k.scope.as_str().to_owned(),
        prefix: k.prefix.clone(),
        target: k.target_name.clone(),
        environments: grant.environments,
        roles: grant.roles,
        reusable: grant.reusable,
        created_at: Some(timestamp(k.created_at)),
        expires_at: timestamp_opt(k.expires_at),
        expired: k.expires_at.is_some_and(|at| at <= now_ms()),
    }
}

#[tonic::async_trait]
impl Service for ApiKeysApi {
    async fn list(
        &self,
        _: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysReply>, Status> {
        let keys = self
            .s
            .store
            .list_api_keys()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListApiKeysReply {
            items: keys.iter().map(key).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let scope: Scope = r
            .scope
            .parse()
            .map_err(|e: cuttle_core::ValidationError| invalid("scope", e.0))?;
        let request = ApiKeyRequest {
            name: r.name,
            scope,
            expires_in: Some(r.expires_in).filter(|e| !e.trim().is_empty()),
            target: r.target,
            environments: r.environments,
            roles: r.roles,
            reusable: r.reusable,
        };
        let (row, secret) = create_key(&self.s, &caller, request)
            .await
            .map_err(status)?;
        tracing::debug!(key = %format!("{ID_PREFIX}{}", row.id), at = %format_rfc3339_ms(row.created_at), "API key made over gRPC");
        Ok(Response::new(pb::CreatedApiKey {
            key: Some(key(&row)),
            secret,
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyReply>, Status> {
        let caller = caller(&req)?;
        revoke_key(&self.s, &caller, &req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeApiKeyReply {}))
    }
}
