//! The event dispatch: each event of the core becomes a call of the [`Handler`], and its
//! [`Decision`] the core's reply; the owned [`Session`] mirrors the core's state.

use super::*;

impl<H: Handler> Conn<H> {
    /// Applies the handler's decision to the pending event; returns whether it was accepted.
    pub(super) fn decide(&mut self, decision: &Decision) -> bool {
        let (result, positive) = match decision {
            Decision::Accept => (self.core.accept(), true),
            Decision::Reply(r) => (self.core.reply(r.as_reply()), r.as_reply().is_positive()),
        };
        match result {
            Ok(()) => positive,
            Err(e) => {
                log!(error, self.session, ?decision, "handler reply not usable here ({e}): answering 451");
                if self.core.is_pending() {
                    let _ = self.core.reply(Reply::LOCAL_ERROR);
                }
                false
            }
        }
    }

    /// Mirrors the core's state into the owned session after each step.
    pub(super) fn sync(&mut self) {
        self.session.tls = self.core.is_tls();
        if self.core.helo().is_none() {
            self.session.helo = None;
        }
        if !self.core.is_authenticated() {
            self.session.user = None;
        }
        if !self.core.in_transaction() {
            self.session.envelope = Envelope::default();
        }
    }

    pub(super) fn event(&mut self, ev: Event<'_>) {
        let s = &self.session;
        match ev {
            Event::Helo { host, kind } => {
                let d = self.handler.helo(s, host);
                let ok = self.decide(&d);
                log!(info, self.session, host, ?kind, ok, "helo");
                if ok {
                    self.session.helo = Some(host.to_owned());
                    self.session.esmtp = kind != HeloKind::Helo;
                }
            }
            Event::Auth { .. } | Event::AuthResponse => {
                let creds = self.core.credentials();
                let req = creds.as_ref().and_then(AuthRequest::from_credentials);
                let ip = s.peer.ip();
                match req {
                    // Locked out meanwhile (by another of its sessions): the handler is not asked.
                    Some(req) if self.shared.limits.is_locked(ip, Instant::now()) => {
                        let mechanism = req.mechanism;
                        let user = loggable_user(&mut self.handler, &self.session, req.identity);
                        log!(warn, self.session, mechanism, user, "auth refused: client locked out");
                        self.handler.limited(self.session.peer, crate::Limited::Client(Refusal::AuthLocked));
                        self.decide(&Refusal::AuthLocked.reply().into());
                    }
                    Some(req) => {
                        let d = self.handler.auth(s, &req);
                        let (mechanism, user) = (req.mechanism, req.identity.to_owned());
                        // A permanent refusal is a wrong guess; a temporary one (454) is ours.
                        let failed = matches!(&d, Decision::Reply(r) if r.code >= 500);
                        if failed && self.shared.limits.auth_failed(ip, Instant::now()) {
                            let user = loggable_user(&mut self.handler, &self.session, &user);
                            log!(
                                warn,
                                self.session,
                                mechanism,
                                user,
                                "auth failed: too many failures, client locked out"
                            );
                            self.handler.limited(self.session.peer, crate::Limited::Client(Refusal::AuthLocked));
                            self.decide(&Refusal::AuthLocked.reply().into());
                        } else if self.decide(&d) {
                            log!(info, self.session, mechanism, user, "auth ok");
                            self.session.user = Some(user);
                        } else {
                            let user = loggable_user(&mut self.handler, &self.session, &user);
                            log!(warn, self.session, mechanism, user, "auth failed");
                        }
                    }
                    None => {
                        // A mechanism the application would have to drive: none is offered.
                        log!(warn, self.session, "auth with an unsupported mechanism");
                        self.decide(&Reply::AUTH_UNKNOWN_MECHANISM.into());
                    }
                }
            }
            Event::AuthCancelled => log!(info, self.session, "auth cancelled by the client"),
            Event::Mail { from, params } => {
                let d = self.handler.mail_from(s, &from, &params);
                let addr = reverse_path_string(&from);
                let ok = self.decide(&d);
                log!(info, self.session, from = %addr, size = params.size, ok, "mail");
                if ok {
                    self.session.envelope = Envelope {
                        mail_from: Some(addr),
                        rcpt_to: Vec::new(),
                        smtputf8: params.smtputf8,
                        eight_bit: params.body.is_some_and(|b| b != smtp_proto::parse::Body::SevenBit),
                        declared_size: params.size,
                    };
                }
            }
            Event::Rcpt { to, params } => {
                let d = self.handler.rcpt_to(s, &to, &params);
                let addr = forward_path_string(&to);
                let ok = self.decide(&d);
                log!(info, self.session, to = %addr, ok, "rcpt");
                if ok {
                    self.session.envelope.rcpt_to.push(addr);
                }
            }
            Event::DataStart { chunked } => {
                // A new message: its data rate is measured from the first wait for its data
                // (not from a message that ended earlier in the same read).
                self.message = None;
                let d = self.handler.data_start(s);
                let ok = self.decide(&d);
                log!(debug, self.session, chunked, ok, "data");
                if ok {
                    self.in_message = true;
                    self.content_error = None;
                }
            }
            Event::Data(chunk) => {
                if self.in_message && self.content_error.is_none() {
                    if let Err(e) = self.handler.data_chunk(s, chunk) {
                        log!(error, self.session, "storing the message failed: {e}");
                        self.content_error = Some(e);
                    }
                }
            }
            Event::DataEnd { size } => {
                self.in_message = false;
                if let Some(e) = self.content_error.take() {
                    self.handler.data_abort(s, None);
                    self.decide(&Decision::io_error(&e));
                } else {
                    let d = self.handler.data_end(s, size);
                    let ok = self.decide(&d);
                    log!(debug, self.session, size, ok, "end of data");
                    // LMTP: one decision per recipient; the same answer for each.
                    let mut left = self.session.envelope.rcpt_to.len();
                    while self.core.is_pending() && left > 0 {
                        left -= 1;
                        self.decide(&d);
                    }
                }
            }
            Event::DataAborted { error } => {
                log!(info, self.session, ?error, "message refused by the core");
                if self.in_message {
                    self.in_message = false;
                    self.content_error = None;
                    self.handler.data_abort(s, Some(error));
                }
            }
            Event::StartTls => {
                if self.shared.options.tls.is_some() {
                    self.decide(&Decision::Accept);
                    log!(info, self.session, "starttls");
                } else {
                    self.decide(&Reply::TLS_UNAVAILABLE.into());
                }
            }
            Event::PlaintextDiscarded { len } => {
                log!(
                    warn,
                    self.session,
                    len,
                    "discarded plaintext pipelined after STARTTLS (command injection attempt?)"
                );
            }
            Event::Reset => log!(debug, self.session, "rset"),
            Event::Quit => log!(debug, self.session, "quit"),
            other => {
                if other.needs_decision() {
                    log!(warn, self.session, ?other, "event not handled by smtp-std: refused");
                    self.decide(&Reply::NOT_IMPLEMENTED.into());
                }
            }
        }
        self.sync();
    }
}

/// The user name of a refused AUTH as it may be logged: only an account the handler knows,
/// else `<unknown>` (the name may be a password typed into the wrong field).
fn loggable_user<H: Handler>(handler: &mut H, session: &Session, identity: &str) -> String {
    if handler.knows_user(session, identity) {
        identity.to_owned()
    } else {
        "<unknown>".to_owned()
    }
}
