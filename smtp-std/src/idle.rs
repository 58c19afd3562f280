//! Sessions waiting for input without a thread: one epoll instance where a session that finds
//! no input parks its socket and state, and the pool threads that wait on it (the *pollers*)
//! take up whichever session has input, on their own stack — a leader/follower readiness
//! loop.
//!
//! A session runs on a pool thread while it has input: it reads, feeds the core, calls its
//! [`Handler`](crate::Handler), writes replies. When a read finds nothing
//! ([`Options::park_idle_sessions_after`](crate::Options::park_idle_sessions_after): at once
//! by default, or after a delay on its own thread) it parks here with its deadline, and its
//! thread becomes a poller or goes back to the pool. A poller that gets an event runs that
//! session itself — no hand-off to another thread, so a round trip costs the one wake-up of
//! the reply's arrival, and none at all when a poller comes back to find input already waiting
//! (a busy server) — and if it was the last poller, a follower from the pool takes over the
//! waiting first: a handler that blocks (a DNS lookup, an fsync) holds up its own session only.
//!
//! Each socket is in the epoll interest list once, `EPOLLONESHOT`: an event disarms it, so two
//! pollers never get the same session, and a park re-arms it (`EPOLL_CTL_MOD`, which reports
//! input that came in between). A parked session costs its state (a few KiB: the core, its
//! output queue, the handler, the TLS state if any) and no thread, no stack and no CPU.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::pool::{Job, Pool};

/// A session that waits for input without a thread.
pub(crate) trait Parked: Send {
    /// Its socket.
    fn socket(&self) -> &TcpStream;
    /// What tells it from every other session of the server, for its whole life.
    fn key(&self) -> u64;
    /// Whether its socket is in the poller's interest list (set by its first park).
    fn watched(&mut self) -> &mut bool;
    /// Goes on, on a pollers' or pool thread: input is there, or the deadline passed (or
    /// neither, rarely; the session then parks again).
    fn resume(self: Box<Self>);
}

/// What a listener's acceptor did with one readiness event.
pub(crate) enum Accepting {
    /// A connection to serve (on the poller's thread, at once).
    Serve(Job),
    /// Nothing to serve (no connection after all, or one refused): wait for the next.
    Again,
    /// The server stops: the listener is not watched any more.
    Stop,
}

/// A listening socket whose connections the pollers accept, and the server's code that
/// accepts one (its limits, its refusals) and makes the job that serves it.
pub(crate) struct Listener {
    /// Non-blocking.
    pub(crate) socket: TcpListener,
    pub(crate) accept: Box<dyn Fn(&TcpListener) -> Accepting + Send + Sync>,
}

/// Work a poller takes up.
enum Work {
    Session(Box<dyn Parked>),
    Job(Job),
}

/// The longest a poller sleeps: it then notices deadlines earlier than the one it slept
/// towards (those of sessions parked meanwhile) and [`Idle::stop`]. A few wake-ups a second
/// in all, whatever the number of sessions.
const TICK: Duration = Duration::from_millis(250);

/// The poller of parked sessions (one per running [`Server`](crate::Server)).
pub(crate) struct Idle {
    epoll: Epoll,
    pool: Arc<Pool>,
    /// Most threads waiting on `epoll` at once; a thread that finds this many goes back to
    /// the pool.
    max_pollers: usize,
    state: Mutex<State>,
}

struct Entry {
    session: Box<dyn Parked>,
    deadline: Option<Instant>,
}

struct State {
    parked: HashMap<u64, Entry>,
    /// Listeners, by key (counting down from `u64::MAX`; sessions count up from 1).
    listeners: HashMap<u64, Arc<Listener>>,
    /// Deadlines of parked sessions, with their keys.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Threads waiting on the epoll instance, or on their way to it.
    pollers: usize,
    /// The server is done: pollers exit once nothing is parked.
    stopping: bool,
}

impl State {
    fn take(&mut self, key: u64) -> Option<Box<dyn Parked>> {
        let entry = self.parked.remove(&key)?;
        if let Some(d) = entry.deadline {
            self.deadlines.remove(&(d, key));
        }
        Some(entry.session)
    }
}

impl Idle {
    /// The poller, with its first polling thread from `pool`.
    pub(crate) fn start(pool: Arc<Pool>) -> io::Result<Arc<Self>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let idle = Arc::new(Self {
            epoll,
            pool,
            max_pollers: cores.max(2),
            state: Mutex::new(State {
                parked: HashMap::new(),
                listeners: HashMap::new(),
                deadlines: BTreeSet::new(),
                pollers: 1,
                stopping: false,
            }),
        });
        let me = idle.clone();
        if let Err(e) = idle.pool.submit(Box::new(move || me.poll())) {
            idle.lock().pollers = 0;
            return Err(e);
        }
        Ok(idle)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `session` until its socket is readable or `deadline`. Gives it back when it
    /// cannot be parked (the poller is stopping, or the registration failed): it then waits
    /// on its thread.
    pub(crate) fn park<P: Parked + 'static>(
        &self,
        mut session: Box<P>,
        deadline: Option<Instant>,
    ) -> Result<(), Box<P>> {
        let key = session.key();
        let mut st = self.lock();
        if st.stopping {
            return Err(session);
        }
        // Under the lock: a poller that gets the event at once waits for the entry.
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        let mut event = EpollEvent::new(flags, key);
        let armed = if *session.watched() {
            self.epoll.modify(session.socket(), &mut event)
        } else {
            self.epoll.add(session.socket(), event)
        };
        if let Err(e) = armed {
            tracing::warn!("cannot park a session: {e}");
            return Err(session);
        }
        *session.watched() = true;
        st.parked.insert(key, Entry { session, deadline });
        if let Some(d) = deadline {
            st.deadlines.insert((d, key));
        }
        Ok(())
    }

    /// Watches `listener`: the pollers accept its connections and serve them.
    pub(crate) fn listen(&self, listener: Listener) -> io::Result<()> {
        let mut st = self.lock();
        let key = u64::MAX - st.listeners.len() as u64;
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, key);
        // Under the lock: a poller that gets the event at once waits for the entry.
        self.epoll.add(&listener.socket, event)?;
        st.listeners.insert(key, Arc::new(listener));
        Ok(())
    }

    /// Stops watching the listeners (their sockets close once no poller uses them).
    pub(crate) fn unlisten(&self) {
        let listeners: Vec<_> = self.lock().listeners.drain().collect();
        for (_, l) in listeners {
            let _ = self.epoll.delete(&l.socket);
        }
    }

    /// How many sessions are parked.
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        self.lock().parked.len()
    }

    /// Gives this thread to the poller if it has fewer than it can use; returns when the
    /// thread is not needed (any more). For a pool job that has served a session.
    pub(crate) fn lend(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.pollers >= self.max_pollers || st.stopping {
                return;
            }
            st.pollers += 1;
        }
        self.clone().poll();
    }

    /// Lets the pollers exit once nothing is parked, and waits for them (a second at most).
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        let until = Instant::now() + 4 * TICK;
        while self.lock().pollers > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A poller's loop: wait for a session with input (or past its deadline), serve it on this
    /// thread, wait again; until the poller has enough threads or stops.
    fn poll(self: Arc<Self>) {
        let mut events = [EpollEvent::empty()];
        loop {
            let timeout = {
                let mut st = self.lock();
                if st.stopping && st.parked.is_empty() {
                    st.pollers -= 1;
                    return;
                }
                let now = Instant::now();
                let next = st.deadlines.first().map_or(TICK, |&(d, _)| d.saturating_duration_since(now));
                // Whole milliseconds, rounded up: a deadline is never polled for in a loop.
                let ms = next.min(TICK).as_micros().div_ceil(1000);
                u16::try_from(ms).unwrap_or(u16::MAX)
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!("the sessions' poller: {e}");
                    thread::sleep(Duration::from_millis(50));
                    0
                }
            };
            let mut st = self.lock();
            let mut mine = None;
            if n > 0 {
                let key = events[0].data();
                if let Some(listener) = st.listeners.get(&key).cloned() {
                    drop(st);
                    let accepted = (listener.accept)(&listener.socket);
                    if !matches!(accepted, Accepting::Stop) {
                        // One connection per event; more waiting report at once.
                        let mut event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, key);
                        let _ = self.epoll.modify(&listener.socket, &mut event);
                    }
                    drop(listener);
                    st = self.lock();
                    if let Accepting::Serve(job) = accepted {
                        mine = Some(Work::Job(job));
                    }
                } else {
                    mine = st.take(key).map(Work::Session);
                }
            }
            let now = Instant::now();
            let mut late = Vec::new();
            while let Some(&(d, key)) = st.deadlines.first() {
                if d > now {
                    break;
                }
                late.extend(st.take(key));
            }
            if mine.is_none() {
                mine = late.pop().map(Work::Session);
            }
            let Some(work) = mine else { continue };
            // This thread leaves the poller to do `work`; if it was the last one, a follower
            // takes over the waiting (counted from now).
            let follow = st.pollers == 1;
            if !follow {
                st.pollers -= 1;
            }
            drop(st);
            if follow {
                let me = self.clone();
                if let Err(e) = self.pool.submit(Box::new(move || me.poll())) {
                    tracing::error!("no thread to wait for sessions' input ({e}): this one stays");
                    match work {
                        Work::Session(s) => late.push(s),
                        Work::Job(job) => {
                            if let Err(e) = self.pool.submit(job) {
                                tracing::error!("cannot serve a connection ({e}): closed");
                            }
                        }
                    }
                    self.resume_elsewhere(late);
                    continue;
                }
            }
            self.resume_elsewhere(late);
            // A panicking handler ends its session (its guards drop on the way), not the
            // poller; the panic hook has reported it.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || match work {
                Work::Session(session) => session.resume(),
                Work::Job(job) => job(),
            }));
            let mut st = self.lock();
            if st.pollers >= self.max_pollers || (st.stopping && st.parked.is_empty()) {
                return;
            }
            st.pollers += 1;
        }
    }

    /// Resumes sessions on pool threads (more than one came due at once).
    fn resume_elsewhere(self: &Arc<Self>, sessions: Vec<Box<dyn Parked>>) {
        for session in sessions {
            let me = self.clone();
            if let Err(e) = self.pool.submit(Box::new(move || {
                session.resume();
                me.lend();
            })) {
                tracing::error!("cannot resume a session ({e}): closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;

    struct Fake {
        socket: TcpStream,
        resumed: mpsc::Sender<&'static str>,
        name: &'static str,
        key: u64,
        watched: bool,
    }

    impl Parked for Fake {
        fn socket(&self) -> &TcpStream {
            &self.socket
        }
        fn key(&self) -> u64 {
            self.key
        }
        fn watched(&mut self) -> &mut bool {
            &mut self.watched
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
        let idle = Idle::start(pool.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        let (mut input_client, input) = pair();
        let (_silent_client, silent) = pair();
        let (_late_client, late) = pair();
        let far = Instant::now() + Duration::from_secs(3600);
        let fake = |socket, name, key| Box::new(Fake { socket, resumed: tx.clone(), name, key, watched: false });
        assert!(idle.park(fake(input, "input", 1), Some(far)).is_ok());
        assert!(idle.park(fake(silent, "silent", 2), None).is_ok());
        assert_eq!(idle.parked(), 2);
        // Bytes resume the first.
        input_client.write_all(b"NOOP\r\n").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "input");
        // A deadline earlier than any the pollers sleep towards is met.
        assert!(idle.park(fake(late, "deadline", 3), Some(Instant::now())).is_ok());
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "deadline");
        assert_eq!(idle.parked(), 1);
        // Stopping waits for the parked to leave; the silent one's peer closes.
        drop(_silent_client);
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "silent");
        idle.stop();
        assert_eq!(idle.lock().pollers, 0, "pollers left after stop");
        pool.close();
    }

    /// A session that comes back to the test when resumed, to be parked again.
    struct Again {
        socket: TcpStream,
        back: mpsc::Sender<Box<Again>>,
        watched: bool,
    }

    impl Parked for Again {
        fn socket(&self) -> &TcpStream {
            &self.socket
        }
        fn key(&self) -> u64 {
            7
        }
        fn watched(&mut self) -> &mut bool {
            &mut self.watched
        }
        fn resume(self: Box<Self>) {
            self.back.clone().send(self).unwrap();
        }
    }

    #[test]
    fn a_session_parked_again_is_rearmed_and_input_between_is_not_lost() {
        use std::io::Read;
        let pool = Pool::new(256 * 1024);
        let idle = Idle::start(pool.clone()).unwrap();
        let (back, comes_back) = mpsc::channel();
        let (mut client, server) = pair();
        server.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut session = Box::new(Again { socket: server, back, watched: false });
        for round in 0..5u8 {
            // Input that came before the park (after the session's last read) resumes it.
            client.write_all(&[round]).unwrap();
            assert!(idle.park(session, None).is_ok());
            session = comes_back.recv_timeout(Duration::from_secs(20)).expect("not resumed");
            assert!(session.watched, "round {round}");
            let mut b = [0u8; 1];
            session.socket.read_exact(&mut b).unwrap();
            assert_eq!(b[0], round);
        }
        // Parked without input, it stays parked.
        assert!(idle.park(session, None).is_ok());
        assert!(comes_back.recv_timeout(TICK * 2).is_err());
        assert_eq!(idle.parked(), 1);
        drop(client);
        let session = comes_back.recv_timeout(Duration::from_secs(20)).expect("a close resumes it");
        drop(session);
        idle.stop();
        pool.close();
    }
}
