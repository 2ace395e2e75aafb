//! `HealthCheck`: asks each selected target's tentacle (every target when none is named)
//! whether it answers and how much disk it has, records its health, and tells it which cluster
//! certificates to trust (recording what it trusts).

use std::time::Duration;

use cuttle_core::{Comms, TargetHealth, TargetRecord, TargetSelection};
use cuttle_proto::v1::{CapabilitiesRequest, RelayCapabilities};
use cuttle_storage::Execution;
use futures_util::future::join_all;

use super::Executor;
use crate::ctx::{TaskCtx, TaskResult};
use crate::tentacles::{candidates, listening, relayed};

pub(crate) struct HealthCheck {
    pub(crate) on: TargetSelection,
}

impl Executor for HealthCheck {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        health_check(key, &self.on, ctx).await
    }
}

/// Below this much free disk a target is Unhealthy: deployments there are about to fail.
const MIN_FREE_DISK: u64 = 1 << 30;
/// How long a target may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks every selected target (all, when none are selected) for its capabilities and records
/// its health: Healthy, Unhealthy (answers but low on disk) or Unavailable (does not answer).
/// Succeeds when every target is healthy.
async fn health_check(key: Execution, on: &TargetSelection, ctx: &TaskCtx) -> TaskResult {
    let all = candidates(on, ctx).await?;
    let chosen: Vec<&TargetRecord> = all
        .iter()
        .filter(|t| on.is_empty() || on.matches(t))
        .collect();
    ctx.logs
        .line(key, format!("INFO  checking {} target(s)", chosen.len()))
        .await;
    let checks = chosen.iter().map(|t| async move {
        let health = match tokio::time::timeout(CHECK_TIMEOUT, check(t, ctx)).await {
            Ok(h) => h,
            Err(_) => (
                TargetHealth::Unavailable,
                "no answer within 30 s".to_owned(),
                Vec::new(),
            ),
        };
        (*t, health)
    });
    let mut sick = Vec::new();
    let results = ctx
        .until_stopped(async { Ok(join_all(checks).await) })
        .await?;
    for (t, (health, reason, trusted)) in results {
        if let Err(e) = ctx
            .targets
            .store
            .set_target_health(t.id, health, &reason)
            .await
        {
            return Err(format!("record the health of {}: {e}", t.name).into());
        }
        // What the tentacle now trusts: a new cluster certificate is activated only once every
        // target trusts it. (A tentacle too old to say leaves the record alone.)
        if !trusted.is_empty() && trusted != t.cluster_trust {
            if let Err(e) = ctx.targets.store.record_cluster_trust(t.id, &trusted).await {
                return Err(format!("record what {} trusts: {e}", t.name).into());
            }
        }
        let level = if health == TargetHealth::Healthy {
            "INFO "
        } else {
            "WARN "
        };
        ctx.logs
            .line(
                key,
                format!("{level} [{}] {}: {reason}", t.name, health.as_str()),
            )
            .await;
        if health != TargetHealth::Healthy {
            sick.push(format!("{} ({}: {reason})", t.name, health.as_str()));
        }
    }
    if sick.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} target(s) not healthy: {}",
            sick.len(),
            chosen.len(),
            sick.join("; ")
        )
        .into())
    }
}

/// Asks one target for its capabilities, telling it which cluster certificates to trust;
/// returns its health, why, and the cluster certificates it trusts.
async fn check(t: &TargetRecord, ctx: &TaskCtx) -> (TargetHealth, String, Vec<String>) {
    let ask = CapabilitiesRequest {
        trust_clusters: ctx
            .targets
            .cluster
            .accepted
            .thumbprints()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let answer = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let req = RelayCapabilities {
                    target_id: t.id.0,
                    request: Some(ask.clone()),
                };
                async move { client.capabilities(req).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .capabilities(ask)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    };
    match answer {
        Err(e) => (TargetHealth::Unavailable, e, Vec::new()),
        Ok(c) if c.free_disk_bytes < MIN_FREE_DISK => (
            TargetHealth::Unhealthy,
            format!(
                "only {} MiB of free disk (at least {} MiB needed)",
                c.free_disk_bytes >> 20,
                MIN_FREE_DISK >> 20
            ),
            c.trusted_clusters,
        ),
        Ok(c) => (
            TargetHealth::Healthy,
            format!(
                "tentacle {} on {}, {} GiB free",
                c.version,
                c.os,
                c.free_disk_bytes >> 30
            ),
            c.trusted_clusters,
        ),
    }
}
