//! Which client address to believe: the socket peer, or — only when the peer is a trusted
//! proxy — the address it reports in `X-Forwarded-For`.

use std::net::IpAddr;

use crate::ValidationError;

/// `CUTTLE_TRUSTED_PROXIES`: addresses and CIDR ranges whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a comma-separated list such as `127.0.0.1, 10.0.0.0/8, ::1`.
    pub fn parse(list: &str) -> Result<Self, ValidationError> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| ValidationError::new(format!("{item:?} is not an address or CIDR")))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                    ValidationError::new(format!("{item:?} has a bad prefix length"))
                })?,
            };
            nets.push((ip, bits));
        }
        Ok(TrustedProxies { nets })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|(net, bits)| in_net(ip, canonical(*net), *bits))
    }

    /// The client's address: `peer`, unless `peer` is trusted and `forwarded_for` (the
    /// `X-Forwarded-For` header) names one — then the right-most address in it that is not
    /// itself a trusted proxy (the left-most, when every hop is trusted). A hop that is not an
    /// address (`unknown`, garbage) is passed over rather than discarding the chain; a header
    /// with no address at all leaves the peer.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        let Some(header) = forwarded_for.filter(|_| self.contains(peer)) else {
            return peer;
        };
        let hops: Vec<IpAddr> = header.split(',').filter_map(parse_hop).collect();
        hops.iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`), as proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let bare = if let Some(rest) = hop.strip_prefix('[') {
        rest.split_once(']').map(|(ip, _)| ip)?
    } else if hop.matches(':').count() == 1 {
        hop.split_once(':').map(|(ip, _)| ip)?
    } else {
        hop
    };
    bare.parse().ok().map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare (and are shown) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,::1, fd00::/8").unwrap();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("10.200.3.4")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(
            t.contains(ip("::ffff:10.1.1.1")),
            "mapped IPv4 matches IPv4 ranges"
        );
        for bad in ["nope", "10.0.0.0/33", "::1/129", "1.2.3.4/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_peers() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let xff = Some("203.0.113.7");
        assert_eq!(t.client_address(ip("10.0.0.5"), xff), ip("203.0.113.7"));
        // A forged header from anyone else is ignored.
        assert_eq!(
            t.client_address(ip("198.51.100.1"), xff),
            ip("198.51.100.1")
        );
        // Chains: the right-most untrusted hop is the client; spoofed left entries are not.
        let chain = Some("1.1.1.1, 203.0.113.7, 10.0.0.9");
        assert_eq!(t.client_address(ip("10.0.0.5"), chain), ip("203.0.113.7"));
        // A hop that is no address does not discard the chain: the right-most untrusted
        // address that parses is the client.
        let garbage = Some("1.1.1.1, 203.0.113.7, unknown, 10.0.0.9");
        assert_eq!(t.client_address(ip("10.0.0.5"), garbage), ip("203.0.113.7"));
        let garbage_right = Some("203.0.113.7, %%%");
        assert_eq!(
            t.client_address(ip("10.0.0.5"), garbage_right),
            ip("203.0.113.7")
        );
        // Ports, as some proxies write them.
        assert_eq!(
            t.client_address(ip("10.0.0.5"), Some("203.0.113.7:5123")),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client_address(ip("10.0.0.5"), Some("[2001:db8::7]:443, 10.0.0.9")),
            ip("2001:db8::7")
        );
        assert_eq!(
            t.client_address(ip("10.0.0.5"), Some("2001:db8::7")),
            ip("2001:db8::7")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            t.client_address(ip("10.0.0.5"), Some("10.1.1.1, 10.0.0.9")),
            ip("10.1.1.1")
        );
        // No address at all, or no header: the peer.
        assert_eq!(
            t.client_address(ip("10.0.0.5"), Some("junk")),
            ip("10.0.0.5")
        );
        assert_eq!(t.client_address(ip("10.0.0.5"), Some("")), ip("10.0.0.5"));
        assert_eq!(t.client_address(ip("10.0.0.5"), None), ip("10.0.0.5"));
        assert_eq!(
            TrustedProxies::default().client_address(ip("10.0.0.5"), xff),
            ip("10.0.0.5")
        );
    }
}
