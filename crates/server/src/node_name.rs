//! One live process per node name. Each `cuttle-server run` picks a random instance id and
//! holds its node's name with it (the row's `instance`, written at registration and at every
//! heartbeat). A second process started with a name a live process holds is refused, naming
//! that process; a process that crashed is taken over once the cluster counts it lost (its
//! heartbeat older than the offline timeout); a process stopping cleanly lets go of the name
//! (marks it released) so its next start is immediate.

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
    /// Nobody (no row, or a clean stop let it go): take it.
    Free,
    /// Its heartbeat stopped longer ago than the offline timeout: the cluster counts it lost;
    /// take it over.
    Lost(Option<String>),
    /// Its heartbeat is recent: alive, or crashed a moment ago. Watch it. (`None`: a process
    /// from before schema 12, which holds names without saying so.)
    Recent(Option<String>),
}

/// A clean stop's mark on the row: the name is free.
const RELEASED: &str = "";

fn judge(h: Option<&NodeHolder>, me: &str, offline_after: Duration) -> Holder {
    let Some(h) = h else {
        return Holder::Free;
    };
    match h.instance.as_deref() {
        Some(RELEASED) => Holder::Free,
        Some(i) if i == me => Holder::Free,
        held if h.now_ms - h.last_seen_ms > offline_after.as_millis() as i64 => {
            Holder::Lost(held.map(str::to_owned))
        }
        held => Holder::Recent(held.map(str::to_owned)),
    }
}

/// How often the name's row is read while watching a recent holder.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Registers this node, holding its name. While another process holds the name and its last
/// heartbeat is recent, watches that heartbeat: if it moves, that process is alive and this
/// one is refused (`NodeNameHeld`, naming it); once it is older than the offline timeout — the
/// moment the cluster counts that process lost — this one takes the name over.
pub(crate) async fn register(
    store: &Store,
    reg: &mut NodeRegistration,
    offline_after: Duration,
) -> Result<NodeState> {
    for _ in 0..4 {
        let first = store.node_holder(&reg.name).await?;
        match judge(first.as_ref(), &reg.instance, offline_after) {
            Holder::Free => reg.replaces = None,
            Holder::Lost(i) => reg.replaces = i,
            Holder::Recent(i) => {
                let first = first.expect("a recent holder has a row");
                tracing::warn!(
                    node = %reg.name,
                    other = %first.http_address,
                    seen_ms_ago = first.now_ms - first.last_seen_ms,
                    "another process held this node's name a moment ago; watching its \
                     heartbeat: the name is taken over once the cluster counts that process \
                     lost (CUTTLE_OFFLINE_AFTER_SECS), refused if it is alive"
                );
                let mut changed_hands = false;
                loop {
                    tokio::time::sleep(WATCH_EVERY).await;
                    let Some(n) = store.node_holder(&reg.name).await? else {
                        changed_hands = true;
                        break;
                    };
                    if n.instance != i {
                        changed_hands = true;
                        break;
                    }
                    if n.last_seen_ms > first.last_seen_ms {
                        bail!(Error::NodeNameHeld(format!(
                            "another cuttle-server process is running as node {:?} (serving \
                             {}; its heartbeat moved while this one watched): give this \
                             process its own CUTTLE_NODE_NAME, or stop the other first",
                            reg.name, n.http_address
                        )));
                    }
                    if n.now_ms - n.last_seen_ms > offline_after.as_millis() as i64 {
                        break;
                    }
                }
                if changed_hands {
                    continue;
                }
                tracing::warn!(node = %reg.name, "the other process's heartbeat stopped: it is gone; taking the name over");
                reg.replaces = i;
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
        assert_eq!(judge(Some(&holder(Some(""), 10)), "me", off), Holder::Free);
        assert_eq!(
            judge(Some(&holder(None, 10)), "me", off),
            Holder::Recent(None),
            "a process from before schema 12 may be alive"
        );
        assert_eq!(
            judge(Some(&holder(None, 60_001)), "me", off),
            Holder::Lost(None)
        );
        assert_eq!(
            judge(Some(&holder(Some("me"), 10)), "me", off),
            Holder::Free
        );
        assert_eq!(
            judge(Some(&holder(Some("other"), 60_001)), "me", off),
            Holder::Lost(Some("other".into()))
        );
        assert_eq!(
            judge(Some(&holder(Some("other"), 59_000)), "me", off),
            Holder::Recent(Some("other".into()))
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
