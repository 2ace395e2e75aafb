//! What live-log streams cost a node, bounded: at most [`PER_PERSON`] open at once per person
//! (API key or user) on a node, and one poll of the database per task per node however many
//! people follow it — a watcher per task, started by its first follower and ended by its last
//! (or by the task's end).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cuttle_core::{TaskId, TaskRecord};
use tokio::sync::watch;

use crate::AppState;

/// Live-log streams one person may hold open on one node.
pub(crate) const PER_PERSON: usize = 8;
/// How often a watcher reads its task, once it has watched a while.
const POLL: Duration = Duration::from_millis(500);

/// The wait before the `n`th look (from 0) at something that may change soon: 25 ms, doubling,
/// up to `most`. A short task is seen to end within a few tens of milliseconds; a long one costs
/// a look every `most`.
pub(crate) fn backoff(n: u32, most: Duration) -> Duration {
    Duration::from_millis(25u64 << n.min(10)).min(most)
}

/// The node's open streams, by person, and its task watchers.
#[derive(Default)]
pub(crate) struct Streams {
    open: Mutex<HashMap<String, usize>>,
    watchers: Mutex<HashMap<TaskId, Arc<watch::Sender<Watched>>>>,
}

/// What a watcher last read of its task: the record, `None` when it no longer exists (and
/// `Pending` until the first read).
#[derive(Clone, Debug)]
pub(crate) enum Watched {
    Pending,
    Task(Box<TaskRecord>),
    Gone,
}

/// One open stream of a person; gives its place back when dropped.
pub(crate) struct Slot {
    streams: Arc<Streams>,
    person: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.person) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.person);
            }
        }
    }
}

impl Streams {
    /// A place for one more stream of `person`, unless they hold [`PER_PERSON`] already.
    pub(crate) fn open(self: &Arc<Self>, person: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(person.to_owned()).or_default();
        if *n >= PER_PERSON {
            return None;
        }
        *n += 1;
        Some(Slot {
            streams: self.clone(),
            person: person.to_owned(),
        })
    }

    /// Follows task `id`: the receiver of the one watcher this node runs for it.
    pub(crate) fn watch(self: &Arc<Self>, s: &AppState, id: TaskId) -> watch::Receiver<Watched> {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = watchers.get(&id) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Watched::Pending);
        let tx = Arc::new(tx);
        watchers.insert(id, tx.clone());
        let (streams, store) = (self.clone(), s.store.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            loop {
                let read = match store.get_task(id).await {
                    Ok(Some(t)) => Some(Watched::Task(Box::new(t))),
                    Ok(None) => Some(Watched::Gone),
                    // The database is away: the followers keep what they had.
                    Err(_) => None,
                };
                let ended = matches!(&read, Some(Watched::Gone))
                    || matches!(&read, Some(Watched::Task(t)) if t.state.is_terminal());
                if let Some(r) = read {
                    tx.send_replace(r);
                }
                tokio::time::sleep(backoff(reads, POLL)).await;
                reads += 1;
                // Decided under the lock, so no follower subscribes to a watcher that stops.
                let mut watchers = streams.watchers.lock().unwrap_or_else(|p| p.into_inner());
                if ended || tx.receiver_count() == 0 {
                    watchers.remove(&id);
                    return;
                }
            }
        });
        rx
    }

    /// Tasks watched now (for tests).
    #[cfg(test)]
    fn watching(&self) -> usize {
        self.watchers.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_start_fast_and_slow_down() {
        let most = Duration::from_millis(500);
        let waits: Vec<u64> = (0..7)
            .map(|n| backoff(n, most).as_millis() as u64)
            .collect();
        assert_eq!(waits, [25, 50, 100, 200, 400, 500, 500]);
        assert_eq!(backoff(u32::MAX, most), most);
    }

    #[test]
    fn a_person_holds_at_most_per_person_streams_and_gets_them_back() {
        let streams = Arc::new(Streams::default());
        let held: Vec<Slot> = (0..PER_PERSON)
            .map(|_| streams.open("alice (Users-2)").unwrap())
            .collect();
        assert!(streams.open("alice (Users-2)").is_none());
        assert!(
            streams.open("bob (Users-3)").is_some(),
            "others are not affected"
        );
        drop(held);
        assert!(streams.open("alice (Users-2)").is_some());
        assert_eq!(streams.watching(), 0);
    }
}
