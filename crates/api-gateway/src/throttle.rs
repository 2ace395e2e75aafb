//! Limits on failed authentication, and the pool that checks passwords.
//!
//! Failures are counted in one-minute windows per **client** (an IPv6 address by its /64: one
//! host holds a whole /64), and — for passwords — per **user name** and for the **whole node**,
//! so neither many addresses against one account nor many accounts from many addresses get more
//! than their share. A password attempt is counted *before* its hash is checked and given back
//! when it succeeds, so concurrent attempts cannot all slip under the limit. Each table is
//! bounded; when one is full, the entry whose window started first makes room — nobody else's
//! count is reset.
//!
//! Argon2id costs 19 MiB and tens of milliseconds per check: checks run on a small pool of
//! their own threads behind a short queue, and an attempt that finds the queue full is told to
//! retry (503), so a flood of sign-ins costs the node a bounded amount of memory and never the
//! threads other requests use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Failures one client may have per window (API keys and passwords alike).
pub(crate) const PER_CLIENT: u32 = 10;
/// Failed passwords one user name may have per window, from anywhere.
pub(crate) const PER_NAME: u32 = 10;
/// Failed passwords the whole node takes per window.
pub(crate) const PER_NODE: u32 = 100;
/// Entries one table holds at most.
const TABLE_MAX: usize = 10_000;
/// Threads checking passwords, and checks waiting for one.
const POOL_THREADS: usize = 2;
const POOL_QUEUE: usize = 4;

/// What a client address is counted as: an IPv4 address, or an IPv6 address's /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Failure counts per key in one-minute windows, bounded in size.
#[derive(Debug)]
pub(crate) struct Windows<K> {
    counts: Mutex<HashMap<K, (u32, Instant)>>,
    max: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Default for Windows<K> {
    fn default() -> Self {
        Windows {
            counts: Mutex::new(HashMap::new()),
            max: TABLE_MAX,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Windows<K> {
    #[cfg(test)]
    fn with_max(max: usize) -> Self {
        Windows {
            counts: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// `Some(wait)` while `key` has `limit` failures or more in its current window.
    pub(crate) fn blocked(&self, key: &K, limit: u32, now: Instant) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = counts.get(key)?;
        let left = WINDOW
            .checked_sub(now.duration_since(*since))
            .filter(|l| !l.is_zero())?;
        (*n >= limit).then_some(left)
    }

    /// Counts one failure (or attempt) of `key`; `Err(wait)` instead when it already has
    /// `limit` in its window.
    pub(crate) fn take(&self, key: &K, limit: u32, now: Instant) -> Result<(), Duration> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !counts.contains_key(key) && counts.len() >= self.max {
            counts.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if counts.len() >= self.max {
                // Full of live windows: the oldest makes room, nobody else's is reset.
                if let Some(oldest) = counts
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| k.clone())
                {
                    counts.remove(&oldest);
                }
            }
        }
        let entry = counts.entry(key.clone()).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        if entry.0 >= limit {
            return Err(WINDOW.saturating_sub(now.duration_since(entry.1)));
        }
        entry.0 += 1;
        Ok(())
    }

    /// Gives back one counted attempt (it succeeded).
    pub(crate) fn give_back(&self, key: &K) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = counts.get_mut(key) {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

/// The limits of one node.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    pub(crate) clients: Windows<IpAddr>,
    names: Windows<String>,
    node: Windows<()>,
}

/// A password attempt, counted against every limit it falls under until it is given back.
pub(crate) struct Attempt {
    client: Option<IpAddr>,
    name: String,
}

impl Throttle {
    /// `Some(wait)` while `client` has used up its failures.
    pub(crate) fn client_blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        self.clients.blocked(&client_key(client), PER_CLIENT, now)
    }

    /// Counts a failed API key of `client`.
    pub(crate) fn client_failed(&self, client: IpAddr, now: Instant) {
        let _ = self.clients.take(&client_key(client), u32::MAX, now);
    }

    /// Counts a password attempt for `name` from `client` against the client's, the name's and
    /// the node's limits — before it is checked. `Err(wait)` when one of them is used up (and
    /// then nothing is counted).
    pub(crate) fn password_attempt(
        &self,
        client: Option<IpAddr>,
        name: &str,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let name = name.to_lowercase();
        let client = client.map(client_key);
        if let Some(c) = client {
            self.clients.take(&c, PER_CLIENT, now)?;
        }
        if let Err(wait) = self.names.take(&name, PER_NAME, now) {
            if let Some(c) = client {
                self.clients.give_back(&c);
            }
            return Err(wait);
        }
        if let Err(wait) = self.node.take(&(), PER_NODE, now) {
            if let Some(c) = client {
                self.clients.give_back(&c);
            }
            self.names.give_back(&name);
            return Err(wait);
        }
        Ok(Attempt { client, name })
    }

    /// The attempt succeeded: it does not count against anyone.
    pub(crate) fn succeeded(&self, a: Attempt) {
        if let Some(c) = a.client {
            self.clients.give_back(&c);
        }
        self.names.give_back(&a.name);
        self.node.give_back(&());
    }
}

type Job = (String, Option<String>, tokio::sync::oneshot::Sender<bool>);

/// Threads of their own that check passwords, behind a short queue.
pub(crate) struct PasswordPool {
    jobs: SyncSender<Job>,
}

/// Every thread of the pool is busy and its queue is full: try again shortly.
#[derive(Debug)]
pub(crate) struct Busy;

impl PasswordPool {
    pub(crate) fn start() -> PasswordPool {
        let (tx, rx) = sync_channel::<Job>(POOL_QUEUE);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..POOL_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cuttle-passwords-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((password, hash, reply)) = job else {
                        return;
                    };
                    let ok = cuttle_storage::passwords::verify_password(&password, hash.as_deref());
                    let _ = reply.send(ok);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "start a password-checking thread");
            }
        }
        PasswordPool { jobs: tx }
    }

    /// Whether `password` matches `hash` (an unknown user: `None`, checked against a dummy hash
    /// at the same cost); `Busy` when the pool cannot take it now.
    pub(crate) async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, Busy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.jobs.try_send((password, hash, reply)) {
            Ok(()) => answer.await.map_err(|_| Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordPool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..PER_CLIENT {
            t.client_failed(a, now);
        }
        assert!(t.client_blocked(b, now).is_some(), "the same /64");
        assert!(t.client_blocked(c, now).is_none());
    }

    #[test]
    fn attempts_count_before_they_are_checked_and_successes_are_given_back() {
        let t = Throttle::default();
        let now = Instant::now();
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        // Ten at once are taken; the eleventh waits, whatever the first ten turn out to be.
        let held: Vec<Attempt> = (0..PER_CLIENT)
            .map(|_| t.password_attempt(Some(me), "alice", now).unwrap())
            .collect();
        assert!(t.password_attempt(Some(me), "alice", now).is_err());
        for a in held {
            t.succeeded(a);
        }
        assert!(t.password_attempt(Some(me), "alice", now).is_ok());
    }

    #[test]
    fn one_name_and_the_whole_node_have_limits_of_their_own() {
        let t = Throttle::default();
        let now = Instant::now();
        // Many addresses against one name.
        for i in 0..PER_NAME {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            let _ = t.password_attempt(Some(ip), "Alice", now).unwrap();
        }
        let other: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(
            t.password_attempt(Some(other), "alice", now).is_err(),
            "names are one whatever their case"
        );
        assert!(t.password_attempt(Some(other), "bob", now).is_ok());
        // Many names from many addresses: the node's own limit.
        let t = Throttle::default();
        for i in 0..PER_NODE {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = t
                .password_attempt(Some(ip), &format!("user{i}"), now)
                .unwrap();
        }
        assert!(t.password_attempt(None, "someone-else", now).is_err());
        assert!(
            t.password_attempt(None, "someone-else", now + WINDOW)
                .is_ok(),
            "a new window"
        );
    }

    #[test]
    fn a_full_table_evicts_its_oldest_window_and_resets_no_one_else() {
        let w: Windows<u32> = Windows::with_max(3);
        let t0 = Instant::now();
        for _ in 0..PER_CLIENT {
            w.take(&1, u32::MAX, t0).unwrap();
        }
        w.take(&2, u32::MAX, t0 + Duration::from_secs(1)).unwrap();
        w.take(&3, u32::MAX, t0 + Duration::from_secs(2)).unwrap();
        for _ in 0..PER_CLIENT {
            w.take(&4, u32::MAX, t0 + Duration::from_secs(3)).unwrap();
        }
        let at = t0 + Duration::from_secs(4);
        assert!(
            w.blocked(&1, PER_CLIENT, at).is_none(),
            "the oldest made room"
        );
        assert!(
            w.blocked(&4, PER_CLIENT, at).is_some(),
            "the newcomer is counted"
        );
        // However many new keys come, the table stays bounded.
        for k in 100..200 {
            w.take(&k, u32::MAX, at).unwrap();
        }
        assert!(w.counts.lock().unwrap().len() <= 3);
    }

    #[tokio::test]
    async fn the_pool_answers_and_says_when_it_is_full() {
        let pool = PasswordPool::start();
        let hash = cuttle_storage::passwords::hash_password("correct horse battery").unwrap();
        assert!(pool
            .verify("correct horse battery".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!pool
            .verify("wrong".into(), Some(hash.clone()))
            .await
            .unwrap());
        // Many at once: some are turned away at once rather than queued without bound.
        let tries = (0..20).map(|_| pool.verify("wrong".into(), Some(hash.clone())));
        let answers = futures_util::future::join_all(tries).await;
        assert!(answers.iter().any(|a| a.is_err()), "some told to retry");
        assert!(answers.iter().filter(|a| a.is_ok()).count() >= POOL_THREADS);
    }
}
