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
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            address: ns_side.clone(),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["addr", "add", &format!("{host_side}/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_side}/30"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "route", "add", "default", "via", &host_side]);
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
