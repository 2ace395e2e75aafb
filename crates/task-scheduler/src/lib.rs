//! The scheduler role: cluster loops that no single worker can run for itself. Today: finding
//! lost nodes, failing (or re-queuing) the tasks they held, and putting those tasks' logs in
//! place.

use std::time::Duration;

use cuttle_storage::{SharedStore, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A node silent for longer than this is lost.
    pub offline_after: Duration,
    /// How often to look for lost nodes.
    pub check_interval: Duration,
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
        }
    }
}

/// Runs the lost-node loop until `shutdown`. Safe to run on every node at once: the store
/// hands each lost node to exactly one scheduler.
pub async fn serve(
    config: SchedulerConfig,
    store: Store,
    shared: SharedStore,
    on_requeue: impl Fn() + Send + 'static,
    shutdown: CancellationToken,
) {
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
                        on_requeue();
                    }
                    salvage_logs(&shared, node).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "look for lost nodes"),
        }
    }
}

/// Puts the logs of a lost node's stopped tasks in place, ending with why they stop there. A
/// failure is logged and left to the node's own clean-up when it starts again.
async fn salvage_logs(shared: &SharedStore, node: cuttle_storage::LostNode) {
    let mut tasks = node.failed;
    tasks.extend(node.requeued);
    if tasks.is_empty() {
        return;
    }
    let shared = shared.clone();
    let name = node.name;
    let note = format!("ERROR node {name} was lost; this task's log ends here");
    let res =
        tokio::task::spawn_blocking(move || shared.salvage_task_logs(&name, &tasks, false, &note))
            .await;
    match res {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "put a lost node's task logs in place"),
        Err(e) => tracing::warn!(error = %e, "put a lost node's task logs in place"),
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
