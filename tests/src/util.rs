use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed on drop unless `CUTTLE_TEST_KEEP` is set.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CUTTLE_TEST_KEEP").is_some() {
            #[allow(clippy::print_stderr)] // the test runner shows it next to the failure
            {
                eprintln!("keeping {}", self.path.display());
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A fresh, empty, world-traversable temporary directory.
pub fn temp_dir(prefix: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "cuttle-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create temp dir");
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    TempDir { path }
}

/// A loopback port that was free a moment ago and is this process's until it exits.
///
/// Chosen below the kernel's ephemeral range (32768–60999 by default): a port the kernel hands
/// out for `bind(0)` is also handed to outgoing connections, which can take it before the server
/// that was meant to get it binds. Reserved across test processes by a lock on a file named
/// after it, held until this process exits (the kernel drops the lock then, however it ends):
/// a node restarted on its old ports always gets them back, since no other test can take them
/// while it is down.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let locks = std::env::temp_dir().join("cuttle-test-ports");
    std::fs::create_dir_all(&locks).expect("create the port reservation folder");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 20);
    loop {
        // Spread over the range per process (pid and time), stepping on within it.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut x = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        let port = (LOW + x % SPAN) as u16;
        let Ok(file) = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(port.to_string()))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
            return port;
        }
    }
}

/// Sets its flag when dropped, a panic's unwinding included. Helper threads of a
/// `std::thread::scope` that loop until the flag is set then stop, so the scope can join them
/// and a failing test fails instead of waiting for them forever.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Polls `cond` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The process id a test script wrote to `path` (`echo $! > path`), once the script has shown
/// it started.
pub fn read_pid(path: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read pid file {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {} holds {text:?}", path.display()))
}

/// True once process `pid` has exited (a zombie awaiting its parent counts as exited).
pub fn process_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The command name (field 2) may hold spaces: the state follows its ')'.
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        })
        .unwrap_or(true)
}

/// Lifts this test process's open-file limit to its hard limit: for tests that hold many
/// connections at once (the default soft limit, 1,024, is a few hundred too few).
pub fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Live processes on this host whose command line is exactly `argv`: how a test finds a
/// script's process from outside its sandbox (inside, process ids are the sandbox's own). Give
/// each test's script a command line no other test uses (`sleep 600.17`).
pub fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|pid| !process_gone(*pid))
        .collect()
}

/// The one process running `argv` (see [`processes_running`]), once it runs.
pub fn wait_for_process(argv: &[&str], timeout: Duration) -> i32 {
    wait_until(
        &format!("a process running {argv:?}"),
        timeout,
        || match processes_running(argv).as_slice() {
            [pid] => Some(*pid),
            _ => None,
        },
    )
}

/// Parses the API's RFC 3339 UTC times (`2026-11-26T07:35:00.123Z`) to Unix milliseconds, so
/// tests and benchmarks can compare the database-clock times the API reports.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + frac.parse::<i64>().ok()?)
}

/// The tests' Python (`CUTTLE_TEST_PYTHON`, made by scripts/test.sh from tests/requirements.txt).
pub fn test_python() -> std::path::PathBuf {
    match std::env::var_os("CUTTLE_TEST_PYTHON") {
        Some(p) => std::path::PathBuf::from(p),
        None => panic!(
            "CUTTLE_TEST_PYTHON is not set: scripts/test.sh makes a Python environment with \
             tests/requirements.txt and sets it (or: python3 -m venv target/test-python && \
             target/test-python/bin/pip install -r tests/requirements.txt)"
        ),
    }
}

/// Prints a line the test runner shows with the test's output: seeds, counts, figures.
#[allow(clippy::print_stderr)]
pub fn report(line: impl std::fmt::Display) {
    eprintln!("{line}");
}

/// A small seeded generator (xorshift64) for tests that act at random points. The seed comes
/// from `CUTTLE_TEST_SEED` or the clock and is reported, so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("CUTTLE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        report(format!(
            "seed {seed} (set CUTTLE_TEST_SEED={seed} to replay)"
        ));
        Rng(seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The processes whose parent is `parent`, from `/proc`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_the_api_prints() {
        assert_eq!(super::parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            super::parse_rfc3339_ms("2000-02-29T12:34:56.789Z"),
            Some(951_827_696_789)
        );
        assert_eq!(
            super::parse_rfc3339_ms("2026-11-26T07:35:00.001Z"),
            Some(1_795_678_500_001)
        );
        assert_eq!(super::parse_rfc3339_ms("yesterday"), None);
    }
}
