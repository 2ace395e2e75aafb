//! The web UI, served by the api role of every node at `/`: server-rendered HTML (askama
//! templates, checked when the crate compiles, escaping whatever they show), a stylesheet and a
//! little script served by the node itself, a Content-Security-Policy without `unsafe-inline`.
//! Stateless: a sign-in is a sealed cookie every node accepts (`session.rs`), so a load
//! balancer may send each request anywhere. Pages read with JavaScript off.

mod infrastructure;
pub(crate) mod log_sections;
mod overview;
mod packages;
mod projects;
mod session;
pub(crate) mod streams;
mod tasks;

use askama::Template;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::auth::{authenticate, authenticate_hash, client_address};
use crate::AppState;
use cuttle_storage::SessionOf;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/nodes") }))
        .route("/ui", get(|| async { Redirect::to("/ui/nodes") }))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/nodes", get(nodes))
        .route("/ui/nodes/{name}", post(node_action))
        .route("/ui/dashboard", get(overview::dashboard))
        .route("/ui/events", get(overview::events))
        .route("/ui/projects", get(projects::list))
        .route("/ui/projects/{id}", get(projects::page))
        .route("/ui/projects/{id}/releases", post(projects::create))
        .route("/ui/projects/{id}/deploy", post(projects::deploy))
        .route("/ui/environments", get(infrastructure::environments))
        .route("/ui/lifecycles", get(infrastructure::lifecycles))
        .route("/ui/targets", get(infrastructure::targets))
        .route("/ui/packages", get(packages::list))
        .route("/ui/tasks", get(tasks::list))
        .route("/ui/tasks/{id}", get(tasks::page))
        .route("/ui/tasks/{id}/log/events", get(tasks::events))
        .route("/ui/tasks/{id}/cancel", post(tasks::cancel))
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
    /// May change nodes (operator and admin keys): the pages offer their forms.
    pub(crate) may_operate: bool,
    /// May make releases, deploy and cancel (deployer keys and above).
    pub(crate) may_deploy: bool,
    /// The node serving the page (behind a balancer, the first thing to know when one
    /// misbehaves).
    pub(crate) node: String,
    /// Who the audit trail names for what they do.
    pub(crate) caller: crate::auth::Caller,
}

impl Who {
    /// Why a page refuses what this person's scope does not allow.
    pub(crate) fn may_not(&self, what: &str) -> String {
        format!(
            "Signed in as {} ({}), you may not {what}.",
            self.name, self.scope
        )
    }
}

impl axum::extract::FromRequestParts<AppState> for Who {
    type Rejection = Response;

    /// A page's signed-in person; the browser is sent to sign in otherwise.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Who, Response> {
        signed_in(s, &parts.headers, &parts.extensions).await
    }
}

/// A state-changing form of a signed-in person: it must come from this site and carry the
/// session's token (`csrf`); its other fields are `T`.
pub(crate) struct SignedForm<T>(pub(crate) Who, pub(crate) T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for SignedForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let who = signed_in(s, &parts.headers, &parts.extensions).await?;
        let forged = || {
            (
                StatusCode::FORBIDDEN,
                "This form did not come from your session.",
            )
                .into_response()
        };
        let cookie = session::cookie(&parts.headers)
            .ok_or_else(forged)?
            .to_owned();
        if !session::same_origin(&parts.headers) {
            return Err(forged());
        }
        let not_ours = |why: String| {
            (
                StatusCode::BAD_REQUEST,
                format!("This form is not one of these pages': {why}"),
            )
                .into_response()
        };
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts, body), s)
            .await
            .map_err(|e| not_ours(e.body_text()))?;
        let token: FormToken =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| not_ours(e.to_string()))?;
        if !session::csrf_ok(s, &cookie, &token.csrf) {
            return Err(forged());
        }
        let fields = serde_urlencoded::from_bytes(&bytes).map_err(|e| not_ours(e.to_string()))?;
        Ok(SignedForm(who, fields))
    }
}

/// Who a session is, as the checks found them: (name, principal, scope, target).
struct Principal {
    name: String,
    principal: String,
    scope: cuttle_core::Scope,
    target: Option<String>,
}

/// Who a session is, checked as every request checks it: the key must still work, the user
/// must still exist with the password the session was made with.
async fn principal_of(s: &AppState, of: SessionOf) -> Result<Principal, Response> {
    let to_sign_in = || Redirect::to("/ui/sign-in").into_response();
    Ok(match of {
        SessionOf::Key(hash) => {
            let k = authenticate_hash(s, &hash)
                .await
                .map_err(|_| to_sign_in())?;
            Principal {
                principal: format!("ApiKeys-{}", k.id),
                name: k.name,
                scope: k.scope,
                target: k.target_name,
            }
        }
        SessionOf::User { id, version } => match s.store.get_user(id).await {
            Ok(Some(u)) if u.version == version => Principal {
                principal: format!("{}{}", cuttle_storage::USER_PREFIX, u.id),
                name: u.name,
                scope: u.scope,
                target: None,
            },
            Ok(_) => return Err(to_sign_in()),
            Err(e) => return Err(crate::error::ApiError::from(e).into_response()),
        },
    })
}

/// Whether the session a cookie value names still opens pages (signed out, revoked, expired or
/// changed: no). For what runs long after its request was checked: live-log streams.
pub(crate) async fn still_signed_in(s: &AppState, cookie: &str) -> bool {
    match session::open(s, cookie).await {
        Ok(Some(of)) => principal_of(s, of).await.is_ok(),
        _ => false,
    }
}

/// The signed-in session of a request, or the answer that sends the browser to sign in.
async fn signed_in(
    s: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<Who, Response> {
    let to_sign_in = || Redirect::to("/ui/sign-in").into_response();
    let cookie = session::cookie(headers).ok_or_else(to_sign_in)?;
    let client = client_address(s, headers, extensions);
    let of = session::open(s, cookie)
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(to_sign_in)?;
    let found = principal_of(s, of).await?;
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
    let address = client.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    Ok(Who {
        scope: found.scope.to_string(),
        csrf: session::csrf_token(s, cookie),
        may_operate: found.scope.grants(cuttle_core::Scope::Operator),
        may_deploy: found.scope.grants(cuttle_core::Scope::Deployer),
        node: s.config.node_name.clone(),
        caller: crate::auth::Caller {
            name: found.name.clone(),
            address,
            principal: found.principal,
            scope: found.scope,
            target: found.target,
            // The web UI registers no target.
            grant: None,
        },
        name: found.name,
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
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Who a sign-in is for the audit event it makes (its session is not made yet).
fn signing_in(
    s: &AppState,
    name: &str,
    principal: String,
    scope: cuttle_core::Scope,
    client: Option<std::net::IpAddr>,
) -> crate::auth::Caller {
    let _ = s;
    crate::auth::Caller {
        name: name.to_owned(),
        address: client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        principal,
        scope,
        target: None,
        grant: None,
    }
}

/// Checks a user's name and password; who they are, or why not. The attempt counts against the
/// client's, the name's and the node's limits before the password is checked (and is given
/// back when it matches); the check runs on the password pool, which says when it is full. An
/// unknown name costs as much to check as a known one.
async fn user_session(
    s: &AppState,
    client: Option<std::net::IpAddr>,
    username: &str,
    password: String,
) -> Result<(SessionOf, crate::auth::Caller), (StatusCode, &'static str)> {
    let now = std::time::Instant::now();
    let Ok(attempt) = s.keys.throttle.password_attempt(client, username, now) else {
        tracing::info!(client = ?client, "web sign-in refused: too many attempts");
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins; wait a minute.",
        ));
    };
    let user = s.store.find_user(username).await.map_err(|e| {
        tracing::error!(error = %e, "web sign-in: read user");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "The cluster's database cannot be read now; try again.",
        )
    })?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let Ok(matches) = s.passwords.verify(password, stored).await else {
        // Not checked at all: it does not count as a failure.
        s.keys.throttle.succeeded(attempt);
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins at once; try again in a moment.",
        ));
    };
    match user.filter(|_| matches) {
        Some(u) => {
            s.keys.throttle.succeeded(attempt);
            let principal = format!("{}{}", cuttle_storage::USER_PREFIX, u.id);
            let by = signing_in(s, &u.name, principal, u.scope, client);
            Ok((
                SessionOf::User {
                    id: u.id,
                    version: u.version,
                },
                by,
            ))
        }
        None => {
            tracing::info!(client = ?client, "web sign-in refused: wrong name or password");
            Err((
                StatusCode::UNAUTHORIZED,
                "That name and password do not match.",
            ))
        }
    }
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
        return problem(
            StatusCode::BAD_REQUEST,
            "Enter a name and password, or an API key.",
        );
    };
    let client = client_address(&s, &parts.headers, &parts.extensions);
    let (of, by) = if !form.username.trim().is_empty() {
        match user_session(&s, client, form.username.trim(), form.password).await {
            Ok(found) => found,
            Err((status, why)) => return problem(status, why),
        }
    } else {
        let key = form.api_key.trim();
        if key.is_empty() {
            return problem(
                StatusCode::BAD_REQUEST,
                "Enter a name and password, or an API key.",
            );
        }
        match authenticate(&s, key, client).await {
            Ok(k) => (
                SessionOf::Key(s.data_keys.get().hasher.hash(key)),
                signing_in(&s, &k.name, format!("ApiKeys-{}", k.id), k.scope, client),
            ),
            Err(e) => {
                tracing::info!(client = ?client, "web sign-in refused");
                let why = match e.code() {
                    cuttle_core::ErrorCode::TooManyRequests => {
                        "Too many failed sign-ins from here; wait a minute."
                    }
                    _ => "That API key is unknown, revoked or expired.",
                };
                return problem(StatusCode::UNAUTHORIZED, why);
            }
        }
    };
    let id = match session::start(&s, of, &by).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e.message(), "start a web session");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The session could not be made; try again.",
            );
        }
    };
    let cookie = session::set_cookie(Some(&id), over_https(&s, &parts.headers));
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

/// A form with nothing but its token.
#[derive(Deserialize)]
pub(crate) struct NoFields {}

async fn sign_out(
    State(s): State<AppState>,
    headers: HeaderMap,
    SignedForm(who, NoFields {}): SignedForm<NoFields>,
) -> Response {
    // Ended where it is kept: the cookie no longer opens anything, on any node.
    if let Some(cookie) = session::cookie(&headers) {
        session::end(&s, cookie, &who.caller).await;
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

/// The task-cap calculator's inputs and answer (the HA guide's formula and baselines).
struct Calculator {
    projects: u32,
    minutes: u32,
    window: u32,
    nodes: u32,
    plan: Option<cuttle_core::CapacityPlan>,
    baseline: &'static str,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    who: Option<Who>,
    nodes: Vec<NodeRow>,
    online: usize,
    total_cap: u32,
    running: u32,
    queued: String,
    oldest_queued: String,
    message: Option<String>,
    calc: Calculator,
    may_operate: bool,
    csrf: String,
    /// What this node says about peers sending forwarding headers it ignores.
    untrusted_forwarders: Vec<String>,
}

fn number(q: &std::collections::HashMap<String, String>, k: &str, default: u32) -> u32 {
    q.get(k)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=100_000).contains(n))
        .unwrap_or(default)
}

async fn nodes(
    State(s): State<AppState>,
    who: Who,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let found = match s.store.list_nodes(s.config.offline_after).await {
        Ok(n) => n,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    // The queue: how many wait (up to a thousand counted), and for how long the oldest has.
    let queued = s
        .store
        .list_tasks(Some(cuttle_core::TaskState::Queued), None, None, 1000)
        .await
        .unwrap_or_default();
    let now = crate::auth::now_ms();
    let oldest_queued = queued.iter().map(|t| t.queued_at).min().map_or_else(
        || "none waiting".to_owned(),
        |at| format!("{} s", ((now - at).max(0) / 1000)),
    );
    let online = found.iter().filter(|n| n.online).count();
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
    let calc_nodes = number(&q, "nodes", (online as u32).max(1));
    let (projects, minutes, window) = (
        number(&q, "projects", 100),
        number(&q, "minutes", 30),
        number(&q, "window", 240),
    );
    let plan = cuttle_core::plan_capacity(projects, minutes, window, calc_nodes);
    let page = NodesPage {
        online,
        total_cap: found.iter().filter(|n| n.online).map(|n| n.task_cap).sum(),
        running: found.iter().map(|n| n.running_tasks).sum(),
        queued: if queued.len() == 1000 {
            "1000 or more".to_owned()
        } else {
            queued.len().to_string()
        },
        oldest_queued,
        message: sealed_message(&s, q.get("message").cloned(), q.get("seal").cloned()),
        calc: Calculator {
            baseline: plan.map_or("", |p| cuttle_core::guide_baseline(p.per_node_cap)),
            projects,
            minutes,
            window,
            nodes: calc_nodes,
            plan,
        },
        nodes: rows,
        untrusted_forwarders: s
            .forwarders
            .recent()
            .into_iter()
            .map(crate::forwarders::advice)
            .collect(),
        may_operate: who.may_operate,
        csrf: who.csrf.clone(),
        who: Some(who),
    };
    html(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct NodeForm {
    action: String,
    #[serde(default)]
    task_cap: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// A message as a query-string value.
pub(crate) fn encode(message: &str) -> String {
    message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A message for the page a form sends the browser back to, as query parameters: the text and
/// its seal (HMAC under the cluster's API-key secret, so any node shows it). A page shows a
/// message only with its seal: nobody can make a link that puts words of theirs in the UI.
pub(crate) fn message_query(s: &AppState, message: &str) -> String {
    format!(
        "message={}&seal={}",
        encode(message),
        message_seal(s, message)
    )
}

fn message_seal(s: &AppState, message: &str) -> String {
    s.data_keys
        .get()
        .hasher
        .hash(&format!("ui-message {message}"))[..32]
        .to_owned()
}

/// The message a page was sent back with, if its seal is ours.
pub(crate) fn sealed_message(
    s: &AppState,
    message: Option<String>,
    seal: Option<String>,
) -> Option<String> {
    let (message, seal) = (message?, seal?);
    let want = message_seal(s, &message);
    let same = want.len() == seal.len()
        && want
            .bytes()
            .zip(seal.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some(message)
}

/// Back to the nodes page, saying what happened.
fn back(s: &AppState, message: &str) -> Response {
    Redirect::to(&format!("/ui/nodes?{}", message_query(s, message))).into_response()
}

/// `POST /ui/nodes/{name}`: change a node's task cap, drain or undrain it, or delete it.
async fn node_action(
    State(s): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    SignedForm(who, f): SignedForm<NodeForm>,
) -> Response {
    if !who.may_operate {
        return back(&s, &who.may_not("change nodes"));
    }
    let patch = |task_cap, draining| cuttle_core::NodePatch { task_cap, draining };
    let done = match f.action.as_str() {
        "cap" => match f.task_cap.trim().parse::<u32>() {
            Ok(cap) => crate::resources::nodes::change_node(&s, &who.caller, &name, &patch(Some(cap), None))
                .await
                .map(|n| format!("{} now runs at most {} task(s) at once.", n.name, n.task_cap)),
            Err(_) => Ok(format!("A task cap is a whole number, not {:?}.", f.task_cap)),
        },
        "drain" => crate::resources::nodes::change_node(&s, &who.caller, &name, &patch(None, Some(true)))
            .await
            .map(|n| format!("{} is draining: it finishes its tasks and takes no new ones.", n.name)),
        "undrain" => crate::resources::nodes::change_node(&s, &who.caller, &name, &patch(None, Some(false)))
            .await
            .map(|n| format!("{} takes tasks again.", n.name)),
        "delete" if f.confirm.is_none() => Ok(
            "Tick the box to confirm: a node that is still running adds itself again at its next heartbeat.".to_owned(),
        ),
        "delete" => crate::resources::nodes::remove_node(&s, &who.caller, &name)
            .await
            .map(|()| format!("{name} was deleted (a live node adds itself again at its next heartbeat).")),
        other => Ok(format!("Unknown action {other:?}.")),
    };
    match done {
        Ok(m) => back(&s, &m),
        Err(e) => back(&s, e.message()),
    }
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

#[cfg(test)]
mod tests {
    /// A colour of the stylesheet's `:root`, as (r, g, b).
    fn colour(css: &str, name: &str) -> (u8, u8, u8) {
        let at = css.find(&format!("--{name}: #")).expect(name) + name.len() + 5;
        let hex = &css[at..at + 6];
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect(hex);
        (byte(0), byte(2), byte(4))
    }

    /// WCAG 2 relative luminance and contrast ratio.
    fn contrast(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
        let lum = |(r, g, b): (u8, u8, u8)| {
            let c = |v: u8| {
                let v = f64::from(v) / 255.0;
                if v <= 0.039_28 {
                    v / 12.92
                } else {
                    ((v + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * c(r) + 0.7152 * c(g) + 0.0722 * c(b)
        };
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn every_text_colour_meets_wcag_aa_on_every_background() {
        let css = include_str!("../../assets/cuttle.css");
        let white = colour(css, "bg");
        // The log's background, and the white text of buttons on the accent colour.
        let log = (0xf4, 0xf6, 0xf8);
        assert!(
            css.contains("background: #f4f6f8"),
            "the log background changed"
        );
        for text in ["fg", "muted", "accent", "ok", "bad", "warn"] {
            for (bg, on) in [("page", white), ("log", log)] {
                let ratio = contrast(colour(css, text), on);
                assert!(ratio >= 4.5, "--{text} on the {bg}: {ratio:.2}:1");
            }
        }
        for bg in ["accent", "bad"] {
            let ratio = contrast((255, 255, 255), colour(css, bg));
            assert!(ratio >= 4.5, "white on --{bg}: {ratio:.2}:1");
        }
        assert!((contrast((0, 0, 0), (255, 255, 255)) - 21.0).abs() < 1e-9);
    }
}
