//! The web UI, served by the api role of every node at `/`: server-rendered HTML (askama
//! templates, checked when the crate compiles, escaping whatever they show), a stylesheet and a
//! little script served by the node itself, a Content-Security-Policy without `unsafe-inline`.
//! Stateless: a sign-in is a sealed cookie every node accepts (`session.rs`), so a load
//! balancer may send each request anywhere. Pages read with JavaScript off.

mod session;

use askama::Template;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::auth::{authenticate, client_address};
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/nodes") }))
        .route("/ui", get(|| async { Redirect::to("/ui/nodes") }))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/nodes", get(nodes))
        .route("/ui/assets/cuttle.css", get(css))
        .route("/ui/assets/cuttle.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
}

/// What every UI answer carries: nothing runs but the node's own script, nothing frames the
/// page, nothing is sniffed.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The person signed in, as the pages show them.
pub(crate) struct Who {
    pub(crate) name: String,
    pub(crate) scope: String,
    /// The token this session's forms carry.
    pub(crate) csrf: String,
}

/// The signed-in session of a request, or the answer that sends the browser to sign in.
async fn signed_in(
    s: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<Who, Response> {
    let to_sign_in = || Redirect::to("/ui/sign-in").into_response();
    let cookie = session::cookie(headers).ok_or_else(to_sign_in)?;
    let key = session::open(s, cookie).ok_or_else(to_sign_in)?;
    // The key is checked as on every API call: a revoked or expired one ends the session.
    let found = authenticate(s, &key, client_address(s, headers, extensions))
        .await
        .map_err(|_| to_sign_in())?;
    // Every page reads the cluster: a key that may not (register-target) is refused.
    if !found.scope.grants(cuttle_core::Scope::Reader) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "An API key of scope {} may not read the cluster; sign in with a reader's key or above.",
                found.scope
            ),
        )
            .into_response());
    }
    Ok(Who {
        name: found.name,
        scope: found.scope.to_string(),
        csrf: session::csrf_token(s, cookie),
    })
}

fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Does this request reach the node over HTTPS (its own, or a balancer's that says so)?
fn over_https(s: &AppState, headers: &HeaderMap) -> bool {
    s.config.https.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    who: Option<Who>,
    problem: Option<String>,
}

async fn sign_in_page() -> Response {
    html(
        StatusCode::OK,
        &SignInPage {
            who: None,
            problem: None,
        },
    )
}

#[derive(Deserialize)]
struct SignIn {
    api_key: String,
}

async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let problem = |status: StatusCode, why: &str| {
        html(
            status,
            &SignInPage {
                who: None,
                problem: Some(why.to_owned()),
            },
        )
    };
    if !session::same_origin(&parts.headers) {
        return problem(StatusCode::FORBIDDEN, "Sign in from this site's own page.");
    }
    let request = Request::from_parts(parts.clone(), body);
    let Ok(Form(form)) = Form::<SignIn>::from_request(request, &s).await else {
        return problem(StatusCode::BAD_REQUEST, "Enter an API key.");
    };
    let key = form.api_key.trim();
    let client = client_address(&s, &parts.headers, &parts.extensions);
    if let Err(e) = authenticate(&s, key, client).await {
        tracing::info!(client = ?client, "web sign-in refused");
        let why = match e.code() {
            cuttle_core::ErrorCode::TooManyRequests => {
                "Too many failed sign-ins from here; wait a minute."
            }
            _ => "That API key is unknown, revoked or expired.",
        };
        return problem(StatusCode::UNAUTHORIZED, why);
    }
    let Some(sealed) = session::seal(&s, key) else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The session could not be made.",
        );
    };
    let cookie = session::set_cookie(Some(&sealed), over_https(&s, &parts.headers));
    let mut resp = Redirect::to("/ui/nodes").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct FormToken {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<FormToken>,
) -> Response {
    let ok = session::cookie(&headers)
        .is_some_and(|c| session::same_origin(&headers) && session::csrf_ok(&s, c, &f.csrf));
    if !ok {
        return (
            StatusCode::FORBIDDEN,
            "This form did not come from your session.",
        )
            .into_response();
    }
    let mut resp = Redirect::to("/ui/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(None, over_https(&s, &headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// One row of the nodes page.
struct NodeRow {
    name: String,
    roles: String,
    version: String,
    task_cap: u32,
    running: u32,
    online: bool,
    draining: bool,
    storage_ok: bool,
    last_seen: String,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    who: Option<Who>,
    nodes: Vec<NodeRow>,
    online: usize,
    total_cap: u32,
    running: u32,
}

async fn nodes(State(s): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let who = match signed_in(&s, &parts.headers, &parts.extensions).await {
        Ok(w) => w,
        Err(to_sign_in) => return to_sign_in,
    };
    let found = match s.store.list_nodes(s.config.offline_after).await {
        Ok(n) => n,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let rows: Vec<NodeRow> = found
        .iter()
        .map(|n| NodeRow {
            name: n.name.clone(),
            roles: n.roles.join(", "),
            version: n.version.clone(),
            task_cap: n.task_cap,
            running: n.running_tasks,
            online: n.online,
            draining: n.draining,
            storage_ok: n.storage_ok,
            last_seen: cuttle_core::format_rfc3339_ms(n.last_seen),
        })
        .collect();
    let page = NodesPage {
        online: found.iter().filter(|n| n.online).count(),
        total_cap: found.iter().filter(|n| n.online).map(|n| n.task_cap).sum(),
        running: found.iter().map(|n| n.running_tasks).sum(),
        nodes: rows,
        who: Some(who),
    };
    html(StatusCode::OK, &page)
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/cuttle.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/cuttle.js"),
    )
        .into_response()
}
