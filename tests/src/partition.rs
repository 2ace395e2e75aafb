//! A network partition between a node and its database, made on demand: a TCP relay the node
//! connects through, which can stop carrying bytes — both ways, connections left open, nothing
//! refused or reset — exactly when a query is in flight, and carry them again later. From the
//! node's side that is a silent partition: a call waits for an answer that does not come.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    /// Cut right after the next request has been carried to the server.
    cut_after_next_request: AtomicBool,
    stopped: AtomicBool,
}

/// The relay. It stops on drop (its threads end within a moment).
pub struct Partition {
    /// Where the node connects instead of the database.
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// How often a blocked relay thread looks at the state again.
const LOOK: Duration = Duration::from_millis(20);

impl Partition {
    /// A relay to `server` on a free loopback port.
    pub fn to(server: SocketAddr) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(upstream) = TcpStream::connect(server) else {
                            continue;
                        };
                        client.set_nonblocking(false).unwrap();
                        for (from, to, requests) in [
                            (
                                client.try_clone().unwrap(),
                                upstream.try_clone().unwrap(),
                                true,
                            ),
                            (upstream, client, false),
                        ] {
                            let st = st.clone();
                            std::thread::spawn(move || pump(from, to, requests, &st));
                        }
                    }
                    Err(_) => std::thread::sleep(LOOK),
                }
            }
        });
        Partition { addr, state }
    }

    /// Cuts the link right after carrying the next request to the server: its answer, and
    /// everything after, waits until [`Partition::heal`].
    pub fn cut_mid_query(&self) {
        self.state
            .cut_after_next_request
            .store(true, Ordering::SeqCst);
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Carries bytes again, those held during the cut first.
    pub fn heal(&self) {
        self.state
            .cut_after_next_request
            .store(false, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.heal();
    }
}

/// Carries `from` to `to` until either closes. Reads time out every [`LOOK`], so a cut holds
/// what was read (and reads nothing more) until it heals.
fn pump(mut from: TcpStream, mut to: TcpStream, requests: bool, st: &State) {
    let _ = from.set_read_timeout(Some(LOOK));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if st.stopped.load(Ordering::Relaxed) {
            break;
        }
        if st.cut.load(Ordering::SeqCst) {
            std::thread::sleep(LOOK); // partitioned: nothing moves
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        // Bytes read just as the cut began wait for the heal, as a partition would hold them.
        while st.cut.load(Ordering::SeqCst) && !st.stopped.load(Ordering::Relaxed) {
            std::thread::sleep(LOOK);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if requests && st.cut_after_next_request.swap(false, Ordering::SeqCst) {
            st.cut.store(true, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
