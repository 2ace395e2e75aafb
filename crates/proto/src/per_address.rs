//! Open connections counted per peer address, with a limit: the API listener and a listening
//! tentacle both keep one client from holding every connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per peer address.
#[derive(Default)]
pub struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address (none when exempt); uncounted on drop.
pub struct AddressSlot {
    counts: Arc<PerAddress>,
    ip: Option<IpAddr>,
}

impl PerAddress {
    /// A slot for one more connection from `ip`, or `None` when it already holds `limit`.
    /// An `exempt` address (a trusted proxy carrying many clients) is not counted.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, limit: usize, exempt: bool) -> Option<AddressSlot> {
        if exempt {
            return Some(AddressSlot {
                counts: self.clone(),
                ip: None,
            });
        }
        let mut counts = self.lock();
        let n = counts.entry(ip).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip: Some(ip),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_gives_it_back() {
        let counts = Arc::new(PerAddress::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<AddressSlot> = (0..2).map(|_| counts.enter(a, 2, false).unwrap()).collect();
        assert!(
            counts.enter(a, 2, false).is_none(),
            "a third from one address"
        );
        assert!(
            counts.enter(b, 2, false).is_some(),
            "another address is not affected"
        );
        assert!(
            counts.enter(a, 2, true).is_some(),
            "an exempt address is not counted"
        );
        drop(held);
        assert!(counts.enter(a, 2, false).is_some(), "slots come back");
        assert!(counts.lock().get(&b).is_none(), "no entry left behind");
    }
}
