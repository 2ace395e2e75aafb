//! Who gets a connection on a mutual-TLS listener (internal gRPC, the tentacle gateway, a
//! listening tentacle), in two stages:
//!
//! - **In the handshake**, before the peer has shown a certificate, a connection costs a
//!   descriptor and nothing proves it wanted anything: at most `max_pending` are held at once,
//!   at most `max_pending_per_peer` from one address; past the total, the connection waiting
//!   longest is ended to make room (it would time out anyway), so a flood of idle connections
//!   cycles through instead of holding the door, and a real peer, whose handshake takes
//!   milliseconds, gets in. Every handshake also has its deadline.
//! - **Established** (the peer's certificate accepted), at most `max_established` at once.
//!
//! [`Limits::from_open_files`] derives both from the process's open-file limit, which
//! [`raise_open_file_limit`] lifts to its hard ceiling at start.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What one listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_pending: usize,
    pub max_pending_per_peer: usize,
    pub max_established: usize,
}

impl Limits {
    /// A listener's share of `open_files` descriptors: established connections up to `share`
    /// of them (capped at `ceiling`), handshakes up to a sixteenth of that (at least 16).
    pub fn from_open_files(open_files: u64, share: f64, ceiling: usize) -> Limits {
        let usable = (open_files as f64 * share) as usize;
        let max_established = usable.clamp(16, ceiling.max(16));
        Limits {
            max_pending: (max_established / 16).max(16),
            max_pending_per_peer: 8,
            max_established,
        }
    }
}

/// Lifts the soft open-file limit to the hard one; the limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit write and read the struct we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        lim.rlim_cur
    }
}

/// The admission state of one listener.
pub struct Admission {
    limits: Limits,
    established: Arc<Semaphore>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    /// Oldest first: (serial, its peer, its eviction token).
    queue: VecDeque<(u64, IpAddr, CancellationToken)>,
    per_peer: HashMap<IpAddr, usize>,
}

/// A connection in its handshake. Dropped when the handshake ends, however it ends.
pub struct Handshake {
    admission: Arc<Admission>,
    serial: u64,
    peer: IpAddr,
    evicted: CancellationToken,
}

/// An established connection's place; given back when dropped.
pub struct Established(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            established: Arc::new(Semaphore::new(limits.max_established.max(1))),
            pending: Mutex::new(Pending::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handshake slot for a connection from `peer`; `None` when that address already holds
    /// its share of handshakes (close the connection). Past the total, the oldest handshake is
    /// told to end ([`Handshake::evicted`]).
    pub fn begin(self: &Arc<Self>, peer: IpAddr) -> Option<Handshake> {
        let mut p = self.lock();
        let mine = p.per_peer.entry(peer).or_default();
        if *mine >= self.limits.max_pending_per_peer {
            return None;
        }
        *mine += 1;
        while p.queue.len() >= self.limits.max_pending.max(1) {
            if let Some((_, _, oldest)) = p.queue.pop_front() {
                oldest.cancel();
            }
        }
        p.next += 1;
        let serial = p.next;
        let evicted = CancellationToken::new();
        p.queue.push_back((serial, peer, evicted.clone()));
        Some(Handshake {
            admission: self.clone(),
            serial,
            peer,
            evicted,
        })
    }

    /// A place for an established connection, if one is free.
    pub fn establish(&self) -> Option<Established> {
        self.established
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Established)
    }

    /// Handshakes held now (for tests and logs).
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }
}

impl Handshake {
    /// Fires when a newer connection needed this one's place: end it.
    pub fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.evicted.cancelled()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut p = self.admission.lock();
        p.queue.retain(|(s, _, _)| *s != self.serial);
        if let Some(n) = p.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn handshakes_are_bounded_per_peer_and_in_all_and_the_oldest_makes_room() {
        let a = Admission::new(Limits {
            max_pending: 4,
            max_pending_per_peer: 2,
            max_established: 2,
        });
        let first = a.begin(ip("192.0.2.1")).unwrap();
        let _second = a.begin(ip("192.0.2.1")).unwrap();
        assert!(
            a.begin(ip("192.0.2.1")).is_none(),
            "a third from one address"
        );
        let _c = a.begin(ip("192.0.2.2")).unwrap();
        let _d = a.begin(ip("192.0.2.3")).unwrap();
        assert!(!first.evicted.is_cancelled());
        // A fifth: the oldest is told to end, and its place is taken.
        let _e = a.begin(ip("192.0.2.4")).unwrap();
        assert!(first.evicted.is_cancelled());
        assert_eq!(a.pending(), 4);
        drop(first);
        assert!(
            a.begin(ip("192.0.2.1")).is_some(),
            "its address has room again"
        );
        // Established connections have their own bound.
        let held = (a.establish().unwrap(), a.establish().unwrap());
        assert!(a.establish().is_none());
        drop(held);
        assert!(a.establish().is_some());
    }

    #[test]
    fn limits_follow_the_open_file_limit() {
        let small = Limits::from_open_files(1024, 0.5, 100_000);
        assert_eq!(small.max_established, 512);
        assert_eq!(small.max_pending, 32);
        let capped = Limits::from_open_files(1 << 20, 0.5, 4096);
        assert_eq!(capped.max_established, 4096);
        assert!(raise_open_file_limit() >= 1024);
    }
}
