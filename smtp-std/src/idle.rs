//! Sessions waiting for input without a thread: one epoll instance where a session that finds
//! no input parks its socket and state, and the pool threads that look at it (the *pollers*)
//! take up whichever session has input, on their own stack.
//!
//! A session runs on a pool thread while it has input: it reads, feeds the core, calls its
//! [`Handler`](crate::Handler), writes replies. When a read finds nothing
//! ([`Options::park_idle_sessions_after`](crate::Options::park_idle_sessions_after): at once
//! by default, or after a delay on its own thread) it parks here with its deadline. A poller
//! that gets an event runs that session itself — no hand-off to another thread — then looks
//! for the next without sleeping; it sleeps on the epoll instance only when nothing is ready
//! and no other poller sleeps there (else it goes back to the pool). So a busy server is one
//! thread going from session to session, as an event loop would, and sleeps and wake-ups come
//! only when the input runs dry: with 20 clients sending without pause, 0.14 context switches
//! per message, where a sleeping follower for every event taken cost 0.6–0.9.
//!
//! A handler that blocks (a DNS lookup, an fsync, a password hash) holds up the poller it runs
//! on. It says so with [`will_block`], and another thread takes over the waiting at once; if it
//! does not, the *watchdog* (a thread that looks every [`WATCH`] while a poller runs work)
//! starts another poller when the running ones finished nothing for a whole look, and also when
//! none slept for a whole look (the input outruns them; up to one poller per core).
//!
//! Each socket goes into the epoll interest list at its first park, edge-triggered, and stays
//! there until its session ends ([`Idle::forget`]): a park costs no system call. An event for a
//! session that is not parked (it runs: input came after its last read) is kept as *pending*
//! under the same lock that parks, and its park then hands it back to go on reading
//! ([`Unparked::Input`]), so no input is lost between a read and a park, and two pollers
//! never get the same session. A session parks once a read found its socket empty, or, on
//! plain TCP, came back short after an event that reported input alone: the kernel computes
//! an event's flags when it hands it over, so a FIN already there shows as `EPOLLRDHUP` (the
//! session then reads to the end), and one that comes later raises an edge of its own.
//!
//! A parked session costs its state (a few KiB: the core, its output queue, the handler, the
//! TLS state if any) and no thread, no stack and no CPU.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, Thread};
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
    /// neither, rarely; the session then parks again). `ended`: the event said more than
    /// "input" (the client's FIN, a reset): the session reads until its socket has nothing,
    /// whatever its reads return.
    fn resume(self: Box<Self>, ended: bool);
}

/// Why [`Idle::park`] gave a session back.
pub(crate) enum Unparked<P> {
    /// Input came since its last read: it goes on.
    Input(Box<P>),
    /// It cannot be parked (the poller stops, or its registration failed): it waits on its
    /// thread from now on.
    Refused(Box<P>),
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

thread_local! {
    /// The poller whose work this thread runs, until its handler says it will block.
    static RUNNING: RefCell<Option<Arc<Idle>>> = const { RefCell::new(None) };
}

/// Tells the server that the [`Handler`](crate::Handler) running on this thread is about to
/// block: a DNS lookup, an fsync, a call to another server. If its session runs on the
/// thread that would otherwise wait for the other sessions' input, another thread takes over
/// that waiting at once, so that the others are not held up (without the call, a watchdog
/// does the same within a few milliseconds). Does nothing anywhere else, or when called again
/// for the same input.
///
/// ```
/// use smtp_std::{Decision, Handler, Session};
///
/// #[derive(Clone)]
/// struct Checked;
///
/// impl Handler for Checked {
///     fn helo(&mut self, _session: &Session, host: &str) -> Decision {
///         smtp_std::will_block();
///         let known = std::net::ToSocketAddrs::to_socket_addrs(&(host, 25)).is_ok(); // DNS
///         if known { Decision::Accept } else { Decision::reply(550, Some((5, 7, 1)), "who?") }
///     }
/// }
/// ```
pub fn will_block() {
    if let Some(idle) = RUNNING.with(|r| r.borrow_mut().take()) {
        let st = idle.lock();
        if st.waiting == 0 && !st.stopping {
            idle.follower(st);
        }
    }
}

/// Work a poller takes up.
enum Work {
    /// With whether its event said more than "input" ([`Parked::resume`]).
    Session(Box<dyn Parked>, bool),
    Job(Job),
}

/// The longest a poller sleeps: it then notices deadlines earlier than the one it slept
/// towards (those of sessions parked meanwhile) and [`Idle::stop`]. A few wake-ups a second
/// in all, whatever the number of sessions.
const TICK: Duration = Duration::from_millis(250);

/// How often the watchdog looks at the pollers while one runs work: the longest a session's
/// input waits behind a handler that blocks (a DNS lookup, an fsync) on the only poller's
/// thread is about two of these.
pub(crate) const WATCH: Duration = Duration::from_millis(2);

/// Looks without work (every poller waiting) after which the watchdog sleeps until a poller
/// takes work again.
const WATCH_QUIET: u32 = 50;

/// The poller of parked sessions (one per running [`Server`](crate::Server)).
pub(crate) struct Idle {
    epoll: Epoll,
    pool: Arc<Pool>,
    /// Most pollers the watchdog starts for a backlog (one per core); pollers it starts for
    /// one that is stuck come on top.
    max_pollers: usize,
    state: Mutex<State>,
    /// The watchdog's thread (to wake it).
    watchdog: OnceLock<Thread>,
    /// How often the watchdog looks ([`WATCH`]).
    watch: Duration,
}

struct Entry {
    session: Box<dyn Parked>,
    deadline: Option<Instant>,
}

struct State {
    parked: HashMap<u64, Entry>,
    /// Sessions in the interest list, with whether input came while they were not parked.
    watched: HashMap<u64, bool>,
    /// Listeners, by key (counting down from `u64::MAX`; sessions count up from 1).
    listeners: HashMap<u64, Arc<Listener>>,
    /// Deadlines of parked sessions, with their keys.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Threads in a poller's loop: waiting on the epoll instance, looking at it, or running
    /// what it gave them.
    pollers: usize,
    /// Of them, those sleeping on the epoll instance (or on their way to it): one at most,
    /// but for a moment.
    waiting: usize,
    /// Work the pollers finished, in all: the watchdog's sign that they are not stuck.
    done: u64,
    /// Sleeps the pollers began, in all: the watchdog's sign that they keep up.
    slept: u64,
    /// The watchdog sleeps until a poller takes work (and wakes it).
    watchdog_asleep: bool,
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
    /// The poller, with its first polling thread from `pool`, and its watchdog.
    pub(crate) fn start(pool: Arc<Pool>) -> io::Result<Arc<Self>> {
        Self::start_watching(pool, WATCH)
    }

    /// [`Idle::start`] with the watchdog looking `every` so often.
    fn start_watching(pool: Arc<Pool>, every: Duration) -> io::Result<Arc<Self>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let idle = Arc::new(Self {
            epoll,
            pool,
            max_pollers: cores,
            state: Mutex::new(State {
                parked: HashMap::new(),
                watched: HashMap::new(),
                listeners: HashMap::new(),
                deadlines: BTreeSet::new(),
                pollers: 1,
                waiting: 0,
                done: 0,
                slept: 0,
                watchdog_asleep: false,
                stopping: false,
            }),
            watchdog: OnceLock::new(),
            watch: every,
        });
        let weak = Arc::downgrade(&idle);
        let watchdog = thread::Builder::new().name("smtp-watchdog".into()).spawn(move || watch(weak));
        let me = idle.clone();
        let first = watchdog.and_then(|w| {
            let _ = idle.watchdog.set(w.thread().clone());
            idle.pool.submit(Box::new(move || me.poll()))
        });
        if let Err(e) = first {
            let mut st = idle.lock();
            st.pollers = 0;
            st.stopping = true;
            drop(st);
            idle.wake_watchdog();
            return Err(e);
        }
        Ok(idle)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_watchdog(&self) {
        if let Some(w) = self.watchdog.get() {
            w.unpark();
        }
    }

    /// Parks `session` until its socket is readable or `deadline`; its last read found the
    /// socket empty. Gives it back when input came since, or when it cannot be parked.
    pub(crate) fn park<P: Parked + 'static>(
        &self,
        mut session: Box<P>,
        deadline: Option<Instant>,
    ) -> Result<(), Unparked<P>> {
        let key = session.key();
        let mut st = self.lock();
        if st.stopping {
            return Err(Unparked::Refused(session));
        }
        if *session.watched() {
            if st.watched.insert(key, false) == Some(true) {
                return Err(Unparked::Input(session));
            }
        } else {
            // Under the lock: a poller that gets the event at once waits for the entry. (An
            // event for input already there is reported at once.)
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
            if let Err(e) = self.epoll.add(session.socket(), EpollEvent::new(flags, key)) {
                tracing::warn!("cannot park a session: {e}");
                return Err(Unparked::Refused(session));
            }
            *session.watched() = true;
            st.watched.insert(key, false);
        }
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

    /// Takes a session that ends out of the interest list (when it was parked once).
    pub(crate) fn forget<P: Parked>(&self, session: &mut P) {
        if std::mem::take(session.watched()) {
            let mut st = self.lock();
            st.watched.remove(&session.key());
            // Under the lock: no event for it is taken after this.
            let _ = self.epoll.delete(session.socket());
        }
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

    /// Gives this thread to the poller if no poller waits and it has fewer than it can use;
    /// returns when the thread is not needed (any more). For a pool job that has served a
    /// session.
    pub(crate) fn lend(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.waiting > 0 || st.pollers >= self.max_pollers || st.stopping {
                return;
            }
            st.pollers += 1;
        }
        self.clone().poll();
    }

    /// Lets the pollers exit once nothing is parked, and waits for them (a second at most).
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.wake_watchdog();
        let until = Instant::now() + 4 * TICK;
        while self.lock().pollers > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A poller's loop: take a session with input (or past its deadline), serve it on this
    /// thread, look for the next; sleep on the epoll instance when nothing is ready and no
    /// other poller sleeps there (else leave: one sleeping poller is enough, and a single
    /// poller that keeps finding input wakes nobody). A handler that blocks holds up the
    /// poller that runs it; the watchdog then starts another ([`watch`]).
    fn poll(self: Arc<Self>) {
        let mut events = [EpollEvent::empty()];
        // Whether the last look found nothing: sleep this time.
        let mut sleep = false;
        // Whether this thread finished a piece of work it has not counted yet (counted under
        // the next lock it takes anyway).
        let mut finished = false;
        loop {
            let timeout = {
                let mut st = self.lock();
                if std::mem::take(&mut finished) {
                    st.done += 1;
                }
                if st.stopping && st.parked.is_empty() {
                    st.pollers -= 1;
                    return;
                }
                if !sleep {
                    0
                } else if st.waiting > 0 {
                    st.pollers -= 1;
                    return;
                } else {
                    st.waiting += 1;
                    st.slept += 1;
                    let now = Instant::now();
                    let next = st.deadlines.first().map_or(TICK, |&(d, _)| d.saturating_duration_since(now));
                    // Whole milliseconds, rounded up: a deadline is never polled for in a loop.
                    let ms = next.min(TICK).as_micros().div_ceil(1000);
                    u16::try_from(ms).unwrap_or(u16::MAX)
                }
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
            if sleep {
                st.waiting -= 1;
            }
            let mut mine = None;
            if n > 0 {
                let key = events[0].data();
                let ended = events[0].events() != EpollFlags::EPOLLIN;
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
                    mine = st.take(key).map(|s| Work::Session(s, ended));
                    if mine.is_none() {
                        // It runs: its next park finds the input.
                        if let Some(pending) = st.watched.get_mut(&key) {
                            *pending = true;
                        }
                    }
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
                mine = late.pop().map(|s| Work::Session(s, false));
            }
            let Some(work) = mine else {
                sleep = n == 0;
                continue;
            };
            sleep = false;
            let wake = std::mem::take(&mut st.watchdog_asleep);
            drop(st);
            if wake {
                self.wake_watchdog();
            }
            self.resume_elsewhere(late);
            // A panicking handler ends its session (its guards drop on the way), not the
            // poller; the panic hook has reported it.
            RUNNING.with(|r| *r.borrow_mut() = Some(self.clone()));
            let _ = panic::catch_unwind(AssertUnwindSafe(move || match work {
                Work::Session(session, ended) => session.resume(ended),
                Work::Job(job) => job(),
            }));
            RUNNING.with(|r| r.borrow_mut().take());
            finished = true;
        }
    }

    /// Resumes sessions on pool threads (more than one came due at once).
    fn resume_elsewhere(self: &Arc<Self>, sessions: Vec<Box<dyn Parked>>) {
        for session in sessions {
            let me = self.clone();
            if let Err(e) = self.pool.submit(Box::new(move || {
                session.resume(false);
                me.lend();
            })) {
                tracing::error!("cannot resume a session ({e}): closed");
            }
        }
    }

    /// One look of the watchdog: starts a poller when none sleeps on the epoll instance and
    /// those running work are stuck (none finished any since `last`) or cannot keep up (none
    /// slept since `last`, below [`Idle::max_pollers`]). Returns the new marks, and whether
    /// the pollers were all waiting.
    fn look(self: &Arc<Self>, last: Option<(u64, u64)>) -> ((u64, u64), bool) {
        let st = self.lock();
        let busy = st.pollers - st.waiting;
        let marks = (st.done, st.slept);
        let (stuck, behind) = match last {
            Some(last) if busy > 0 && st.waiting == 0 => {
                (marks.0 == last.0, marks.1 == last.1 && st.pollers < self.max_pollers)
            }
            _ => (false, false),
        };
        if (stuck || behind) && !st.stopping {
            self.follower(st);
        }
        (marks, busy == 0)
    }

    /// Starts a poller on a pool thread, counted in `pollers` under `st` (which it releases).
    fn follower(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        st.pollers += 1;
        drop(st);
        let me = self.clone();
        if let Err(e) = self.pool.submit(Box::new(move || me.poll())) {
            tracing::error!("no thread to wait for sessions' input ({e})");
            self.lock().pollers -= 1;
        }
    }
}

/// The watchdog's loop ([`Idle::look`] every [`Idle::watch`]); it sleeps while the pollers
/// have had nothing to do for a while, and ends with the poller. Each look compares with the
/// one before (none after a start or a sleep).
fn watch(idle: Weak<Idle>) {
    let mut last = None;
    let mut quiet = 0;
    let mut every = WATCH;
    loop {
        thread::park_timeout(every);
        let Some(me) = idle.upgrade() else { return };
        if me.lock().stopping {
            return;
        }
        every = me.watch;
        let (marks, all_waiting) = me.look(last);
        last = Some(marks);
        quiet = if all_waiting { quiet + 1 } else { 0 };
        let deep = quiet >= WATCH_QUIET && {
            let mut st = me.lock();
            // Still nothing to do, under the lock that a poller taking work looks at.
            st.watchdog_asleep = st.pollers == st.waiting;
            st.watchdog_asleep
        };
        drop(me);
        if deep {
            (quiet, last) = (0, None);
            thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// The accessors of a test session with `socket`, `key` and `watched` fields.
    macro_rules! fields_of_a_parked {
        () => {
            fn socket(&self) -> &TcpStream {
                &self.socket
            }
            fn key(&self) -> u64 {
                self.key
            }
            fn watched(&mut self) -> &mut bool {
                &mut self.watched
            }
        };
    }

    struct Fake {
        socket: TcpStream,
        resumed: mpsc::Sender<&'static str>,
        name: &'static str,
        key: u64,
        watched: bool,
    }

    impl Parked for Fake {
        fields_of_a_parked!();
        fn resume(self: Box<Self>, _: bool) {
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
        key: u64,
        back: mpsc::Sender<Box<Again>>,
        watched: bool,
    }

    impl Parked for Again {
        fields_of_a_parked!();
        fn resume(self: Box<Self>, _: bool) {
            self.back.clone().send(self).unwrap();
        }
    }

    /// A session whose handler blocks on the only poller's thread until the test lets it go.
    struct Blocks {
        socket: TcpStream,
        key: u64,
        watched: bool,
        /// Says it started (with the pollers before and after `will_block`, when it calls it).
        started: mpsc::Sender<Option<(usize, usize)>>,
        call: bool,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
        idle: Arc<Idle>,
    }

    impl Parked for Blocks {
        fields_of_a_parked!();
        fn resume(self: Box<Self>, _: bool) {
            let counts = self.call.then(|| {
                let before = self.idle.lock().pollers;
                will_block();
                will_block();
                (before, self.idle.lock().pollers)
            });
            self.started.send(counts).unwrap();
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait_timeout(open, Duration::from_secs(20)).unwrap().0;
            }
        }
    }

    /// Serves `blocked` (its handler blocks) and then `other` on a poller whose watchdog looks
    /// every `watch`: `other` is served while `blocked` still blocks.
    fn one_blocks(watch: Duration, call: bool) -> Option<(usize, usize)> {
        let pool = Pool::new(256 * 1024);
        let idle = Idle::start_watching(pool.clone(), watch).unwrap();
        let (started, starts) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (mut blocked_client, blocked) = pair();
        let (mut other_client, other) = pair();
        let session =
            Blocks { socket: blocked, key: 1, watched: false, started, call, gate: gate.clone(), idle: idle.clone() };
        assert!(idle.park(Box::new(session), None).is_ok());
        let fake = Box::new(Fake { socket: other, resumed: tx, name: "other", key: 2, watched: false });
        assert!(idle.park(fake, None).is_ok());
        blocked_client.write_all(b"EHLO x\r\n").unwrap();
        let counts = starts.recv_timeout(Duration::from_secs(20)).expect("the blocking session never ran");
        other_client.write_all(b"NOOP\r\n").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "other", "held up by the blocked one");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        idle.stop();
        pool.close();
        counts
    }

    #[test]
    fn a_handler_that_says_it_will_block_hands_the_waiting_over_at_once() {
        // No watchdog to speak of: only the call starts another poller, and only once.
        let (before, after) = one_blocks(Duration::from_secs(3600), true).unwrap();
        assert_eq!(after, before + 1);
    }

    #[test]
    fn a_handler_that_blocks_unannounced_is_noticed_by_the_watchdog() {
        one_blocks(WATCH, false);
    }

    #[test]
    fn a_session_parked_again_is_rearmed_and_input_between_is_not_lost() {
        use std::io::Read;
        let pool = Pool::new(256 * 1024);
        let idle = Idle::start(pool.clone()).unwrap();
        let (back, comes_back) = mpsc::channel();
        let (mut client, server) = pair();
        server.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut session = Box::new(Again { socket: server, key: 7, watched: false, back });
        for round in 0..5u8 {
            // Input that came before the park (after the session's last read) resumes it, or
            // the park gives it back at once.
            client.write_all(&[round]).unwrap();
            session = match idle.park(session, None) {
                Ok(()) => comes_back.recv_timeout(Duration::from_secs(20)).expect("not resumed"),
                Err(Unparked::Input(s)) => s,
                Err(Unparked::Refused(_)) => panic!("refused"),
            };
            assert!(session.watched, "round {round}");
            let mut b = [0u8; 1];
            session.socket.read_exact(&mut b).unwrap();
            assert_eq!(b[0], round);
        }
        // Parked without input, it stays parked.
        assert!(idle.park(session, None).is_ok());
        assert!(idle.lock().watched.get(&7) == Some(&false));
        assert!(comes_back.recv_timeout(TICK * 2).is_err());
        assert_eq!(idle.parked(), 1);
        drop(client);
        let mut session = comes_back.recv_timeout(Duration::from_secs(20)).expect("a close resumes it");
        // Its end takes it out of the interest list.
        idle.forget(&mut *session);
        assert!(idle.lock().watched.is_empty() && !session.watched);
        drop(session);
        idle.stop();
        pool.close();
    }
}
