//! Wake-ups: after an enqueue or a cancel, tell the workers concerned to look now instead of at
//! their next poll. Best effort by design: the database is the truth and workers poll anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cuttle_proto::v1::wake_request::Reason;
use cuttle_proto::v1::worker_control_client::WorkerControlClient;
use cuttle_proto::v1::WakeRequest;
use cuttle_storage::Store;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Why a worker is being woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    Enqueued,
    Cancelled,
    /// The node's task cap or draining flag changed: it reads them back now.
    SettingsChanged,
}

/// An in-process wake for the worker hosted by this node, bypassing gRPC.
pub type LocalWake = Arc<dyn Fn(WakeReason) + Send + Sync>;

/// Sends wake-ups; cheap to clone. Many enqueues in a burst coalesce into one round of calls.
#[derive(Clone)]
pub(crate) struct Waker {
    enqueued: Arc<Notify>,
    one: mpsc::UnboundedSender<(String, Reason)>,
}

impl Waker {
    pub(crate) fn enqueued(&self) {
        self.enqueued.notify_one();
    }

    pub(crate) fn cancelled(&self, node: String) {
        let _ = self.one.send((node, Reason::Cancelled));
    }

    /// The node's task cap or draining flag was changed: it reads them back now rather than at
    /// its next heartbeat, so a new cap applies to its next claim.
    pub(crate) fn settings_changed(&self, node: String) {
        let _ = self.one.send((node, Reason::SettingsChanged));
    }
}

/// How long the list of worker nodes is reused before it is read again.
const NODE_LIST_TTL: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const WAKE_ATTEMPTS: u32 = 3;

pub(crate) fn start(
    store: Store,
    self_name: String,
    offline_after: Duration,
    local: Option<LocalWake>,
    cluster: cuttle_tls::ClusterTls,
    shutdown: CancellationToken,
) -> Waker {
    let enqueued = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Reason)>();
    let waker = Waker {
        enqueued: enqueued.clone(),
        one: tx,
    };
    tokio::spawn(async move {
        let mut fan = Fanout {
            store,
            self_name,
            offline_after,
            local,
            cluster,
            clients: HashMap::new(),
            workers: Vec::new(),
            read_at: None,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = enqueued.notified() => fan.wake_all().await,
                Some((node, reason)) = rx.recv() => fan.wake_one(&node, reason).await,
            }
        }
    });
    waker
}

#[derive(Clone)]
struct WorkerNode {
    name: String,
    /// gRPC address.
    address: String,
    /// Neither draining nor capped at 0: worth waking for new tasks.
    takes_work: bool,
}

struct Fanout {
    store: Store,
    self_name: String,
    offline_after: Duration,
    local: Option<LocalWake>,
    cluster: cuttle_tls::ClusterTls,
    clients: HashMap<String, WorkerControlClient<Channel>>,
    /// Online worker nodes, whether or not they take work now.
    workers: Vec<WorkerNode>,
    read_at: Option<Instant>,
    /// Nodes with a wake call outstanding, and whether another wake arrived meanwhile (then
    /// the call is repeated once it returns, so no enqueue is left unannounced).
    in_flight: Arc<Mutex<HashMap<(String, i32), bool>>>,
}

impl Fanout {
    async fn refresh(&mut self) {
        if self.read_at.is_some_and(|t| t.elapsed() < NODE_LIST_TTL) {
            return;
        }
        match self.store.list_nodes(self.offline_after).await {
            Ok(nodes) => {
                self.workers = nodes
                    .into_iter()
                    .filter(|n| n.online && n.roles.iter().any(|r| r == "worker"))
                    .map(|n| WorkerNode {
                        takes_work: !n.draining && n.task_cap > 0,
                        name: n.name,
                        address: n.grpc_address,
                    })
                    .collect();
                self.read_at = Some(Instant::now());
            }
            Err(e) => tracing::debug!(error = %e, "list nodes to wake"),
        }
    }

    async fn wake_all(&mut self) {
        if let Some(local) = &self.local {
            local(WakeReason::Enqueued);
        }
        self.refresh().await;
        for w in self.workers.clone() {
            if w.takes_work && (w.name != self.self_name || self.local.is_none()) {
                self.call(w.name, &w.address, Reason::Enqueued);
            }
        }
    }

    async fn wake_one(&mut self, node: &str, reason: Reason) {
        if node == self.self_name {
            if let Some(local) = &self.local {
                local(match reason {
                    Reason::SettingsChanged => WakeReason::SettingsChanged,
                    _ => WakeReason::Cancelled,
                });
                return;
            }
        }
        self.read_at = None;
        self.refresh().await;
        if let Some(w) = self.workers.iter().find(|w| w.name == node).cloned() {
            self.call(w.name, &w.address, reason);
        }
    }

    fn call(&mut self, node: String, addr: &str, reason: Reason) {
        let key = (node.clone(), reason as i32);
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            if let Some(again) = in_flight.get_mut(&key) {
                *again = true;
                return;
            }
            in_flight.insert(key.clone(), false);
        }
        let client = match self.clients.get(addr) {
            Some(c) => c.clone(),
            None => match cuttle_proto::wire::cluster_channel(addr, &self.cluster, CALL_TIMEOUT) {
                Ok(channel) => {
                    let c = WorkerControlClient::new(channel);
                    self.clients.insert(addr.to_owned(), c.clone());
                    c
                }
                Err(e) => {
                    tracing::warn!(%node, %addr, error = %e, "bad gRPC address for node");
                    self.in_flight.lock().expect("in-flight lock").remove(&key);
                    return;
                }
            },
        };
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let mut client = client;
            loop {
                // A few quick retries: a worker that just started, or a loaded machine, may
                // miss the first attempt; after that the worker's poll picks the work up.
                for attempt in 1..=WAKE_ATTEMPTS {
                    let req = WakeRequest {
                        reason: reason as i32,
                    };
                    let err = match tokio::time::timeout(CALL_TIMEOUT, client.wake(req)).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_owned(),
                    };
                    if attempt == WAKE_ATTEMPTS {
                        tracing::info!(%node, error = %err, "could not wake worker; it will find the work at its next poll");
                    } else {
                        tracing::debug!(%node, attempt, error = %err, "wake worker; retrying");
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
                let mut in_flight = in_flight.lock().expect("in-flight lock");
                match in_flight.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        in_flight.remove(&key);
                        return;
                    }
                }
            }
        });
    }
}
