//! Forwarding headers from a peer that is not a trusted proxy — most likely a load balancer
//! missing from `CUTTLE_TRUSTED_PROXIES`. The node ignores the header (believing it would let
//! anyone pick their address), so every caller behind that balancer counts as the balancer:
//! one caller's bad keys lock all of them out (429), and the per-client connection cap applies
//! to all of them together. The node says so: a warning in its log (per peer, at most every
//! ten minutes) and on the nodes page it serves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the log repeats the warning about one peer.
const REMIND_EVERY: Duration = Duration::from_secs(600);
/// How long a peer stays listed after its last forwarding header.
const SHOWN_FOR: Duration = Duration::from_secs(3600);
/// The most peers remembered (the oldest go first).
const MAX_PEERS: usize = 16;

/// The least time between two warnings in the log, whatever the peers (a client rotating its
/// address must not flood the log).
const WARN_GAP: Duration = Duration::from_secs(10);

struct Seen {
    last: Instant,
    warned: Option<Instant>,
    /// Requests seen: a balancer sends many, so it is the last to be forgotten.
    hits: u64,
}

#[derive(Default)]
pub(crate) struct UntrustedForwarders {
    peers: Mutex<HashMap<IpAddr, Seen>>,
    last_warning: Mutex<Option<Instant>>,
}

impl UntrustedForwarders {
    /// `peer`, not a trusted proxy, sent a forwarding header.
    pub(crate) fn note(&self, peer: IpAddr, header: &str) {
        let peer = cuttle_core::canonical_ip(peer);
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.contains_key(&peer) && peers.len() >= MAX_PEERS {
            // The least busy goes (then the longest quiet): not a balancer carrying clients.
            if let Some(least) = peers
                .iter()
                .min_by_key(|(_, s)| (s.hits, s.last))
                .map(|(ip, _)| *ip)
            {
                peers.remove(&least);
            }
        }
        let seen = peers.entry(peer).or_insert(Seen {
            last: now,
            warned: None,
            hits: 0,
        });
        seen.last = now;
        seen.hits += 1;
        let due = seen
            .warned
            .is_none_or(|w| now.duration_since(w) >= REMIND_EVERY);
        let mut last_warning = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let quiet = last_warning.is_none_or(|w| now.duration_since(w) >= WARN_GAP);
        if due && quiet {
            seen.warned = Some(now);
            *last_warning = Some(now);
            drop(last_warning);
            drop(peers);
            tracing::warn!(%peer, header, "{}", advice(peer));
        }
    }

    /// The peers seen sending forwarding headers within the last hour, oldest first.
    pub(crate) fn recent(&self) -> Vec<IpAddr> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut recent: Vec<(IpAddr, Instant)> = peers
            .iter()
            .filter(|(_, s)| s.last.elapsed() < SHOWN_FOR)
            .map(|(ip, s)| (*ip, s.last))
            .collect();
        recent.sort_by_key(|(_, at)| *at);
        recent.into_iter().map(|(ip, _)| ip).collect()
    }
}

/// What the warning says about `peer`.
pub(crate) fn advice(peer: IpAddr) -> String {
    format!(
        "requests from {peer} carry forwarding headers (X-Forwarded-For), but {peer} is not in \
         CUTTLE_TRUSTED_PROXIES, so they are ignored: if {peer} is a load balancer, every client \
         behind it counts as {peer} — one client's bad API keys lock all of them out (429) and \
         the per-client connection cap applies to all of them together. List it in \
         CUTTLE_TRUSTED_PROXIES"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_remembered_bounded_and_listed_oldest_first() {
        let f = UntrustedForwarders::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        // A busy balancer, then twenty addresses seen once each.
        for _ in 0..100 {
            f.note(ip(200), "x-forwarded-for");
        }
        for n in 1..=20 {
            f.note(ip(n), "x-forwarded-for");
        }
        let recent = f.recent();
        assert_eq!(recent.len(), MAX_PEERS);
        assert!(
            recent.contains(&ip(200)),
            "the balancer is kept: {recent:?}"
        );
        assert!(
            !recent.contains(&ip(1)),
            "the least busy, oldest went first"
        );
        assert_eq!(recent.last(), Some(&ip(20)));
        f.note(ip(5), "x-forwarded-for");
        assert_eq!(f.recent().last(), Some(&ip(5)));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        f.note(mapped, "x-forwarded-for");
        assert_eq!(f.recent().last(), Some(&ip(7)), "shown as IPv4");
    }
}
