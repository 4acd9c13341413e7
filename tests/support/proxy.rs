//! A TCP proxy on loopback between pgbridge and a server, for network faults: it can drop every
//! connection at once (`cut`), or stop forwarding while keeping the connections open (`stall`),
//! as a partition that loses no packets but delivers none either.
//!
//! Plain threads and blocking sockets: two pump threads per connection, each reading with a
//! short timeout so that it notices a stall, a cut or the proxy's end.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often a pump checks its flags while idle or stalled.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    stalled: AtomicBool,
    closing: AtomicBool,
    /// Both sockets of every live connection (id, client side, server side).
    conns: Mutex<Vec<(usize, TcpStream, TcpStream)>>,
    accepted: AtomicUsize,
}

pub struct Proxy {
    port: u16,
    state: Arc<State>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let state = Arc::new(State::default());
        let acceptor = {
            let state = state.clone();
            thread::spawn(move || accept_loop(listener, target, state))
        };
        Proxy {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every current connection (both directions, at once).
    pub fn cut(&self) {
        let conns = std::mem::take(&mut *self.state.conns.lock().unwrap());
        for (_, client, server) in conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions; connections stay open
    /// and new ones are accepted but carry nothing while stalled.
    pub fn stall(&self, on: bool) {
        self.state.stalled.store(on, Ordering::SeqCst);
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: u16, state: Arc<State>) {
    while !state.closing.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let id = state.accepted.fetch_add(1, Ordering::SeqCst);
        for s in [&client, &server] {
            let _ = s.set_nonblocking(false);
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(POLL));
        }
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        state.conns.lock().unwrap().push((id, c3, s3));
        let up = state.clone();
        thread::spawn(move || pump(id, client, server, up));
        let down = state.clone();
        thread::spawn(move || pump(id, s2, c2, down));
    }
}

/// Copies `from` to `to` until either side ends, then closes both.
fn pump(id: usize, mut from: TcpStream, mut to: TcpStream, state: Arc<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.closing.load(Ordering::SeqCst) {
            break;
        }
        if state.stalled.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    state.conns.lock().unwrap().retain(|(i, _, _)| *i != id);
}
