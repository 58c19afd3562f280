//! Idle sessions without a thread: a readiness poller (epoll through mio) where a session
//! that has waited for its client for a while parks its socket and state, and gives its
//! thread back to the [pool](crate::pool). When the socket becomes readable (bytes, a close,
//! or the shutdown of its reading side) or the session's timeout is due, the poller hands the
//! session to a pool thread, which goes on where it stopped.
//!
//! A parked session costs its state (a few KiB: the core, its output queue, the handler,
//! the TLS state if any) and no thread, no stack and no CPU: the poller sleeps until an event
//! or the earliest deadline.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::pool::Pool;

/// A session that waits for input without a thread.
pub(crate) trait Parked: Send {
    /// Its socket.
    fn fd(&self) -> RawFd;
    /// Goes on, on a pool thread: input is there, or the deadline passed (or neither, rarely;
    /// the session then waits again).
    fn resume(self: Box<Self>);
}

const WAKE: Token = Token(0);

/// The poller of parked sessions (one per running [`Server`](crate::Server)).
pub(crate) struct Idle {
    registry: Registry,
    waker: Waker,
    state: Mutex<State>,
}

struct Entry {
    session: Box<dyn Parked>,
    deadline: Option<Instant>,
}

struct State {
    parked: HashMap<usize, Entry>,
    /// Deadlines of parked sessions, with their tokens.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The next token (never reused, so that a late event cannot reach another session).
    next: usize,
    /// When the poller wakes by itself at the latest (`None`: only for an event).
    wake_by: Option<Instant>,
    /// The server is done: the poller exits once nothing is parked.
    stopping: bool,
}

impl Idle {
    /// Starts the poller thread, which hands ready sessions to `pool`.
    pub(crate) fn start(pool: Arc<Pool>) -> io::Result<(Arc<Self>, JoinHandle<()>)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let idle = Arc::new(Self {
            registry,
            waker,
            state: Mutex::new(State {
                parked: HashMap::new(),
                deadlines: BTreeSet::new(),
                next: 1,
                wake_by: None,
                stopping: false,
            }),
        });
        let me = idle.clone();
        let thread = thread::Builder::new().name("smtp-idle".into()).spawn(move || me.run(poll, &pool))?;
        Ok((idle, thread))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `session` until its socket is readable or `deadline`. Gives it back when it
    /// cannot be parked (the poller is stopping, or the registration failed): it then waits
    /// on its thread.
    pub(crate) fn park<P: Parked + 'static>(&self, session: Box<P>, deadline: Option<Instant>) -> Result<(), Box<P>> {
        let fd = session.fd();
        let mut st = self.lock();
        if st.stopping {
            return Err(session);
        }
        let token = st.next;
        st.next += 1;
        // Under the lock: an event that comes at once finds the entry.
        if let Err(e) = self.registry.register(&mut SourceFd(&fd), Token(token), Interest::READABLE) {
            tracing::warn!("cannot park an idle session: {e}");
            return Err(session);
        }
        st.parked.insert(token, Entry { session, deadline });
        let wake = match deadline {
            Some(d) => {
                st.deadlines.insert((d, token));
                st.wake_by.is_none_or(|w| d < w)
            }
            None => false,
        };
        drop(st);
        if wake {
            // The poller sleeps past this deadline: it must look again.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// How many sessions are parked.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.lock().parked.len()
    }

    /// Lets the poller thread exit once nothing is parked.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        let _ = self.waker.wake();
    }

    fn run(&self, mut poll: Poll, pool: &Arc<Pool>) {
        let mut events = Events::with_capacity(1024);
        let mut ready = Vec::new();
        loop {
            let timeout = {
                let mut st = self.lock();
                if st.stopping && st.parked.is_empty() {
                    return;
                }
                st.wake_by = st.deadlines.first().map(|&(d, _)| d);
                st.wake_by.map(|d| d.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("idle sessions' poller: {e}");
                    thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            {
                let mut st = self.lock();
                for ev in events.iter().filter(|ev| ev.token() != WAKE) {
                    if let Some(entry) = st.parked.remove(&ev.token().0) {
                        if let Some(d) = entry.deadline {
                            st.deadlines.remove(&(d, ev.token().0));
                        }
                        ready.push(entry.session);
                    }
                }
                let now = Instant::now();
                while let Some(&(d, token)) = st.deadlines.first() {
                    if d > now {
                        break;
                    }
                    st.deadlines.pop_first();
                    if let Some(entry) = st.parked.remove(&token) {
                        ready.push(entry.session);
                    }
                }
            }
            for session in ready.drain(..) {
                let _ = self.registry.deregister(&mut SourceFd(&session.fd()));
                if let Err(e) = pool.submit(Box::new(move || session.resume())) {
                    tracing::error!("cannot resume an idle session ({e}): closed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Fake {
        socket: TcpStream,
        resumed: mpsc::Sender<&'static str>,
        name: &'static str,
    }

    impl Parked for Fake {
        fn fd(&self) -> RawFd {
            self.socket.as_raw_fd()
        }
        fn resume(self: Box<Self>) {
            self.resumed.send(self.name).unwrap();
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (a, l.accept().unwrap().0)
    }

    #[test]
    fn a_parked_session_resumes_on_input_or_at_its_deadline() {
        let pool = Pool::new(256 * 1024);
        let (idle, poller) = Idle::start(pool.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        let (mut input_client, input) = pair();
        let (_silent_client, silent) = pair();
        let (_late_client, late) = pair();
        let far = Instant::now() + Duration::from_secs(3600);
        let ok = |r: Result<(), Box<Fake>>| assert!(r.is_ok());
        ok(idle.park(Box::new(Fake { socket: input, resumed: tx.clone(), name: "input" }), Some(far)));
        ok(idle.park(Box::new(Fake { socket: silent, resumed: tx.clone(), name: "silent" }), None));
        assert_eq!(idle.parked(), 2);
        // Bytes resume the first.
        input_client.write_all(b"NOOP\r\n").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "input");
        // A deadline earlier than any the poller sleeps towards wakes it.
        ok(idle.park(Box::new(Fake { socket: late, resumed: tx, name: "deadline" }), Some(Instant::now())));
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "deadline");
        assert_eq!(idle.parked(), 1);
        // Stopping waits for the parked to leave; the silent one's peer closes.
        idle.stop();
        drop(_silent_client);
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "silent");
        poller.join().unwrap();
        pool.close();
    }
}
