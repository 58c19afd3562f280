//! The session threads: a pool that reuses them.
//!
//! A job (a poller, a session resumed away from the poller, or one that waits on its own
//! thread) goes to a thread that waits for work, or to a new thread when none waits: a job
//! never waits behind another one. A thread that
//! finds no work waits for some, for [`SPARE_TTL`] at most, and only while fewer than
//! [`MAX_SPARE`] others wait: thousands of threads started by a burst of connections do not
//! stay around (each keeps the pages of its stack it touched), a busy server does not pay a
//! thread spawn per connection.

use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Work for a session thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Most threads that wait for work at once; more exit as soon as they find none.
pub(crate) const MAX_SPARE: usize = 64;
/// How long a spare thread waits for work before it exits.
pub(crate) const SPARE_TTL: Duration = Duration::from_secs(10);

/// The pool (one per running [`Server`](crate::Server)).
pub(crate) struct Pool {
    state: Mutex<State>,
    work: Condvar,
    stack_size: usize,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting on `work`.
    waiting: usize,
    /// Notifications sent and not yet taken by a waiting thread.
    wakeups: usize,
    /// No more jobs: waiting threads exit.
    closed: bool,
}

impl Pool {
    /// A pool whose threads have stacks of `stack_size` bytes.
    pub(crate) fn new(stack_size: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), work: Condvar::new(), stack_size })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a waiting thread, or on a new one. Fails only when no thread runs and
    /// none can be started: a job is then dropped (for a session: its connection closes).
    pub(crate) fn submit(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let mut st = self.lock();
        st.jobs.push_back(job);
        if st.waiting > st.wakeups {
            st.wakeups += 1;
            drop(st);
            self.work.notify_one();
            return Ok(());
        }
        st.threads += 1;
        drop(st);
        let pool = self.clone();
        let spawned = thread::Builder::new()
            .name("smtp-session".into())
            .stack_size(self.stack_size)
            .spawn(move || pool.work(None));
        let Err(e) = spawned else { return Ok(()) };
        let mut st = self.lock();
        st.threads -= 1;
        if st.threads > 0 {
            // E.g. the process's thread limit: the job waits for a thread that exists.
            tracing::warn!("cannot start a session thread ({e}): the job waits for a running one");
            return Ok(());
        }
        let dropped = st.jobs.pop_back();
        drop(st);
        drop(dropped);
        Err(e)
    }

    /// Lets waiting threads exit; threads running a job exit when it ends.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// A thread's life: its first job, then whatever comes while it is needed.
    fn work(self: Arc<Self>, mut job: Option<Job>) {
        loop {
            if let Some(job) = job.take() {
                // A panicking handler ends its session (its guards drop on the way), not the
                // thread; the panic hook has reported it.
                let _ = panic::catch_unwind(AssertUnwindSafe(job));
            }
            let mut st = self.lock();
            loop {
                if let Some(next) = st.jobs.pop_front() {
                    job = Some(next);
                    break;
                }
                if st.closed || st.waiting >= MAX_SPARE {
                    st.threads -= 1;
                    return;
                }
                st.waiting += 1;
                let (guard, wait) = self.work.wait_timeout(st, SPARE_TTL).unwrap_or_else(|p| p.into_inner());
                st = guard;
                st.waiting -= 1;
                if st.wakeups > 0 {
                    st.wakeups -= 1;
                } else if wait.timed_out() && st.jobs.is_empty() {
                    st.threads -= 1;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_never_wait_behind_a_blocked_one() {
        let pool = Pool::new(256 * 1024);
        let (started, seen) = mpsc::channel();
        let (go, wait) = mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        // Ten jobs that each block until all ten run at once.
        for i in 0..10 {
            let (started, wait) = (started.clone(), wait.clone());
            pool.submit(Box::new(move || {
                started.send(i).unwrap();
                let _ = wait.lock().unwrap().recv();
            }))
            .unwrap();
        }
        for _ in 0..10 {
            seen.recv_timeout(Duration::from_secs(20)).expect("a job waited behind a blocked one");
        }
        drop(go);
        pool.close();
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_working_and_threads_are_reused() {
        let pool = Pool::new(256 * 1024);
        pool.submit(Box::new(|| panic!("a handler panicked"))).unwrap();
        let (done, seen) = mpsc::channel();
        let all_waiting = || {
            for _ in 0..20_000 {
                let st = pool.lock();
                if st.waiting == st.threads {
                    return;
                }
                drop(st);
                thread::sleep(Duration::from_millis(1));
            }
            panic!("pool threads never went back to waiting");
        };
        for i in 0..100 {
            all_waiting();
            let done = done.clone();
            pool.submit(Box::new(move || done.send(i).unwrap())).unwrap();
            seen.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        // One job at a time: the thread that survived the panic ran every one.
        assert_eq!(pool.lock().threads, 1);
        pool.close();
    }
}
