//! One live process per node name. Each `cuttle-server run` picks a random instance id and
//! holds its node's name with it (the row's `instance`, written at registration and at every
//! heartbeat). A second process started with a name a live process holds is refused, naming
//! that process; a process that crashed is taken over once its heartbeat has stopped; a process
//! stopping cleanly lets go of the name so its next start is immediate.

use std::time::Duration;

use anyhow::{bail, Result};
use cuttle_storage::{Error, NodeHolder, NodeRegistration, NodeState, Store};

/// A new instance id: 128 random bits, hex.
pub(crate) fn new_instance() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("random instance id: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What the row says about whoever holds the name, for a process that wants it.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// Nobody (no row, a clean stop, or a node from before instance ids): take it.
    Free,
    /// Its heartbeat stopped longer ago than the offline timeout: it is lost; take it over.
    Lost(String),
    /// Its heartbeat is recent: alive, or crashed a moment ago. Watch it.
    Recent(String),
}

fn judge(h: Option<&NodeHolder>, me: &str, offline_after: Duration) -> Holder {
    match h {
        None => Holder::Free,
        Some(h) => match &h.instance {
            None => Holder::Free,
            Some(i) if i == me => Holder::Free,
            Some(i) if h.now_ms - h.last_seen_ms > offline_after.as_millis() as i64 => {
                Holder::Lost(i.clone())
            }
            Some(i) => Holder::Recent(i.clone()),
        },
    }
}

/// How often the name's row is read while watching a recent holder.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Registers this node, holding its name. While another process holds the name and its last
/// heartbeat is recent, watches that heartbeat for two heartbeat intervals and a second: if it
/// moves, that process is alive and this one is refused (`NodeNameHeld`, naming it); if not, it
/// is gone (crashed, killed) and this process takes the name over.
pub(crate) async fn register(
    store: &Store,
    reg: &mut NodeRegistration,
    heartbeat: Duration,
    offline_after: Duration,
) -> Result<NodeState> {
    let window = heartbeat * 2 + Duration::from_secs(1);
    for _ in 0..4 {
        let first = store.node_holder(&reg.name).await?;
        match judge(first.as_ref(), &reg.instance, offline_after) {
            Holder::Free => reg.replaces = None,
            Holder::Lost(i) => reg.replaces = Some(i),
            Holder::Recent(i) => {
                let first = first.expect("a recent holder has a row");
                tracing::warn!(
                    node = %reg.name,
                    other = %first.http_address,
                    seen_ms_ago = first.now_ms - first.last_seen_ms,
                    "another process held this node's name a moment ago; watching its \
                     heartbeat for up to {window:?} to see whether it is still alive"
                );
                let started = tokio::time::Instant::now();
                let mut changed_hands = false;
                while started.elapsed() < window {
                    tokio::time::sleep(WATCH_EVERY).await;
                    let now = store.node_holder(&reg.name).await?;
                    match now {
                        Some(n) if n.instance.as_deref() == Some(i.as_str()) => {
                            if n.last_seen_ms > first.last_seen_ms {
                                bail!(Error::NodeNameHeld(format!(
                                    "another cuttle-server process is running as node {:?} \
                                     (serving {}; its heartbeat moved while this one watched): \
                                     give this process its own CUTTLE_NODE_NAME, or stop the \
                                     other first",
                                    reg.name, n.http_address
                                )));
                            }
                        }
                        _ => {
                            changed_hands = true;
                            break;
                        }
                    }
                }
                if changed_hands {
                    continue;
                }
                tracing::warn!(node = %reg.name, "the other process's heartbeat stopped: it is gone; taking the name over");
                reg.replaces = Some(i);
            }
        }
        match store.register_node(reg).await {
            Ok(state) => return Ok(state),
            // Another process registered between the look and the write: look again.
            Err(Error::NodeNameHeld(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!(Error::NodeNameHeld(format!(
        "processes keep registering as node {:?}: give each its own CUTTLE_NODE_NAME",
        reg.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(instance: Option<&str>, seen_ms_ago: i64) -> NodeHolder {
        NodeHolder {
            instance: instance.map(str::to_owned),
            last_seen_ms: 1_000_000 - seen_ms_ago,
            now_ms: 1_000_000,
            http_address: "10.0.0.1:8080".into(),
        }
    }

    #[test]
    fn a_name_is_free_lost_or_watched() {
        let off = Duration::from_secs(60);
        assert_eq!(judge(None, "me", off), Holder::Free);
        assert_eq!(judge(Some(&holder(None, 10)), "me", off), Holder::Free);
        assert_eq!(
            judge(Some(&holder(Some("me"), 10)), "me", off),
            Holder::Free
        );
        assert_eq!(
            judge(Some(&holder(Some("other"), 60_001)), "me", off),
            Holder::Lost("other".into())
        );
        assert_eq!(
            judge(Some(&holder(Some("other"), 59_000)), "me", off),
            Holder::Recent("other".into())
        );
    }

    #[test]
    fn instance_ids_are_random_hex() {
        let (a, b) = (new_instance().unwrap(), new_instance().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
