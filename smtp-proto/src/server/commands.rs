//! Commands: each parsed command checked against the session's state, answered by the core
//! or handed to the application as an event; the SASL exchanges the core runs itself.

use super::*;

impl<B: Buffers> Server<B> {
    /// One command line. Returns the event to report, if any.
    pub(super) fn command<'b>(
        &mut self,
        parsed: Result<Command<'b>, CommandError>,
        more_input: bool,
    ) -> Option<Event<'b>> {
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(CommandError::Forbidden) => {
                self.close_with(Reply::FORBIDDEN_COMMAND);
                return None;
            }
            Err(e) => {
                self.fail(e.reply());
                return None;
            }
        };
        let c = self.config;
        let caps = c.capabilities;
        let needs_tls = c.require_tls && !self.tls;
        match cmd {
            Command::Helo { host } | Command::Ehlo { host } | Command::Lhlo { host } => {
                let kind = match cmd {
                    Command::Helo { .. } => HeloKind::Helo,
                    Command::Ehlo { .. } => HeloKind::Ehlo,
                    _ => HeloKind::Lhlo,
                };
                if c.lmtp != (kind == HeloKind::Lhlo) {
                    self.fail(Reply::UNRECOGNIZED);
                    return None;
                }
                if self.helo.is_some() && self.junk() {
                    return None;
                }
                self.pending = Some(Pending::Helo(kind));
                Some(Event::Helo { host, kind })
            }
            Command::Mail { from, params } => {
                let reply = if self.helo.is_none() {
                    Reply::NEED_HELO
                } else if self.tx.is_some() {
                    Reply::NESTED_MAIL
                } else if needs_tls {
                    Reply::TLS_REQUIRED
                } else if c.require_auth && !self.authenticated {
                    Reply::AUTH_REQUIRED
                } else if let Some(r) = self.check_mail_params(&from, &params) {
                    r
                } else {
                    self.pending = Some(Pending::Mail { smtputf8: params.smtputf8, body: params.body });
                    return Some(Event::Mail { from, params });
                };
                self.fail(reply);
                None
            }
            Command::Rcpt { to, params } => {
                let reply = match self.tx {
                    None if self.helo.is_none() => Reply::NEED_HELO,
                    None => Reply::NEED_MAIL,
                    Some(_) if needs_tls => Reply::TLS_REQUIRED,
                    Some(tx) if tx.recipients >= c.max_recipients => Reply::TOO_MANY_RECIPIENTS,
                    Some(tx) if !tx.smtputf8 && matches!(to, ForwardPath::Mailbox(m) if m.needs_smtputf8()) => {
                        Reply::NEED_SMTPUTF8
                    }
                    Some(_) if !caps.dsn && (params.notify.is_some() || params.orcpt.is_some()) => {
                        Reply::UNSUPPORTED_PARAMETER
                    }
                    Some(_) => {
                        self.pending = Some(Pending::Rcpt);
                        return Some(Event::Rcpt { to, params });
                    }
                };
                self.fail(reply);
                None
            }
            Command::Data => {
                let reply = match self.tx {
                    None if self.helo.is_none() => Reply::NEED_HELO,
                    None => Reply::NEED_MAIL,
                    Some(tx) if tx.chunked => Reply::DATA_AFTER_BDAT,
                    Some(tx) if tx.body == Some(Body::BinaryMime) => Reply::DATA_AFTER_BINARYMIME,
                    Some(tx) if tx.recipients == 0 => Reply::NO_VALID_RECIPIENTS,
                    Some(_) if more_input && c.reject_pipelined_data => {
                        self.close_with(Reply::SYNC_ERROR);
                        return None;
                    }
                    Some(_) => {
                        self.pending = Some(Pending::DataStart { bdat: None });
                        return Some(Event::DataStart { chunked: false });
                    }
                };
                self.fail(reply);
                None
            }
            Command::Bdat { size, last } => {
                if !caps.chunking {
                    self.close_with(Reply::BDAT_NOT_OFFERED);
                    return None;
                }
                let refusal = match self.tx {
                    None if self.helo.is_none() => Some(Reply::NEED_HELO),
                    None => Some(Reply::NEED_MAIL),
                    Some(_) if needs_tls => Some(Reply::TLS_REQUIRED),
                    Some(tx) if tx.recipients == 0 => Some(Reply::NO_VALID_RECIPIENTS),
                    _ => None,
                };
                if let Some(reply) = refusal {
                    // The chunk follows regardless: skip it, then answer.
                    self.hold = Some(self.out_len);
                    self.say(reply);
                    self.start_chunk(size, last, Discard::Refused);
                    self.count_error();
                    return None;
                }
                if self.tx.is_some_and(|t| t.chunked) {
                    self.start_chunk(size, last, Discard::No);
                    return None;
                }
                self.pending = Some(Pending::DataStart { bdat: Some((size, last)) });
                Some(Event::DataStart { chunked: true })
            }
            Command::Rset => {
                if self.junk() {
                    return None;
                }
                self.tx = None;
                self.say(Reply::RESET_OK);
                Some(Event::Reset)
            }
            Command::Noop => {
                if !self.junk() {
                    self.say(Reply::OK);
                }
                None
            }
            Command::Quit => {
                self.say_prefixed(Reply::BYE);
                self.state = State::Closed;
                Some(Event::Quit)
            }
            Command::Vrfy { .. } => {
                if self.junk() {
                    return None;
                }
                if needs_tls {
                    self.fail(Reply::TLS_REQUIRED);
                } else {
                    self.say(Reply::VRFY_CANNOT);
                }
                None
            }
            Command::Expn { .. } => {
                if self.junk() {
                    return None;
                }
                self.fail(if needs_tls { Reply::TLS_REQUIRED } else { Reply::NOT_IMPLEMENTED });
                None
            }
            Command::Help { .. } => {
                if !self.junk() {
                    self.say(Reply::HELP);
                }
                None
            }
            Command::StartTls => {
                let reply = if !caps.starttls && !self.tls {
                    Reply::NOT_IMPLEMENTED
                } else if self.tls {
                    Reply::TLS_ALREADY_ACTIVE
                } else if self.helo.is_none() {
                    Reply::NEED_HELO
                } else if self.tx.is_some() {
                    Reply::AUTH_IN_TRANSACTION
                } else {
                    self.pending = Some(Pending::StartTls);
                    return Some(Event::StartTls);
                };
                self.fail(reply);
                None
            }
            Command::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response),
        }
    }

    pub(super) fn say_prefixed(&mut self, reply: Reply<'_>) {
        if self.write_prefixed(reply).is_err() {
            self.state = State::Closed;
        }
    }

    pub(super) fn check_mail_params(&self, from: &ReversePath<'_>, p: &MailParams<'_>) -> Option<Reply<'static>> {
        let caps = &self.config.capabilities;
        if let (Some(size), Some(limit)) = (p.size, self.config.max_message_size) {
            if size > limit {
                return Some(Reply::TOO_BIG);
            }
        }
        let unsupported = (p.smtputf8 && !caps.smtputf8)
            || (p.body == Some(Body::EightBitMime) && !caps.eightbitmime)
            || (p.body == Some(Body::BinaryMime) && !(caps.binarymime && caps.chunking))
            || ((p.ret.is_some() || p.envid.is_some()) && !caps.dsn)
            || (p.requiretls && !(caps.requiretls && self.tls))
            || (p.mt_priority.is_some() && !caps.mt_priority)
            || ((p.hold_for.is_some() || p.hold_until.is_some()) && caps.future_release.is_none())
            || (p.by.is_some() && caps.deliver_by.is_none())
            || (p.auth.is_some() && caps.auth.is_empty());
        if unsupported {
            return Some(Reply::UNSUPPORTED_PARAMETER);
        }
        if !p.smtputf8 && matches!(from, ReversePath::Mailbox(m) if m.needs_smtputf8()) {
            return Some(Reply::NEED_SMTPUTF8);
        }
        None
    }

    pub(super) fn auth<'b>(&mut self, name: &'b str, initial: Option<&'b str>) -> Option<Event<'b>> {
        let c = &self.config;
        let mechanism = Mechanism::from_name(name);
        let reply = if self.helo.is_none() {
            Reply::NEED_HELO
        } else if c.capabilities.auth.is_empty() {
            Reply::NOT_IMPLEMENTED
        } else if c.require_tls && !self.tls {
            Reply::TLS_REQUIRED
        } else if self.authenticated {
            Reply::ALREADY_AUTHENTICATED
        } else if self.tx.is_some() {
            Reply::AUTH_IN_TRANSACTION
        } else if !self.tls && !c.allow_insecure_auth {
            Reply::AUTH_NEEDS_TLS
        } else if !mechanism.bit().is_some_and(|b| c.capabilities.auth.contains(b)) {
            Reply::AUTH_UNKNOWN_MECHANISM
        } else if !self.take_sasl() {
            // No SASL buffer to be had now (see `Buffers::acquire_sasl`).
            Reply::AUTH_TEMPFAIL
        } else {
            let step = match mechanism {
                Mechanism::Plain => Sasl::Plain,
                Mechanism::Login => Sasl::LoginUser,
                Mechanism::XOAuth2 => Sasl::XOAuth2,
                Mechanism::OAuthBearer => Sasl::OAuthBearer,
                _ => Sasl::App,
            };
            self.sasl = step;
            self.sasl_len = 0;
            self.login_user_len = 0;
            return match initial {
                None if step == Sasl::App => {
                    self.pending = Some(Pending::Auth);
                    Some(Event::Auth { mechanism })
                }
                None => {
                    self.say(match step {
                        Sasl::LoginUser => Reply::new(334, None, "VXNlcm5hbWU6"),
                        _ => Reply::AUTH_CONTINUE,
                    });
                    self.state = State::AuthExchange(step);
                    None
                }
                Some(ir) => self.auth_line(step, ir.as_bytes()).map(|ev| match ev {
                    Event::Auth { .. } | Event::AuthResponse => Event::Auth { mechanism },
                    other => other,
                }),
            };
        };
        self.fail(reply);
        None
    }

    /// A SASL response line (or the initial response) for `step`.
    pub(super) fn auth_line<'b>(&mut self, step: Sasl, line: &[u8]) -> Option<Event<'b>> {
        self.state = State::Command;
        if line == b"*" {
            self.fail(Reply::AUTH_CANCELLED);
            return Some(Event::AuthCancelled);
        }
        let start = if step == Sasl::LoginPassword { self.login_user_len } else { 0 };
        let decoded = if line == b"=" {
            Ok(0)
        } else {
            // Decoding writes at most as many octets as the line has, even when it fails.
            self.sasl_dirty = self.sasl_dirty.max(start.saturating_add(line.len()));
            sasl::decode_base64(line, self.buffers.sasl_mut().get_mut(start..).unwrap_or(&mut []))
        };
        let n = match decoded {
            Ok(n) => n,
            Err(sasl::SaslError::TooLong) => {
                self.fail(Reply::AUTH_LINE_TOO_LONG);
                return None;
            }
            Err(_) => {
                self.fail(Reply::AUTH_BAD_BASE64);
                return None;
            }
        };
        self.sasl_len = start + n;
        self.sasl = step;
        match step {
            Sasl::LoginUser => {
                self.login_user_len = n;
                self.say(Reply::new(334, None, "UGFzc3dvcmQ6"));
                self.state = State::AuthExchange(Sasl::LoginPassword);
                None
            }
            Sasl::App => {
                self.pending = Some(Pending::Auth);
                Some(Event::AuthResponse)
            }
            _ => {
                if self.credentials().is_none() {
                    self.fail(Reply::AUTH_BAD_BASE64.with_text("Malformed authentication data"));
                    return None;
                }
                self.pending = Some(Pending::Auth);
                Some(Event::Auth {
                    mechanism: match step {
                        Sasl::Plain => Mechanism::Plain,
                        Sasl::XOAuth2 => Mechanism::XOAuth2,
                        Sasl::OAuthBearer => Mechanism::OAuthBearer,
                        _ => Mechanism::Login,
                    },
                })
            }
        }
    }
}
