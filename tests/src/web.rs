//! Web UI requests as a browser sends them, for tests over plain HTTP: no redirect followed,
//! the session cookie by hand, the answer's headers kept.

use crate::Node;

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// What a node answered: status, the headers a test looks at, and the body.
pub struct Answer {
    pub status: u16,
    pub location: String,
    pub set_cookie: String,
    pub csp: String,
    pub body: String,
}

/// Sends `method path` to `node` with the session cookie `cookie` and, for a POST, the
/// url-encoded `form`; redirects are answers, not followed.
pub fn send(
    node: &Node,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let agent = no_redirects();
    let url = node.url(path);
    let cookie = cookie.map(|c| format!("cuttle_session={c}"));
    let mut resp = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(c) = &cookie {
                r = r.header("Cookie", c);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        _ => {
            let mut r = agent
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded");
            if let Some(c) = &cookie {
                r = r.header("Cookie", c);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(form.unwrap_or(""))
        }
    }
    .unwrap();
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (location, set_cookie, csp) =
        (h("location"), h("set-cookie"), h("content-security-policy"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        location,
        set_cookie,
        csp,
        body,
    }
}

/// The session cookie's value in a `Set-Cookie` header.
pub fn session_of(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.strip_prefix("cuttle_session="))
        .unwrap_or_default()
        .to_owned()
}

/// The first form token on a page.
pub fn form_token(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    page[at..at + 32].to_owned()
}
