//! The scheduler role: cluster loops that no single worker can run for itself. Finding lost
//! nodes, failing (or re-queuing) the tasks they held and putting those tasks' logs in place;
//! and the periodic health check of every target.

use std::time::Duration;

use cuttle_core::{NewTask, TargetSelection, TaskKind};
use cuttle_storage::{SharedStore, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A node silent for longer than this is lost.
    pub offline_after: Duration,
    /// How often to look for lost nodes.
    pub check_interval: Duration,
    /// How often every target's health is checked; `None`: never.
    pub health_check_every: Option<Duration>,
    /// Retention and the audit-event archive; `None`: neither runs by itself.
    pub maintenance: Option<Maintenance>,
}

/// The periodic upkeep of what the cluster keeps.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// How often each runs (once per period across the cluster).
    pub every: Duration,
    /// Versions of each package the repository keeps (0: all).
    pub package_versions_to_keep: u32,
    /// Audit events older than this leave the database for the archive; `None`: they stay.
    pub archive_events_after: Option<Duration>,
}

impl Maintenance {
    fn jobs(&self) -> Vec<Periodic> {
        let keep = self.package_versions_to_keep;
        let mut jobs = vec![Periodic {
            job: "retention_period",
            every: self.every,
            task: std::sync::Arc::new(move |period| {
                system_task(
                    format!("Periodic retention (period {period})"),
                    TaskKind::Retention {
                        package_versions_to_keep: keep,
                    },
                )
            }),
            only_with_targets: false,
        }];
        if let Some(after) = self.archive_events_after {
            jobs.push(Periodic {
                job: "event_archive_period",
                every: self.every,
                task: std::sync::Arc::new(move |period| {
                    system_task(
                        format!("Periodic audit-event archive (period {period})"),
                        TaskKind::EventArchive {
                            older_than_secs: after.as_secs().max(60),
                        },
                    )
                }),
                only_with_targets: false,
            });
        }
        jobs
    }
}

/// A system task, under the tag that keeps it to one at a time.
fn system_task(description: String, kind: TaskKind) -> NewTask {
    NewTask {
        description,
        concurrency_tag: cuttle_core::system_tag(&kind).map(str::to_owned),
        kind,
    }
}

impl SchedulerConfig {
    /// Checks often enough that a loss is acted on within about a quarter of the timeout
    /// after it expires, at most every 15 s and at least every 250 ms.
    pub fn new(offline_after: Duration) -> Self {
        let check_interval =
            (offline_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        SchedulerConfig {
            offline_after,
            check_interval,
            health_check_every: None,
            maintenance: None,
        }
    }
}

/// Runs the lost-node loop until `shutdown`. Safe to run on every node at once: the store
/// hands each lost node to exactly one scheduler.
pub async fn serve(
    config: SchedulerConfig,
    store: Store,
    shared: SharedStore,
    wake_local: impl Fn() + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let wake_local = std::sync::Arc::new(wake_local);
    let mut jobs = Vec::new();
    if let Some(every) = config.health_check_every {
        jobs.push(Periodic {
            job: "health_check_period",
            every,
            task: std::sync::Arc::new(health_check),
            only_with_targets: true,
        });
    }
    if let Some(m) = &config.maintenance {
        jobs.extend(m.jobs());
    }
    for job in jobs {
        let (store, wake, stop) = (store.clone(), wake_local.clone(), shutdown.clone());
        tokio::spawn(periodic(job, store, move || wake(), stop));
    }
    let mut tick = tokio::time::interval(config.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.handle_lost_nodes(config.offline_after).await {
            Ok(lost) => {
                for node in lost {
                    tracing::warn!(
                        node = %node.name,
                        failed = node.failed.len(),
                        requeued = node.requeued.len(),
                        offline_after_secs = config.offline_after.as_secs(),
                        "node lost: no heartbeat within the offline timeout; its tasks were stopped"
                    );
                    if !node.requeued.is_empty() {
                        wake_local();
                    }
                    salvage_logs(&shared, node).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "look for lost nodes"),
        }
    }
}

/// A job the cluster runs once per period: what each period's winner enqueues.
#[derive(Clone)]
struct Periodic {
    /// The key its periods are claimed under.
    job: &'static str,
    every: Duration,
    /// What to enqueue for a period.
    task: std::sync::Arc<dyn Fn(i64) -> NewTask + Send + Sync>,
    /// Skip the period when there is nothing to work on (no targets for a health check).
    only_with_targets: bool,
}

/// Enqueues a job's task once per period, counted from the Unix epoch: every scheduler tries
/// at each period's start and the store lets exactly one succeed. A node that dies between
/// winning a period and enqueuing skips that period (each job catches up at the next: it works
/// from what is there then).
async fn periodic(job: Periodic, store: Store, wake_local: impl Fn(), shutdown: CancellationToken) {
    let period_ms = job.every.as_millis().max(1) as i64;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let period = now / period_ms;
        let wait = match store.claim_period(job.job, period).await {
            Ok(won) => {
                // A cluster without targets has nothing to check: no task, no noise.
                let worth_it = won
                    && (!job.only_with_targets
                        || match store.list_targets(None, Duration::ZERO).await {
                            Ok(t) => !t.is_empty(),
                            Err(_) => true, // let the task report the problem
                        });
                if worth_it {
                    let task = (job.task)(period);
                    match store.enqueue(&task, None).await {
                        Ok(t) => {
                            tracing::info!(task = %t.id, period, job = job.job, "periodic task queued");
                            wake_local();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, period, job = job.job, "queue a periodic task")
                        }
                    }
                }
                Duration::from_millis(((period + 1) * period_ms - now).max(1) as u64)
            }
            Err(e) => {
                tracing::warn!(error = %e, job = job.job, "periodic task: will try again");
                Duration::from_secs(5).min(job.every)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn health_check(period: i64) -> NewTask {
    let kind = TaskKind::HealthCheck {
        on: TargetSelection::default(),
    };
    NewTask {
        description: format!("Periodic health check (period {period})"),
        // One at a time: a slow check never overlaps the next.
        concurrency_tag: Some("system/health-check".into()),
        kind,
    }
}

/// Puts the logs of a lost node's stopped tasks in place, ending with why they stop there, and
/// removes the uploads and artifacts it was receiving (never to be finished). A failure is
/// logged and left to the node's own clean-up when it starts again.
async fn salvage_logs(shared: &SharedStore, node: cuttle_storage::LostNode) {
    let mut tasks = node.failed;
    tasks.extend(node.requeued);
    let shared = shared.clone();
    let name = node.name;
    let note = format!("ERROR node {name} was lost; this task's log ends here");
    let res = tokio::task::spawn_blocking(move || {
        if !tasks.is_empty() {
            shared.salvage_task_logs(&name, &tasks, false, &note)?;
        }
        let cleared = shared.clear_in_progress(&name)?;
        if cleared > 0 {
            tracing::info!(node = %name, cleared, "removed a lost node's unfinished uploads");
        }
        Ok::<_, cuttle_storage::Error>(())
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "clean up after a lost node"),
        Err(e) => tracing::warn!(error = %e, "clean up after a lost node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_interval_follows_the_timeout() {
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(60)).check_interval,
            Duration::from_secs(15)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(4)).check_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_millis(100)).check_interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(3600)).check_interval,
            Duration::from_secs(15)
        );
    }
}
