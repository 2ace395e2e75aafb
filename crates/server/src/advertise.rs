//! The addresses a node advertises: what other nodes dial (gRPC), what tentacles on other hosts
//! are handed (the gateway), what the node list shows (HTTP). Never `0.0.0.0` or `::`, which
//! mean "this host" to whoever dials them.
//!
//! An explicit `CUTTLE_*_ADVERTISE` wins. Otherwise the bound address, when it names one
//! interface; when it is the unspecified address, the address of the interface that carries
//! the default route (or the host's only routable address). When none can be chosen the node
//! refuses to start, naming the setting to give.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Result};

/// An address of one network interface, as the kernel lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceAddr {
    pub(crate) interface: String,
    pub(crate) ip: IpAddr,
}

/// Checks an explicit `host:port` to advertise: a host (name or address, not unspecified) and
/// a non-zero port.
pub(crate) fn validate(setting: &str, value: &str) -> Result<()> {
    let Some((host, port)) = value.rsplit_once(':') else {
        bail!("{setting} {value:?} is not host:port");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        bail!("{setting} {value:?} has no valid port");
    }
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !plain {
        bail!("{setting} {value:?} is not host:port");
    }
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        bail!("{setting} {value:?} names no host: other machines cannot dial it");
    }
    Ok(())
}

/// What to advertise for a listener bound to `bound`, given `explicit` (already validated).
pub(crate) fn advertised(
    setting: &str,
    bound: SocketAddr,
    explicit: Option<&str>,
) -> Result<String> {
    if let Some(e) = explicit {
        return Ok(e.to_owned());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    match choose(
        bound.ip(),
        &interfaces(),
        default_route_interface().as_deref(),
    ) {
        Some(ip) => Ok(SocketAddr::new(ip, bound.port()).to_string()),
        None => bail!(
            "listening on {bound}, which other machines cannot dial, and no single routable \
             address of this host was found: set {setting} to the host:port they should use"
        ),
    }
}

/// The address to advertise for an unspecified listener: among the up, non-loopback,
/// non-link-local addresses of the listener's family (either family for `::`), the default
/// route's interface's; else the only candidate; else none (ambiguous or absent).
fn choose(
    unspecified: IpAddr,
    addrs: &[InterfaceAddr],
    default_iface: Option<&str>,
) -> Option<IpAddr> {
    let candidates: Vec<&InterfaceAddr> = addrs
        .iter()
        .filter(|a| routable(a.ip))
        .filter(|a| unspecified.is_ipv6() || a.ip.is_ipv4())
        .collect();
    if let Some(iface) = default_iface {
        let on_default = prefer_ipv4(
            candidates
                .iter()
                .copied()
                .filter(|a| a.interface == iface)
                .collect(),
        );
        if let Some(a) = on_default.first() {
            return Some(a.ip);
        }
    }
    match prefer_ipv4(candidates).as_slice() {
        [only] => Some(only.ip),
        _ => None,
    }
}

/// The IPv4 addresses when there are any: a dual-stack listener is most often dialled over IPv4.
fn prefer_ipv4(list: Vec<&InterfaceAddr>) -> Vec<&InterfaceAddr> {
    let v4: Vec<&InterfaceAddr> = list.iter().copied().filter(|a| a.ip.is_ipv4()).collect();
    if v4.is_empty() {
        list
    } else {
        v4
    }
}

fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The interface of the IPv4 default route (`/proc/net/route`), if there is one.
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let (iface, dest) = (cols.next()?, cols.next()?);
        (dest == "00000000").then(|| iface.to_owned())
    })
}

/// The addresses of the interfaces that are up.
fn interfaces() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs; it is read only
    // below, each node's pointers checked for null before use.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if !up || ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sa.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        out.push(InterfaceAddr {
            interface: name.to_string_lossy().into_owned(),
            ip,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(interface: &str, ip: &str) -> InterfaceAddr {
        InterfaceAddr {
            interface: interface.into(),
            ip: ip.parse().unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_routes_interface_wins() {
        let addrs = [
            a("lo", "127.0.0.1"),
            a("docker0", "172.17.0.1"),
            a("eth0", "fe80::1"),
            a("eth0", "192.0.2.2"),
        ];
        assert_eq!(
            choose(ip("0.0.0.0"), &addrs, Some("eth0")),
            Some(ip("192.0.2.2"))
        );
        // Without a default route two candidates are ambiguous: refuse rather than guess.
        assert_eq!(choose(ip("0.0.0.0"), &addrs, None), None);
    }

    #[test]
    fn loopback_and_link_local_are_never_advertised() {
        let addrs = [
            a("lo", "127.0.0.1"),
            a("lo", "::1"),
            a("eth0", "169.254.1.1"),
            a("eth0", "fe80::1"),
        ];
        assert_eq!(choose(ip("0.0.0.0"), &addrs, Some("eth0")), None);
        assert_eq!(choose(ip("::"), &addrs, Some("eth0")), None);
    }

    #[test]
    fn the_listeners_family_decides() {
        let addrs = [a("eth0", "2001:db8::2"), a("eth1", "198.51.100.4")];
        assert_eq!(
            choose(ip("0.0.0.0"), &addrs, None),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(choose(ip("::"), &addrs, None), Some(ip("198.51.100.4")));
        let v6_only = [a("eth0", "2001:db8::2")];
        assert_eq!(
            choose(ip("::"), &v6_only, Some("eth0")),
            Some(ip("2001:db8::2"))
        );
        assert_eq!(choose(ip("0.0.0.0"), &v6_only, Some("eth0")), None);
    }

    #[test]
    fn a_bound_address_is_advertised_as_it_is_and_an_explicit_one_wins() {
        let bound: SocketAddr = "10.1.2.3:10943".parse().unwrap();
        assert_eq!(advertised("X", bound, None).unwrap(), "10.1.2.3:10943");
        let any: SocketAddr = "0.0.0.0:10943".parse().unwrap();
        assert_eq!(
            advertised("X", any, Some("gw.example.com:443")).unwrap(),
            "gw.example.com:443"
        );
    }

    #[test]
    fn explicit_values_are_checked() {
        for good in ["gw.example.com:10943", "192.0.2.2:1", "[2001:db8::1]:443"] {
            validate("CUTTLE_GATEWAY_ADVERTISE", good).unwrap();
        }
        for bad in [
            "0.0.0.0:10943",
            "[::]:1",
            "host",
            "host:0",
            ":80",
            "a b:1",
            "host:x",
        ] {
            let e = validate("CUTTLE_GATEWAY_ADVERTISE", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("CUTTLE_GATEWAY_ADVERTISE"), "{bad}: {e}");
        }
    }

    #[test]
    fn this_hosts_interfaces_can_be_listed() {
        assert!(
            interfaces().iter().any(|a| a.ip.is_loopback()),
            "{:?}",
            interfaces()
        );
    }
}
