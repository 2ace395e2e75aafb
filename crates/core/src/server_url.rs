//! Which server URLs a client (the `cuttle` CLI, `cuttle-tentacle register`) may send an API
//! key to.

use std::net::IpAddr;

use crate::ValidationError;

/// Checks a server base URL before any request: `https://` always; `http://` only to this
/// host (a loopback address or `localhost`), or anywhere when `insecure` (the operator's
/// explicit choice for a network they trust). A key sent over plain HTTP can be read by anyone
/// on the path, and every key can run scripts.
pub fn check_server_url(url: &str, insecure: bool) -> Result<(), ValidationError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        ValidationError::new(format!(
            "server {url:?} must start with https:// (or http://)"
        ))
    })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(ValidationError::new(format!(
            "server {url:?} names no host"
        )));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if insecure || is_loopback(host) => Ok(()),
        "http" => Err(ValidationError::new(format!(
            "refusing to send an API key to {url} over plain HTTP: anyone on the path could \
             read it. Use https://, or pass --insecure if this network is trusted"
        ))),
        other => Err(ValidationError::new(format!(
            "server {url:?}: unknown scheme {other:?}; use https://"
        ))),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_host_unless_insecure() {
        for ok in [
            "https://cuttle.example.com",
            "https://10.0.0.5:8443/",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
            "http://127.1.2.3",
        ] {
            check_server_url(ok, false).unwrap();
        }
        for refused in [
            "http://cuttle.example.com",
            "http://10.0.0.5:8080",
            "http://[2001:db8::1]:8080",
            "http://user@cuttle.example.com",
            "HTTP://node1:8080",
        ] {
            let e = check_server_url(refused, false).unwrap_err().to_string();
            assert!(e.contains("--insecure"), "{refused}: {e}");
            check_server_url(refused, true).unwrap();
        }
        for bad in [
            "cuttle.example.com:8080",
            "ftp://x",
            "https://",
            "http:///x",
        ] {
            assert!(check_server_url(bad, true).is_err(), "{bad}");
        }
    }
}
