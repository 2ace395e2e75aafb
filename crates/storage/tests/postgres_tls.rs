//! PostgreSQL over TLS: `sslmode` and `sslrootcert` against a real server started with
//! `ssl=on`, its certificate signed by a CA made here.

use cuttle_e2e::{temp_dir, TestCertificates, TestPostgres};
use cuttle_storage::{Store, StoreOptions};

async fn connect(url: &str) -> Result<Store, String> {
    let store = Store::connect(url, &StoreOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // A second connection too: the pool's, not only the start-up check's.
    store.migrate().await.map_err(|e| e.to_string())?;
    Ok(store)
}

/// Whether every connection of Cuttle's to the test database is encrypted, by the server's
/// own account (`pg_stat_ssl`); `None` when it has none.
fn all_encrypted(pg: &TestPostgres) -> Option<bool> {
    let out = pg
        .psql(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND a.application_name = 'cuttle-server'",
        )
        .unwrap();
    match out.as_str() {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_decides_encryption_and_what_is_verified() {
    // The certificate names a host the tests do not connect to: verify-full must refuse it,
    // verify-ca (chain only) accept it.
    let certs = TestCertificates::new(&["db.example.com"]).unwrap();
    let pg = TestPostgres::start_with_tls(&certs.cert_pem, &certs.key_pem).unwrap();
    let dir = temp_dir("pg-tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, TestCertificates::new(&["x"]).unwrap().ca_pem).unwrap();
    let url = |q: &str| format!("{}?{q}", pg.url());

    let store = connect(&url("sslmode=require")).await.unwrap();
    assert_eq!(all_encrypted(&pg), Some(true), "require encrypts");
    drop(store);

    let ca_arg = format!("sslrootcert={}", ca.display());
    let verified = connect(&url(&format!("sslmode=verify-ca&{ca_arg}"))).await;
    assert!(
        verified.is_ok(),
        "verify-ca checks the chain only: {:?}",
        verified.err()
    );

    let other_arg = format!("sslrootcert={}", other.display());
    for (query, why) in [
        (
            format!("sslmode=verify-full&{ca_arg}"),
            "verify-full must refuse a certificate for another host",
        ),
        (
            format!("sslmode=verify-ca&{other_arg}"),
            "a certificate from another CA must be refused",
        ),
        // require with a root certificate checks the chain, as libpq does.
        (
            format!("sslmode=require&{other_arg}"),
            "require with sslrootcert checks the chain",
        ),
    ] {
        let e = connect(&url(&query)).await.err().expect(why);
        assert!(e.contains("certificate"), "{query}: {e}");
    }

    let e = connect(&url("sslmode=allow")).await.err().unwrap();
    assert!(e.contains("sslmode=allow"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_a_certificate_naming_the_host() {
    let certs = TestCertificates::new(&["127.0.0.1"]).unwrap();
    let pg = TestPostgres::start_with_tls(&certs.cert_pem, &certs.key_pem).unwrap();
    let dir = temp_dir("pg-tls");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let store = connect(&url).await.unwrap();
    assert_eq!(all_encrypted(&pg), Some(true));
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back() {
    let pg = TestPostgres::start().unwrap();
    let e = connect(&format!("{}?sslmode=require", pg.url()))
        .await
        .err()
        .expect("require must not fall back to plain text");
    assert!(e.to_lowercase().contains("tls") || e.contains("ssl"), "{e}");
    let store = connect(&format!("{}?sslmode=prefer", pg.url()))
        .await
        .unwrap();
    assert_eq!(
        all_encrypted(&pg),
        Some(false),
        "prefer: plain when not offered"
    );
    drop(store);
}
