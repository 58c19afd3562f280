//! What the server and its sessions share: the options, the shutdown flag, the count of active
//! sessions, the registry of their sockets (which shutdown wakes), the pool and the poller;
//! and the refusal of a connection whose session never starts.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use smtp_proto::server::Config;
use smtp_proto::Reply;

use crate::idle::Idle;
use crate::limits::{Permit, Tracker};
use crate::options::Options;
use crate::pool::Pool;

/// How often a blocked accept (or a wait for a PROXY header) wakes up to look at the shutdown
/// flag. Sessions do not poll: shutdown wakes them ([`Connections`]).
pub(crate) const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// State shared by the accept loop and the sessions.
pub(crate) struct Shared {
    /// The options; their SMTP configuration is the one the server started with: sessions
    /// take theirs from `config`, which may have been replaced since.
    pub(crate) options: Options,
    pub(crate) config: crate::server::ConfigHandle,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) active: AtomicUsize,
    pub(crate) next_id: AtomicU64,
    /// Per-client counters: connections (taken by the accept loop), AUTH failures (here).
    pub(crate) limits: Arc<Tracker>,
    /// Where shutdown finds the sockets to wake.
    pub(crate) connections: Arc<Connections>,
    /// The session threads.
    pub(crate) pool: Arc<Pool>,
    /// Where idle sessions wait without a thread (`None`: they keep theirs).
    pub(crate) idle: Option<Arc<Idle>>,
}

/// What a session knows of the listener that accepted it, which saves it system calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    /// Implicit TLS.
    pub(crate) implicit: bool,
    /// The listener's address when it is a specific one: every accepted socket's local address
    /// (no `getsockname`).
    pub(crate) local: Option<SocketAddr>,
    /// The socket options an accepted socket inherits from the listener (Linux copies the
    /// listening socket's `TCP_NODELAY`, `SO_RCVTIMEO` and `SO_SNDTIMEO`): a session does not
    /// set them again. `None` elsewhere.
    pub(crate) inherited: Option<Inherited>,
}

/// Socket timeouts an accepted socket starts with ([`Accepted::inherited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inherited {
    pub(crate) read: Duration,
    pub(crate) write: Duration,
}

/// The open sessions' sockets, so that shutdown can wake sessions blocked on a read (a
/// read shut down returns at once) instead of every session waking up regularly to look;
/// and the listeners, whose blocked `accept` a shutdown of the listening socket ends.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    sockets: Mutex<HashMap<u64, Weak<TcpStream>>>,
    pub(crate) listeners: Mutex<Vec<TcpListener>>,
}

impl Connections {
    /// Registers session `id`'s socket until the guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, id: u64, socket: &Arc<TcpStream>) -> Registered {
        self.lock().insert(id, Arc::downgrade(socket));
        Registered { connections: self.clone(), id }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the accept loops blocked on the listeners (Linux: `accept` on a listening socket
    /// shut down for reading fails at once; elsewhere the accept timeout ends it).
    pub(crate) fn wake_listeners(&self) {
        for l in self.listeners.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = socket2::SockRef::from(l).shutdown(Shutdown::Read);
        }
    }

    /// Shuts down `how` every registered socket.
    pub(crate) fn wake(&self, how: Shutdown) {
        for socket in self.lock().values().filter_map(Weak::upgrade) {
            let _ = socket.shutdown(how);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A session's place in [`Connections`].
pub(crate) struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// Decrements the active-client count when a session ends, even by panic, and gives the
/// client's per-client slot back.
pub(crate) struct ActiveGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) _permit: Option<Permit>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Refuses with `reply` (a `421`) a connection whose session never starts, and shuts down
/// its writing side (the caller drops it).
pub(crate) fn refuse(mut stream: &TcpStream, config: &Config, reply: Reply<'_>) {
    let mut core = smtp_proto::Server::new(*config);
    if core.refuse(reply).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut out = [0u8; 512];
    loop {
        let n = core.poll_transmit(&mut out);
        if n == 0 || stream.write_all(&out[..n]).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
