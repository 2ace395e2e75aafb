//! `/api/targets` (deployment targets and their tentacles) and `/api/cluster/identity` (what a
//! tentacle needs to trust and reach the cluster).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{ErrorCode, NewTarget, Role, Scope, TargetId, TargetPatch};
use cuttle_storage::{audit_as, Audit};
use serde_json::{json, Value};

use super::documents::{SPACE, SPACE_PREFIX};
use super::environments::ENVIRONMENT;
use super::projects::PROJECT;
use super::runbooks::RUNBOOK;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, JsonBody, Page, PathParams};
use crate::openapi::{schemas, Op};
use crate::scoped::{need_or_own_target, Api, OPERATOR, READER};
use crate::AppState;

pub(crate) fn routes() -> Api {
    Api::new()
        .post(
            "/api/targets",
            need_or_own_target(Scope::Operator),
            create,
            Op::new("createTarget", "Registers a deployment target")
                .body(|g| with_new_roles(g.request_definition::<NewTarget>()))
                .created("the target", schemas::target)
                .refuses(409, "the name or the thumbprint is taken")
                .link("get", "getTarget", &[("id", "$response.body#/id")])
                .link("patch", "patchTarget", &[("id", "$response.body#/id")])
                .link("delete", "deleteTarget", &[("id", "$response.body#/id")]),
        )
        .get(
            "/api/targets",
            READER,
            list,
            Op::new("listTargets", "The deployment targets").ok("every target", schemas::targets),
        )
        .get(
            "/api/targets/{id}",
            need_or_own_target(Scope::Reader),
            get_one,
            Op::new("getTarget", "One deployment target").ok("the target", schemas::target),
        )
        // A register-target key registers its target once; changing it is an operator's.
        .patch(
            "/api/targets/{id}",
            OPERATOR,
            patch,
            Op::new("patchTarget", "Changes what the body names of a target")
                .body(|g| with_new_roles(g.request_definition::<TargetPatch>()))
                .ok("the target as changed", schemas::target)
                .refuses(409, "the name or the thumbprint is taken"),
        )
        .delete(
            "/api/targets/{id}",
            OPERATOR,
            delete,
            Op::new("deleteTarget", "Removes a deployment target").no_content("removed"),
        )
}

/// A target body also takes `new_roles`: a role nothing uses yet is meant.
fn with_new_roles(mut schema: Value) -> Value {
    schema["properties"]["new_roles"] = json!({
        "type": "boolean",
        "description": "a role no step, target or key uses yet is meant, not misspelt",
    });
    schema
}

pub(crate) fn target_id(raw: &str) -> Result<TargetId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("no target {raw}")))
}

pub(crate) async fn fetch(
    s: &AppState,
    id: TargetId,
) -> Result<cuttle_core::TargetRecord, ApiError> {
    s.store
        .get_target(id, s.config.offline_after)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no target {id}")))
}

async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut body): JsonBody<Value>,
) -> ApiResult {
    let new_roles = take_new_roles(&mut body)?;
    let target: NewTarget = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let mut target = target.validate()?;
    caller.check_own_target(&target.name)?;
    let registering = caller.scope == Scope::RegisterTarget;
    let grant = caller.grant.clone().unwrap_or_default();
    if registering {
        // Only what the key was made to grant: never Production because the tentacle says so.
        grant
            .allows(&target.environments, &target.roles)
            .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;
    }
    let check = Placement {
        environments: true,
        roles: true,
        new_roles,
        may_list: !registering,
    };
    check_placement(&s, &mut target, &grant.roles, check).await?;
    let details = json!({
        "name": target.name, "comms": target.comms, "thumbprint": target.thumbprint,
        "environments": target.environments, "roles": target.roles,
    });
    let by = caller.clone();
    let audit: Audit<TargetId> = Box::new(move |id| by.event("target.create", id, details.clone()));
    let id = s.store.create_target(&target, Some(audit)).await?;
    tracing::info!(target = %id, name = %target.name, comms = target.comms.as_str(), by = %caller.name, "target registered");
    if registering && !grant.reusable {
        use_up(&s, &caller).await;
    }
    Ok((StatusCode::CREATED, Json(fetch(&s, id).await?)).into_response())
}

/// `new_roles: true` in a body: a role no step or target uses yet is meant, not a typo. Taken
/// out, so the rest parses as the target's fields.
fn take_new_roles(body: &mut Value) -> Result<bool, ApiError> {
    match body.as_object_mut().and_then(|m| m.remove("new_roles")) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(ApiError::bad_request("new_roles: true or false")),
    }
}

/// Where a target is placed must exist, so a typo is refused rather than leaving a target that
/// never receives a deployment: each environment is one of the space's (named as it is
/// defined, whatever the case it is given in), and each role is one a deployment or runbook
/// step, another target or the registering key's grant uses — or `new_roles` says a new role is
/// meant. `400` naming what is unknown and what exists.
async fn check_placement(
    s: &AppState,
    target: &mut NewTarget,
    granted_roles: &[String],
    check: Placement,
) -> Result<(), ApiError> {
    // Targets belong to the cluster: an environment or a step of any space counts.
    let spaces: Vec<String> = s
        .store
        .list_documents("", SPACE)
        .await?
        .into_iter()
        .map(|d| format!("{SPACE_PREFIX}{}", d.id))
        .collect();
    // A register-target key learns no names it was not given.
    let list = |names: &[String]| {
        if check.may_list {
            format!(" ({})", listed(names))
        } else {
            String::new()
        }
    };
    if check.environments && !target.environments.is_empty() {
        let mut defined: Vec<String> = Vec::new();
        for space in &spaces {
            let envs = s.store.list_documents(space, ENVIRONMENT).await?;
            defined.extend(envs.into_iter().map(|e| e.name));
        }
        for env in &mut target.environments {
            match defined.iter().find(|d| d.eq_ignore_ascii_case(env)) {
                Some(d) => *env = d.clone(),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "environments: there is no environment named {env:?}{}; make it \
                         first (POST /api/spaces/default/environments)",
                        list(&defined)
                    )))
                }
            }
        }
    }
    if !check.roles || target.roles.is_empty() || check.new_roles {
        return Ok(());
    }
    let mut known: Vec<String> = granted_roles.to_vec();
    for t in s.store.list_targets(None, s.config.offline_after).await? {
        known.extend(t.roles);
    }
    for space in &spaces {
        for kind in [PROJECT, RUNBOOK] {
            for d in s.store.list_documents(space, kind).await? {
                let processes = [&d.body["process"], &d.body["published"]["process"]];
                for step in processes
                    .iter()
                    .filter_map(|p| p["steps"].as_array())
                    .flatten()
                {
                    let roles = step["target_roles"].as_array().into_iter().flatten();
                    known.extend(roles.filter_map(|r| r.as_str().map(str::to_owned)));
                }
            }
        }
    }
    known.sort();
    known.dedup();
    if let Some(unknown) = target.roles.iter().find(|r| !known.contains(r)) {
        return Err(ApiError::bad_request(format!(
            "roles: no step, target or key uses the role {unknown:?}{}; if a new role is meant, \
             say so: \"new_roles\": true (cuttle-tentacle register --new-role)",
            list(&known)
        )));
    }
    Ok(())
}

/// What [`check_placement`] checks, and whether it may name what exists.
struct Placement {
    environments: bool,
    roles: bool,
    new_roles: bool,
    may_list: bool,
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none yet".to_owned()
    } else {
        names.join(", ")
    }
}

/// A register-target key made for one registration is revoked by it (audited); every node
/// refuses it within a second.
async fn use_up(s: &AppState, caller: &Caller) {
    let Some(id) = caller
        .principal
        .strip_prefix("ApiKeys-")
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return;
    };
    let audit = audit_as(caller.event(
        "api_key.revoke",
        &caller.principal,
        json!({"reason": "used: a register-target key registers its target once"}),
    ));
    match s.store.revoke_api_key(id, Some(audit)).await {
        Ok(_) => s.keys.forget_all(),
        Err(e) => {
            tracing::warn!(key = %caller.principal, error = %e, "revoke a used register-target key")
        }
    }
}

async fn list(State(s): State<AppState>) -> ApiResult {
    let targets = s.store.list_targets(None, s.config.offline_after).await?;
    Ok(Json(Page::all(targets)).into_response())
}

async fn get_one(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    let id = target_id(&raw)?;
    let target = fetch(&s, id).await?;
    caller.check_own_target(&target.name)?;
    Ok(Json(target).into_response())
}

async fn patch(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    Ok(Json(patch_target(&s, &caller, &raw, body).await?).into_response())
}

/// Changes what `body` names of a target (its PATCH body), placed where deployments reach it,
/// audited: the target as it is now. REST's and gRPC's one way.
pub(crate) async fn patch_target(
    s: &AppState,
    caller: &Caller,
    raw: &str,
    mut body: Value,
) -> Result<cuttle_core::TargetRecord, ApiError> {
    let new_roles = take_new_roles(&mut body)?;
    let patch: TargetPatch = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let id = target_id(raw)?;
    let current = fetch(s, id).await?;
    caller.check_own_target(&current.name)?;
    let check = Placement {
        environments: patch.environments.is_some(),
        roles: patch.roles.is_some(),
        new_roles,
        may_list: true,
    };
    let mut target = patch.apply(&current)?;
    // A register-target key cannot move its registration to another name either.
    caller.check_own_target(&target.name)?;
    check_placement(s, &mut target, &[], check).await?;
    let details =
        json!({"name": target.name, "comms": target.comms, "thumbprint": target.thumbprint});
    let audit = audit_as(caller.event("target.update", id, details));
    if !s.store.update_target(id, &target, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no target {id}")));
    }
    fetch(s, id).await
}

async fn delete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(raw): PathParams<String>,
) -> ApiResult {
    delete_target(&s, &caller, &raw).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes a target (audited). REST's and gRPC's one way.
pub(crate) async fn delete_target(
    s: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<(), ApiError> {
    let id = target_id(raw)?;
    let audit = audit_as(caller.event("target.delete", id, json!({})));
    if !s.store.delete_target(id, Some(audit)).await? {
        return Err(ApiError::not_found(format!("no target {id}")));
    }
    tracing::info!(target = %id, by = %caller.name, "target deleted");
    Ok(())
}

/// The cluster certificate's thumbprint — public: every gateway handshake presents it — and,
/// to a caller with a working API key (a register-target key included), the gateway address of
/// every online gateway node. Never a database error: an unauthenticated caller learns nothing
/// of the cluster's insides.
pub(crate) async fn cluster_identity(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    request: axum::extract::Request,
) -> ApiResult {
    let thumbprint = s.config.cluster_thumbprint.clone();
    let key = crate::auth::presented_key(&headers).filter(|k| !k.is_empty());
    let client = crate::auth::client_address(&s, &headers, request.extensions());
    let Some(key) = key else {
        return Ok(Json(json!({"thumbprint": thumbprint})).into_response());
    };
    crate::auth::authenticate(&s, key, client)
        .await
        .map_err(|e| match e.code() {
            ErrorCode::Unauthorized | ErrorCode::TooManyRequests => e,
            _ => unavailable(),
        })?;
    let nodes = s
        .store
        .list_nodes(s.config.offline_after)
        .await
        .map_err(|_| unavailable())?;
    let gateways: Vec<String> = nodes
        .into_iter()
        .filter(|n| n.online && n.roles.iter().any(|r| r == Role::Gateway.as_str()))
        .filter_map(|n| n.gateway_address)
        .collect();
    Ok(Json(json!({
        "thumbprint": thumbprint,
        "gateways": gateways,
    }))
    .into_response())
}

fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the cluster cannot answer now; try again",
    )
}
