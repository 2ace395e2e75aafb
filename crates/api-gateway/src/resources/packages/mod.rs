//! The built-in package repository: `POST /api/spaces/{space}/packages/raw` (and the guide's
//! `/api/{space}/packages/raw`) streams an upload into the shared store; `GET …/packages` lists,
//! `GET …/packages/{package_id}/{version}` shows one version, `…/raw` downloads it (Range,
//! ETag), `DELETE` removes it. Versions sort by SemVer precedence, newest first.

mod multipart;
mod upload;

pub(crate) use upload::{drain, drain_refused, store_upload, Incoming};

pub(crate) use upload::Uploads;

use std::cmp::Ordering;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{
    format_rfc3339_ms, package_version_key, parse_package_version, validate_package_id, SemVer,
};
use cuttle_storage::{Audit, PackageRecord};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{parse_limit, ApiResult, PathParams, QueryMap};
use crate::openapi::{file_download, schemas, Op};
use crate::resources::documents::{resolve_space, space_id};
use crate::resources::files::{serve, store_failed, Served};
use crate::scoped::{Api, DEPLOYER, OPERATOR, READER};
use crate::AppState;

/// The upload routes: outside the 1 MiB body limit and the whole-body deadline every other
/// route has (an upload has its own limit, and an idle deadline between pieces instead).
/// Build servers push packages with a deployer key; removing one is an operator's call.
pub(crate) fn upload_routes() -> Api {
    Api::new()
        .post(
            "/api/spaces/{space}/packages/raw",
            DEPLOYER,
            upload::upload,
            upload_op("uploadPackage"),
        )
        .post(
            "/api/{space}/packages/raw",
            DEPLOYER,
            upload::upload,
            upload_op("uploadPackageAtGuidePath"),
        )
}

/// What a package is served as, by its format (`PackageFormat::content_type`).
const PACKAGE_MEDIA_TYPES: &[&str] = &["application/zip", "application/gzip", "application/x-tar"];

/// A package version's path, from what an upload answered.
const PACKAGE_LINK: &[(&str, &str)] = &[
    ("space", "$response.body#/space_id"),
    ("package_id", "$response.body#/package_id"),
    ("version", "$response.body#/version"),
];

fn upload_op(id: &'static str) -> Op {
    let text = json!({"type": "string"});
    Op::new(
        id,
        "Uploads a package version (streamed, checked by SHA-256)",
    )
    .query(
        "package_id",
        text.clone(),
        "with a raw body: the package id",
    )
    .query("version", text.clone(), "with a raw body: the version")
    .query(
        "format",
        json!({"enum": ["zip", "tar.gz", "tgz", "tar", "nupkg"]}),
        "with a raw body: its format",
    )
    .query(
        "replace",
        json!({"type": "boolean"}),
        "overwrite a version nothing names yet (scope operator)",
    )
    .header(
        "X-Content-SHA256",
        text,
        "the package's SHA-256 (hex), checked",
    )
    .package_body()
    .created("the package version", schemas::package)
    .link("get", "getPackage", PACKAGE_LINK)
    .link("download", "downloadPackage", PACKAGE_LINK)
    .link("delete", "deletePackage", PACKAGE_LINK)
    .refuses(
        409,
        "the repository has this version (or, with `replace`, something names it)",
    )
    .refuses(
        429,
        "four uploads of this key are under way, or ten unknown API keys came from this client \
         within a minute: wait `Retry-After` seconds",
    )
    .refuses(
        503,
        "the node takes as many uploads as it can, or cannot reach the database or the shared \
         store: try again (`Retry-After`)",
    )
}

pub(crate) fn routes() -> Api {
    Api::new()
        .get(
            "/api/spaces/{space}/packages",
            READER,
            list,
            Op::new(
                "listPackages",
                "The repository's package versions, newest first",
            )
            .query("package_id", json!({"type": "string"}), "only this package")
            .query(
                "filter",
                json!({"type": "string"}),
                "only package ids containing this",
            )
            .query(
                "latest",
                json!({"type": "boolean"}),
                "only each package's newest version",
            )
            .query("limit", schemas::limit(), "at most this many (default 100)")
            .query(
                "skip",
                json!({"type": "integer", "minimum": 0}),
                "the `next` of the previous page",
            )
            .ok("a page of package versions", schemas::packages),
        )
        .get(
            "/api/spaces/{space}/packages/{package_id}/{version}",
            READER,
            get_one,
            Op::new("getPackage", "One package version")
                .ok("the package version", schemas::package),
        )
        .delete(
            "/api/spaces/{space}/packages/{package_id}/{version}",
            OPERATOR,
            delete,
            Op::new("deletePackage", "Removes a package version")
                .ok("the removed package version", schemas::package)
                .refuses(409, "a release, process or runbook names it"),
        )
        .get(
            "/api/spaces/{space}/packages/{package_id}/{version}/raw",
            READER,
            download,
            file_download(
                "downloadPackage",
                "A package version's file, streamed",
                PACKAGE_MEDIA_TYPES,
            ),
        )
}

/// A package version as the API shows it.
pub(crate) fn shown(p: &PackageRecord) -> Value {
    json!({
        "id": format!("{}.{}", p.package_id, p.version),
        "space_id": p.space,
        "package_id": p.package_id,
        "version": p.version,
        "format": p.format.extension(),
        "size": p.size,
        "sha256": p.sha256,
        "uploaded_by": p.uploaded_by,
        "uploaded_at": format_rfc3339_ms(p.uploaded_at),
        "links": {
            "raw": format!("/api/spaces/{}/packages/{}/{}/raw", p.space, p.package_id, p.version),
        },
    })
}

/// Newest first by SemVer precedence (a version that does not parse, written by hand into the
/// table, sorts last rather than failing the list).
pub(crate) fn newest_first(a: &PackageRecord, b: &PackageRecord) -> Ordering {
    match (a.version.parse::<SemVer>(), b.version.parse::<SemVer>()) {
        (Ok(x), Ok(y)) => y.precedence(&x),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => b.version.cmp(&a.version),
    }
}

/// The package version a path names: 400 for an id or version that cannot exist.
fn version_in_path(package_id: &str, version: &str) -> Result<String, ApiError> {
    validate_package_id(package_id)?;
    Ok(package_version_key(&parse_package_version(version)?))
}

/// `GET /api/spaces/{space}/packages[?package_id=&filter=&latest=&limit=&skip=]`: by package id
/// (case-insensitive), then newest version first. `package_id` lists one package's versions;
/// `filter` keeps ids containing it; `latest=true` keeps each id's newest version.
async fn list(
    State(s): State<AppState>,
    PathParams(space): PathParams<String>,
    query: QueryMap,
) -> ApiResult {
    let q = query.only(&["package_id", "filter", "latest", "limit", "skip"])?;
    let limit = parse_limit(q.get("limit"))? as usize;
    let skip = match q.get("skip") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("skip must be a whole number, got {v:?}"))
        })?,
    };
    let wanted = Wanted {
        package_id: q.get("package_id").cloned(),
        filter: q.get("filter").cloned(),
        latest: flag(q.get("latest"), "latest")?,
        limit,
        skip,
    };
    let (found, total, next) = list_packages(&s, &space, &wanted).await?;
    let items: Vec<Value> = found.iter().map(shown).collect();
    let mut page = json!({"items": items, "total": total});
    if let Some(n) = next {
        page["next"] = json!(n.to_string());
    }
    Ok(Json(page).into_response())
}

/// Which package versions a list shows.
pub(crate) struct Wanted {
    /// One package's versions.
    pub(crate) package_id: Option<String>,
    /// Ids containing this, whatever the case.
    pub(crate) filter: Option<String>,
    /// Each id's newest version only.
    pub(crate) latest: bool,
    pub(crate) limit: usize,
    pub(crate) skip: usize,
}

/// A page of a space's package versions (by id, then newest first), how many there are in all,
/// and where the next page starts while more follow.
pub(crate) async fn list_packages(
    s: &AppState,
    space: &str,
    w: &Wanted,
) -> Result<(Vec<PackageRecord>, usize, Option<usize>), ApiError> {
    let space = resolve_space(s, space).await?;
    if let Some(id) = &w.package_id {
        validate_package_id(id)?;
    }
    let mut found = s
        .store
        .list_packages(Some(&space_id(&space)), w.package_id.as_deref())
        .await?;
    if let Some(f) = &w.filter {
        let f = f.to_lowercase();
        found.retain(|p| p.package_id.to_lowercase().contains(&f));
    }
    found.sort_by(|a, b| {
        a.package_id
            .to_lowercase()
            .cmp(&b.package_id.to_lowercase())
            .then_with(|| newest_first(a, b))
    });
    if w.latest {
        found.dedup_by(|later, first| later.package_id.eq_ignore_ascii_case(&first.package_id));
    }
    let total = found.len();
    let page: Vec<PackageRecord> = found.into_iter().skip(w.skip).take(w.limit).collect();
    let next = (w.skip + page.len() < total).then_some(w.skip + page.len());
    Ok((page, total, next))
}

/// `true`/`false` (absent: false); anything else is a 400 naming the parameter.
pub(super) fn flag(raw: Option<&String>, name: &str) -> Result<bool, ApiError> {
    match raw.map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, got {other:?}"
        ))),
    }
}

/// The stored version a path names, or 404.
pub(crate) async fn find(
    s: &AppState,
    space: &str,
    package_id: &str,
    version: &str,
) -> Result<PackageRecord, ApiError> {
    let key = version_in_path(package_id, version)?;
    let space = resolve_space(s, space).await?;
    s.store
        .get_package(&space_id(&space), package_id, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no package {package_id} version {version}")))
}

async fn get_one(
    State(s): State<AppState>,
    PathParams((space, package_id, version)): PathParams<(String, String, String)>,
) -> ApiResult {
    let p = find(&s, &space, &package_id, &version).await?;
    Ok(Json(shown(&p)).into_response())
}

/// Deletes a version, row and file (`cuttle_storage::remove_package`).
async fn delete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams((space, package_id, version)): PathParams<(String, String, String)>,
) -> ApiResult {
    let gone = remove(&s, &caller, (&space, &package_id, &version)).await?;
    Ok(Json(shown(&gone)).into_response())
}

/// Removes a package version, its record and its file, with its audit event: what was removed.
pub(crate) async fn remove(
    s: &AppState,
    caller: &Caller,
    (space, package_id, version): (&str, &str, &str),
) -> Result<PackageRecord, ApiError> {
    let p = find(s, space, package_id, version).await?;
    let by = caller.clone();
    let audit: Audit<PackageRecord> = Box::new(move |p| {
        by.event(
            "package.delete",
            format!("{}.{}", p.package_id, p.version),
            json!({"sha256": p.sha256, "size": p.size}),
        )
    });
    let key = version_in_path(package_id, version)?;
    let deleted = cuttle_storage::remove_package(
        &s.store,
        &s.shared,
        &s.config.node_name,
        &p,
        &key,
        Some(audit),
    )
    .await
    .map_err(|e| match e {
        cuttle_storage::Error::Io { .. } => store_failed(e),
        other => other.into(),
    })?;
    deleted.ok_or_else(|| ApiError::not_found(format!("no package {package_id} version {version}")))
}

/// `GET …/packages/{package_id}/{version}/raw`: the file, its SHA-256 as the `ETag`.
async fn download(
    State(s): State<AppState>,
    PathParams((space, package_id, version)): PathParams<(String, String, String)>,
    headers: axum::http::HeaderMap,
) -> ApiResult {
    let p = find(&s, &space, &package_id, &version).await?;
    let name = format!("{}.{}.{}", p.package_id, p.version, p.format.extension());
    let served = Served {
        path: &s.shared.package_path(&p.file),
        size: p.size,
        etag: format!("\"{}\"", p.sha256),
        content_type: p.format.content_type(),
        file_name: &name,
        meter: Some(cuttle_telemetry::metrics().package_bytes_out()),
    };
    serve(served, &headers).await
}
