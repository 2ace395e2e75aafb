//! The package repository's metadata: one row per version, unique whatever the case and the
//! build metadata, replaced in one transaction, audited.

use cuttle_core::PackageFormat;
use cuttle_storage::{NewPackage, PackageRecord};

use crate::{event, Fixture};

fn pkg<'a>(id: &'a str, version: &'a str, key: &'a str, sha: &'a str) -> NewPackage<'a> {
    NewPackage {
        space: "Spaces-1",
        package_id: id,
        version,
        version_key: key,
        format: PackageFormat::TarGz,
        size: 5_000_000_000,
        sha256: sha,
        file: "Spaces-1/Acme.Web/Acme.Web.1.0.0_abc.tar.gz",
        uploaded_by: "ci (ApiKeys-2)",
    }
}

pub(crate) async fn package_versions_are_stored_once_replaced_whole_and_audited(fx: &Fixture) {
    let s = fx.migrated().await;
    let made = |p: &PackageRecord| {
        event(
            "package.upload",
            format!("{}.{}", p.package_id, p.version),
            serde_json::json!({"sha256": p.sha256}),
        )
    };
    let a = s
        .add_package(
            &pkg("Acme.Web", "1.0.0", "1.0.0", "aa"),
            false,
            Some(Box::new(made)),
        )
        .await
        .unwrap();
    assert_eq!(a.replaced, None);
    let a = a.added;
    assert_eq!(
        (
            a.package_id.as_str(),
            a.version.as_str(),
            a.format,
            a.size,
            a.sha256.as_str()
        ),
        (
            "Acme.Web",
            "1.0.0",
            PackageFormat::TarGz,
            5_000_000_000,
            "aa"
        ),
        "sizes over 4 GiB survive"
    );
    assert!(a.uploaded_at > 1_700_000_000_000);
    s.add_package(
        &pkg("Acme.Web", "1.1.0-beta.1", "1.1.0-beta.1", "bb"),
        false,
        None,
    )
    .await
    .unwrap();
    s.add_package(&pkg("Other", "1.0.0", "1.0.0", "cc"), false, None)
        .await
        .unwrap();
    // Another case of the id, another build of the version: the same version.
    let dup = s
        .add_package(
            &pkg("ACME.web", "1.0.0+build.7", "1.0.0", "dd"),
            false,
            Some(Box::new(made)),
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, cuttle_storage::Error::Conflict(_)), "{dup}");
    assert!(dup.to_string().contains("replace=true"), "{dup}");

    // Replaced: the old row comes back, the new one takes its place in one transaction.
    let r = s
        .add_package(
            &pkg("acme.WEB", "1.0.0+build.7", "1.0.0", "ee"),
            true,
            Some(Box::new(made)),
        )
        .await
        .unwrap();
    assert_eq!(r.replaced.as_ref().map(|p| p.sha256.as_str()), Some("aa"));
    let got = s
        .get_package("Spaces-1", "ACME.WEB", "1.0.0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.sha256.as_str(), got.version.as_str()),
        ("ee", "1.0.0+build.7")
    );
    assert_eq!(
        s.get_package("Spaces-2", "Acme.Web", "1.0.0")
            .await
            .unwrap(),
        None
    );

    let mut versions: Vec<String> = s
        .list_packages(Some("Spaces-1"), Some("ACME.web"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.version)
        .collect();
    versions.sort();
    assert_eq!(versions, ["1.0.0+build.7", "1.1.0-beta.1"]);
    assert_eq!(
        s.list_packages(Some("Spaces-1"), None).await.unwrap().len(),
        3
    );
    assert_eq!(
        s.list_packages(Some("Spaces-9"), None).await.unwrap().len(),
        0
    );
    assert_eq!(s.list_packages(None, None).await.unwrap().len(), 3);

    let deleted = |p: &PackageRecord| {
        event(
            "package.delete",
            format!("{}.{}", p.package_id, p.version),
            serde_json::json!({}),
        )
    };
    let gone = s
        .delete_package(
            "Spaces-1",
            "Acme.Web",
            "1.1.0-beta.1",
            Some(Box::new(deleted)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.sha256, "bb");
    assert_eq!(
        s.delete_package(
            "Spaces-1",
            "Acme.Web",
            "1.1.0-beta.1",
            Some(Box::new(deleted))
        )
        .await
        .unwrap(),
        None
    );
    let events = s.list_events(20).await.unwrap();
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(
        (count("package.upload"), count("package.delete")),
        (2, 1),
        "an event for each change made, none for those refused or not found"
    );

    fx.raw("UPDATE packages SET format = 'rar' WHERE sha256 = 'cc'");
    let e = s.list_packages(None, None).await.unwrap_err();
    assert!(e.to_string().contains("rar"), "{e}");
}
