//! The cluster certificate: what every node presents to tentacles and to each other, and its
//! rotation without losing a tentacle.
//!
//! Three settings, each `{certificate, key (sealed with the master key), thumbprint}` or empty:
//! `cluster_identity` (presented), `cluster_identity_next` (staged) and
//! `cluster_identity_previous` (retired, still accepted). A node presents the current one and
//! accepts all three from peers; it re-reads the staged and retired ones every few seconds, and
//! tells each tentacle at every health check to trust exactly the set it accepts.
//!
//! Rotation: `stage` makes the next certificate; once every target's tentacle reports trusting
//! it (its next health check), `activate` makes it current; nodes present it from their next
//! restart (one at a time); once every node has restarted, `finish` stops accepting the old one.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cuttle_storage::{MasterKey, Store};
use cuttle_tls::{ClusterTls, Identity, Thumbprint};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub(crate) const SETTING_CURRENT: &str = "cluster_identity";
pub(crate) const SETTING_NEXT: &str = "cluster_identity_next";
pub(crate) const SETTING_PREVIOUS: &str = "cluster_identity_previous";
/// How long a generated cluster certificate is valid.
const CLUSTER_CERT_DAYS: u32 = 10 * 365;
/// How often a node re-reads which cluster certificates it accepts.
const REFRESH: Duration = Duration::from_secs(2);

/// A cluster certificate and its private key, sealed with the master key: a setting's value.
fn sealed(identity: &Identity, key: &MasterKey) -> Result<Value> {
    let (cert, private_key) = identity.to_pem();
    Ok(json!({
        "certificate": cert,
        "key": key.encrypt(private_key.as_bytes())?,
        "thumbprint": identity.thumbprint().to_string(),
    }))
}

fn unseal(stored: &str, key: &MasterKey, which: &str) -> Result<Identity> {
    let v: Value =
        serde_json::from_str(stored).with_context(|| format!("{which} setting is not JSON"))?;
    let (Some(cert), Some(sealed)) = (v["certificate"].as_str(), v["key"].as_str()) else {
        bail!("{which} setting lacks its certificate or key");
    };
    let private_key = String::from_utf8(key.decrypt(sealed)?)
        .with_context(|| format!("{which}: the key is not text"))?;
    Identity::from_pem(cert, &private_key).with_context(|| which.to_owned())
}

/// The thumbprint of a staged or retired certificate; `None` when the setting is empty.
fn thumbprint_of(stored: Option<&str>, which: &str) -> Result<Option<Thumbprint>> {
    match stored.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => {
            let v: Value =
                serde_json::from_str(s).with_context(|| format!("{which} setting is not JSON"))?;
            let t = v["thumbprint"]
                .as_str()
                .with_context(|| format!("{which} setting lacks its thumbprint"))?;
            Ok(Some(
                t.parse().with_context(|| format!("{which} thumbprint"))?,
            ))
        }
    }
}

/// The certificate this node presents, created by the first node (two nodes starting at once
/// agree on one: certificate and key are one setting), and every one the cluster accepts.
pub(crate) async fn load(store: &Store, key: &MasterKey) -> Result<ClusterTls> {
    let stored = match store.get_setting(SETTING_CURRENT).await? {
        Some(v) => v,
        None => {
            let fresh = Identity::generate("cuttle-cluster", CLUSTER_CERT_DAYS)?;
            let value = sealed(&fresh, key)?;
            store
                .init_setting(SETTING_CURRENT, &value.to_string())
                .await?
        }
    };
    let identity = unseal(&stored, key, "cluster certificate")?;
    let cluster = ClusterTls::single(identity);
    refresh(store, &cluster).await?;
    Ok(cluster)
}

/// Re-reads the staged and retired certificates into what `cluster` accepts.
async fn refresh(store: &Store, cluster: &ClusterTls) -> Result<()> {
    let next = store.get_setting(SETTING_NEXT).await?;
    let previous = store.get_setting(SETTING_PREVIOUS).await?;
    let mut accepted = vec![cluster.identity.thumbprint()];
    accepted.extend(thumbprint_of(
        next.as_deref(),
        "staged cluster certificate",
    )?);
    accepted.extend(thumbprint_of(
        previous.as_deref(),
        "retired cluster certificate",
    )?);
    accepted.sort();
    accepted.dedup();
    if accepted != cluster.accepted.thumbprints() {
        let shown: Vec<String> = accepted.iter().map(ToString::to_string).collect();
        tracing::info!(accepted = ?shown, "cluster certificates accepted");
        cluster.accepted.replace(accepted);
    }
    Ok(())
}

/// Keeps `cluster`'s accepted certificates current until `stop`.
pub(crate) async fn keep_refreshed(store: Store, cluster: ClusterTls, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
        if let Err(e) = refresh(&store, &cluster).await {
            tracing::warn!(error = %format!("{e:#}"), "re-read the accepted cluster certificates");
        }
    }
}

/// The three settings as stored (empty when absent).
struct Settings {
    current: String,
    next: String,
    previous: String,
}

async fn read_settings(store: &Store) -> Result<Settings> {
    let Some(current) = store.get_setting(SETTING_CURRENT).await? else {
        bail!("this database has no cluster certificate yet: start a node first");
    };
    Ok(Settings {
        current,
        next: store.init_setting(SETTING_NEXT, "").await?,
        previous: store.init_setting(SETTING_PREVIOUS, "").await?,
    })
}

fn field(stored: &str, name: &str) -> Option<Value> {
    serde_json::from_str::<Value>(stored)
        .ok()
        .map(|v| v[name].clone())
}

fn current_thumbprint(s: &Settings, key: &MasterKey) -> Result<Thumbprint> {
    Ok(unseal(&s.current, key, "cluster certificate")?.thumbprint())
}

fn change(key: &str, old: &str, new: &str) -> (String, String, String) {
    (key.to_owned(), old.to_owned(), new.to_owned())
}

/// `status`: the certificates, and what still stands in the way of the next step.
pub(crate) async fn status(
    store: &Store,
    key: &MasterKey,
    offline_after: Duration,
) -> Result<String> {
    let s = read_settings(store).await?;
    let mut out = format!("current:  {}\n", current_thumbprint(&s, key)?);
    let next = thumbprint_of(Some(&s.next), "staged cluster certificate")?;
    let previous = thumbprint_of(Some(&s.previous), "retired cluster certificate")?;
    match next {
        Some(t) => {
            out.push_str(&format!("staged:   {t}\n"));
            let waiting = targets_not_trusting(store, t, offline_after).await?;
            if waiting.is_empty() {
                out.push_str("every target trusts the staged certificate: `activate` may run\n");
            } else {
                out.push_str(&format!(
                    "targets not trusting it yet (they learn at their next health check): {}\n",
                    waiting.join(", ")
                ));
            }
        }
        None => out.push_str("staged:   none\n"),
    }
    match previous {
        Some(t) => {
            out.push_str(&format!("retired:  {t} (still accepted)\n"));
            let stale = nodes_not_restarted(store, &s, offline_after).await?;
            if stale.is_empty() {
                out.push_str(
                    "every online node presents the current certificate: `finish` may run\n",
                );
            } else {
                out.push_str(&format!(
                    "nodes to restart before `finish`: {}\n",
                    stale.join(", ")
                ));
            }
        }
        None => out.push_str("retired:  none\n"),
    }
    Ok(out)
}

/// `stage`: makes the next certificate; every node accepts it within seconds, and every
/// tentacle is told to trust it at its next health check.
pub(crate) async fn stage(store: &Store, key: &MasterKey) -> Result<Thumbprint> {
    let s = read_settings(store).await?;
    if !s.previous.is_empty() {
        bail!("the last rotation is not finished (a retired certificate is still accepted): run `cluster-certificate finish` first");
    }
    if let Some(t) = thumbprint_of(Some(&s.next), "staged cluster certificate")? {
        bail!("certificate {t} is already staged: `activate` it, or see `status`");
    }
    let fresh = Identity::generate("cuttle-cluster", CLUSTER_CERT_DAYS)?;
    let value = sealed(&fresh, key)?.to_string();
    if !store
        .replace_settings(&[change(SETTING_NEXT, "", &value)])
        .await?
    {
        bail!("another certificate was staged meanwhile: see `status`");
    }
    Ok(fresh.thumbprint())
}

async fn targets_not_trusting(
    store: &Store,
    next: Thumbprint,
    offline_after: Duration,
) -> Result<Vec<String>> {
    let next = next.to_string();
    Ok(store
        .list_targets(None, offline_after)
        .await?
        .into_iter()
        .filter(|t| !t.cluster_trust.contains(&next))
        .map(|t| t.name)
        .collect())
}

/// `activate`: the staged certificate becomes the one nodes present (from their next start);
/// the current one is retired but still accepted. Refused while a target does not trust the
/// staged one yet, unless `force` (that target is cut off until it is registered again).
pub(crate) async fn activate(
    store: &Store,
    key: &MasterKey,
    offline_after: Duration,
    force: bool,
) -> Result<Thumbprint> {
    let s = read_settings(store).await?;
    let Some(next) = thumbprint_of(Some(&s.next), "staged cluster certificate")? else {
        bail!("no certificate is staged: run `cluster-certificate stage` first");
    };
    if !s.previous.is_empty() {
        bail!("the last rotation is not finished: run `cluster-certificate finish` first");
    }
    unseal(&s.next, key, "staged cluster certificate")?;
    let waiting = targets_not_trusting(store, next, offline_after).await?;
    if !waiting.is_empty() && !force {
        bail!(
            "{} target(s) do not trust the staged certificate yet: {} (each learns it at its \
             next health check; run one, or give --force to cut them off)",
            waiting.len(),
            waiting.join(", ")
        );
    }
    let mut activated: Value = serde_json::from_str(&s.next).context("staged certificate")?;
    activated["activated_at_ms"] = json!(now_ms());
    let changes = [
        change(SETTING_CURRENT, &s.current, &activated.to_string()),
        change(SETTING_PREVIOUS, "", &s.current),
        change(SETTING_NEXT, &s.next, ""),
    ];
    if !store.replace_settings(&changes).await? {
        bail!("the certificates changed meanwhile: nothing was changed; see `status`");
    }
    Ok(next)
}

async fn nodes_not_restarted(
    store: &Store,
    s: &Settings,
    offline_after: Duration,
) -> Result<Vec<String>> {
    let activated = field(&s.current, "activated_at_ms")
        .and_then(|v| v.as_i64())
        .unwrap_or(i64::MAX);
    Ok(store
        .list_nodes(offline_after)
        .await?
        .into_iter()
        .filter(|n| n.online && n.started_at < activated)
        .map(|n| n.name)
        .collect())
}

/// `finish`: the retired certificate is no longer accepted (within seconds, on every node) and
/// tentacles stop trusting it at their next health check. Refused while an online node started
/// before the activation (it still presents the retired certificate), unless `force`.
pub(crate) async fn finish(
    store: &Store,
    offline_after: Duration,
    force: bool,
) -> Result<Thumbprint> {
    let s = read_settings(store).await?;
    let Some(previous) = thumbprint_of(Some(&s.previous), "retired cluster certificate")? else {
        bail!("no rotation to finish: no retired certificate is accepted");
    };
    let stale = nodes_not_restarted(store, &s, offline_after).await?;
    if !stale.is_empty() && !force {
        bail!(
            "node(s) {} started before the activation and still present the retired \
             certificate: restart them first (or give --force)",
            stale.join(", ")
        );
    }
    if !store
        .replace_settings(&[change(SETTING_PREVIOUS, &s.previous, "")])
        .await?
    {
        bail!("the certificates changed meanwhile: nothing was changed; see `status`");
    }
    Ok(previous)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Settings holding a sealed cluster key, for the master-key rotation.
pub(crate) const SEALED_SETTINGS: [&str; 3] = [SETTING_CURRENT, SETTING_NEXT, SETTING_PREVIOUS];
