//! Accepting connections: by the threads waiting on the sessions' epoll instance, or by one
//! thread per listener (when sessions keep their threads); the per-client limits and the
//! global cap of a new connection, and the `421` of one refused.

use super::*;

/// What [`Server::accept_next`] got.
enum Next {
    /// A connection that passed the checks: the job that serves it, and its socket.
    Serve(Job, Arc<TcpStream>),
    /// None, or one refused.
    Again,
    /// The server stops.
    Stop,
}

impl<H: Handler> Server<H> {
    /// One accept thread per listener, each handing its connections to the pool, until
    /// shutdown (when sessions keep their threads: no poller).
    pub(super) fn accept_threads(&self, shared: &Arc<Shared>) {
        thread::scope(|scope| {
            for (listener, accepted) in &self.listeners {
                let (shared, handler) = (shared, self.handler.clone());
                let accept = move || Self::accept_loop(listener, *accepted, shared, handler);
                if let Err(e) = thread::Builder::new().name("smtp-accept".into()).spawn_scoped(scope, accept) {
                    tracing::error!("cannot spawn an accept thread: {e}");
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
            }
        });
    }

    /// Hands the listeners to the pollers of `idle`, which accept their connections.
    pub(super) fn watch_listeners(&self, idle: &Idle, shared: &Arc<Shared>) -> io::Result<()> {
        for (listener, accepted) in &self.listeners {
            let socket = listener.try_clone()?;
            socket.set_nonblocking(true)?;
            let (accepted, shared) = (*accepted, shared.clone());
            // One poller at a time runs a listener's acceptor (its registration is one-shot):
            // the lock is never waited for.
            let handler = Mutex::new(self.handler.clone());
            let accept = move |l: &TcpListener| {
                let handler = handler.lock().unwrap_or_else(|p| p.into_inner());
                match Self::accept_next(l, accepted, &shared, &handler) {
                    Next::Serve(job, _) => Accepting::Serve(job),
                    Next::Again => Accepting::Again,
                    Next::Stop => Accepting::Stop,
                }
            };
            idle.listen(Listener { socket, accept: Box::new(accept) })?;
        }
        Ok(())
    }

    /// One listener's accept loop (a blocking accept), until shutdown.
    fn accept_loop(listener: &TcpListener, accepted: Accepted, shared: &Arc<Shared>, handler: H) {
        loop {
            match Self::accept_next(listener, accepted, shared, &handler) {
                Next::Serve(job, stream) => {
                    if let Err(e) = shared.pool.submit(job) {
                        tracing::error!(
                            peer = stream.peer_addr().ok().map(tracing::field::display),
                            "cannot start a session thread: {e}"
                        );
                        if !accepted.implicit {
                            refuse(&stream, &shared.config.get(), Reply::TOO_MANY_CONNECTIONS);
                        }
                    }
                }
                Next::Again => {}
                Next::Stop => return,
            }
        }
    }

    /// Accepts the next connection of `listener` (blocking or not) and checks it.
    fn accept_next(listener: &TcpListener, accepted: Accepted, shared: &Arc<Shared>, handler: &H) -> Next {
        if shared.shutdown.load(Ordering::SeqCst) {
            return Next::Stop;
        }
        match listener.accept() {
            Ok((stream, peer)) => match Self::start(handler, shared, stream, peer, accepted) {
                Some((job, stream)) => Next::Serve(job, stream),
                None => Next::Again,
            },
            // Nothing yet (non-blocking), the blocking accept's timeout, a client gone already.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Next::Again
            }
            // The listener shut down by a shutdown.
            Err(_) if shared.shutdown.load(Ordering::SeqCst) => Next::Stop,
            Err(e) => {
                // E.g. EMFILE: log, back off, go on serving.
                tracing::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                Next::Again
            }
        }
    }

    /// The checks of a new connection (per-client limits, the global cap), with the job that
    /// serves it and its socket; `None` when it was refused.
    fn start(
        handler: &H,
        shared: &Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        accepted: Accepted,
    ) -> Option<(Job, Arc<TcpStream>)> {
        // An accepted socket is blocking (accept4 without SOCK_NONBLOCK) whatever the listener.
        if accepted.inherited.is_none() {
            let _ = stream.set_nodelay(true);
        }
        let implicit = accepted.implicit;
        let refuse = |stream: &TcpStream, reply: Reply<'_>| {
            if !implicit {
                refuse(stream, &shared.config.get(), reply);
            }
        };
        // Behind a proxy the client is known from the PROXY header: the session counts it.
        let permit = if shared.options.proxy.trusts(peer.ip()) {
            None
        } else {
            match shared.limits.admit(peer.ip(), Instant::now()) {
                Ok(p) => Some(p),
                Err(r) => {
                    tracing::warn!(%peer, client = %crate::limits::ClientKey::of(peer.ip()), "refused: {r}");
                    handler.limited(peer, crate::Limited::Client(r));
                    refuse(&stream, r.reply());
                    return None;
                }
            }
        };
        let active = shared.active.fetch_add(1, Ordering::SeqCst);
        if active >= shared.options.max_clients {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%peer, active, "too many clients: refused");
            handler.limited(peer, crate::Limited::MaxClients);
            refuse(&stream, Reply::TOO_MANY_CONNECTIONS);
            return None;
        }
        let guard = ActiveGuard { shared: shared.clone(), _permit: permit };
        let handler = handler.clone();
        let shared2 = shared.clone();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(stream);
        let socket = stream.clone();
        let job: Job = Box::new(move || session::serve(socket, id, peer, accepted, handler, shared2, guard));
        Some((job, stream))
    }
}
