//! Test hosts of our own: a network namespace with loopback up and one routable address (a
//! veth pair to the test's own namespace, with a default route through it), so what runs there
//! sees a host like a user's — `localhost:8080` free for it, an address other machines would
//! dial — without touching the real host's ports. Removed, with everything in it, on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One namespace; [`Netns::command`] runs a program in it.
pub struct Netns {
    pub name: String,
    /// The namespace's routable address (its end of the veth pair).
    pub address: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A namespace whose routable address is on a /30 of its own (10.231.N.2, the test's side
    /// 10.231.N.1). Needs root, as the tests do.
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("cuttle-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let tag = (pid % 100_000) * 10 + n % 10;
        let (outer, inner) = (format!("cwo{tag}"), format!("cwi{tag}"));
        let subnet = (pid as u64 * 7 + u64::from(n)) % 4096;
        let (a, b) = (subnet / 64, (subnet % 64) * 4);
        let host_side = format!("10.231.{a}.{}", b + 1);
        let ns_side = format!("10.231.{a}.{}", b + 2);
        let ns = Netns::plugged(
            &name,
            (&outer, &inner),
            &format!("{ns_side}/30"),
            &host_side,
        );
        ip(&["addr", "add", &format!("{host_side}/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ns
    }

    /// A new namespace `name` with loopback up and the `inner` end of a new veth pair at
    /// `cidr`, routing through `gateway`; the `outer` end stays here for the caller to set up.
    fn plugged(name: &str, (outer, inner): (&str, &str), cidr: &str, gateway: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_owned(),
            address: cidr.split('/').next().unwrap_or(cidr).to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["link", "add", outer, "type", "veth", "peer", "name", inner]);
        ip(&["link", "set", inner, "netns", name]);
        ip(&["-n", name, "addr", "add", cidr, "dev", inner]);
        ip(&["-n", name, "link", "set", inner, "up"]);
        ip(&["-n", name, "route", "add", "default", "via", gateway]);
        ns
    }

    /// `program` to be run in this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Hosts of their own on one LAN: a bridge in the test's namespace (its address the LAN's
/// gateway, where servers the test runs — a database — are reached) and one namespace per host,
/// each with its address on the bridge's /24 and a default route through the gateway. Each
/// host's `/etc/hosts` (through `ip netns exec`) names the gateway as `gateway_name` and every
/// host by its name. Removed on drop.
pub struct Lan {
    pub hosts: Vec<Netns>,
    /// The gateway's address (the test's side).
    pub gateway: String,
    bridge: String,
}

impl Lan {
    pub fn new(names: &[&str], gateway_name: &str) -> Lan {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let net = 100 + (pid * 7 + n) % 150;
        let bridge = format!("cwb{}", (pid % 100_000) * 10 + n % 10);
        let gateway = format!("10.231.{net}.1");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut lan = Lan {
            hosts: Vec::new(),
            gateway: gateway.clone(),
            bridge: bridge.clone(),
        };
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let addrs: Vec<String> = (0..names.len())
            .map(|i| format!("10.231.{net}.{}", i + 2))
            .collect();
        let mut hosts_file = format!("127.0.0.1 localhost\n{gateway} {gateway_name}\n");
        for (name, addr) in names.iter().zip(&addrs) {
            hosts_file.push_str(&format!("{addr} {name}\n"));
        }
        for (i, addr) in addrs.iter().enumerate() {
            let name = format!("cuttle-{pid}-lan{n}-{i}");
            let tag = (pid % 10_000) * 100 + n % 10 * 10 + i as u32;
            let (outer, inner) = (format!("cwl{tag}"), format!("cwm{tag}"));
            let etc = format!("/etc/netns/{name}");
            std::fs::create_dir_all(&etc).expect("/etc/netns");
            std::fs::write(format!("{etc}/hosts"), &hosts_file).expect("hosts file");
            let cidr = format!("{addr}/24");
            lan.hosts
                .push(Netns::plugged(&name, (&outer, &inner), &cidr, &gateway));
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.hosts.clear();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// The code block that follows `<!-- walkthrough: NAME -->` in a Markdown file (fenced or
/// indented four spaces), as written: the text a reader copies.
pub fn walkthrough_block(markdown: &str, name: &str) -> String {
    let marker = format!("<!-- walkthrough: {name} -->");
    let mut lines = markdown
        .lines()
        .skip_while(|l| l.trim() != marker)
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .peekable();
    let first = lines
        .peek()
        .unwrap_or_else(|| panic!("no code block after {marker}"))
        .to_owned();
    if first.trim_start().starts_with("```") {
        lines
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with("```"))
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        assert!(first.starts_with("    "), "no code block after {marker}");
        lines
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
            .collect()
    }
}
