//! Library → Packages: the built-in repository's packages in the default space, each version
//! with its size, hash and who uploaded it, newest version first within a package.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cuttle_core::{format_rfc3339_ms, SemVer};

use super::projects::SPACE;
use super::{html, Who};
use crate::AppState;

/// Versions the page lists at most (the API and `cuttle package list` page through all).
const SHOWN: usize = 500;

struct VersionRow {
    package_id: String,
    version: String,
    format: String,
    size: String,
    sha256: String,
    uploaded_by: String,
    uploaded_at: String,
}

#[derive(Template)]
#[template(path = "packages.html")]
struct PackagesPage {
    who: Option<Who>,
    packages: usize,
    versions: Vec<VersionRow>,
    more: usize,
}

/// A size as people read it.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub(super) async fn list(State(s): State<AppState>, who: Who) -> Response {
    let mut found = match s.store.list_packages(Some(SPACE), None).await {
        Ok(p) => p,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    // By id, then newest version first (a stored version always parses).
    found.sort_by(|a, b| {
        a.package_id
            .to_lowercase()
            .cmp(&b.package_id.to_lowercase())
            .then_with(
                || match (a.version.parse::<SemVer>(), b.version.parse::<SemVer>()) {
                    (Ok(x), Ok(y)) => y.precedence(&x),
                    _ => b.version.cmp(&a.version),
                },
            )
    });
    let mut ids: Vec<String> = found.iter().map(|p| p.package_id.to_lowercase()).collect();
    ids.dedup();
    let versions = found
        .iter()
        .take(SHOWN)
        .map(|p| VersionRow {
            package_id: p.package_id.clone(),
            version: p.version.clone(),
            format: p.format.extension().to_owned(),
            size: size(p.size),
            sha256: p.sha256.chars().take(12).collect(),
            uploaded_by: p.uploaded_by.clone(),
            uploaded_at: format_rfc3339_ms(p.uploaded_at),
        })
        .collect();
    let page = PackagesPage {
        who: Some(who),
        packages: ids.len(),
        more: found.len().saturating_sub(SHOWN),
        versions,
    };
    html(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(100 << 20), "100.0 MiB");
        assert_eq!(super::size(3 << 30), "3.0 GiB");
    }
}
