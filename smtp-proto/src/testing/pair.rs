//! The client core against the server core, in memory: what one side sends is what the
//! other sees ([`pair_session`]).

use super::*;

/// How [`pair_session`] connects the two cores.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// The server offers PIPELINING.
    pub pipelining: bool,
    /// The server offers CHUNKING (the client uses BDAT then).
    pub chunking: bool,
    /// The server offers STARTTLS and the client upgrades first.
    pub starttls: bool,
    /// Bytes moved per pipe step.
    pub pipe: usize,
    /// Bytes offered per `send_body` call.
    pub push: usize,
}

/// A `MAIL FROM` as the server saw it ([`Event::Mail`]), owned; xtext values decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailSeen {
    /// The reverse path: `""` for `<>`, else `local@domain` as written.
    pub from: String,
    /// `SIZE=`.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<Vec<u8>>,
    /// `AUTH=`: `"<>"` or the xtext-decoded identity.
    pub auth: Option<String>,
    /// `REQUIRETLS`.
    pub requiretls: bool,
    /// `MT-PRIORITY=`.
    pub mt_priority: Option<i8>,
    /// `HOLDFOR=`.
    pub hold_for: Option<u64>,
    /// `HOLDUNTIL=`.
    pub hold_until: Option<String>,
    /// `BY=`.
    pub by: Option<By>,
    /// Unknown parameters, raw, in order.
    pub unknown: Vec<(String, Option<String>)>,
}

impl MailSeen {
    /// Copies what [`Event::Mail`] carries.
    pub fn new(from: &ReversePath<'_>, p: &MailParams<'_>) -> Self {
        Self {
            from: match from {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(m) => m.to_string(),
            },
            size: p.size,
            body: p.body,
            smtputf8: p.smtputf8,
            ret: p.ret,
            envid: p.envid.map(|x| x.decoded().collect()),
            auth: p.auth.map(|a| match a {
                MailAuth::Empty => "<>".to_string(),
                MailAuth::Identity(x) => String::from_utf8_lossy(&x.decoded().collect::<Vec<u8>>()).into_owned(),
            }),
            requiretls: p.requiretls,
            mt_priority: p.mt_priority,
            hold_for: p.hold_for,
            hold_until: p.hold_until.map(str::to_owned),
            by: p.by,
            unknown: unknown_params(&p.unknown),
        }
    }
}

/// A `RCPT TO` as the server saw it ([`Event::Rcpt`]), owned; xtext values decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptSeen {
    /// The forward path: `postmaster` for `<postmaster>`, else `local@domain` as written.
    pub to: String,
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=`: the address type and the xtext-decoded address.
    pub orcpt: Option<(String, Vec<u8>)>,
    /// Unknown parameters, raw, in order.
    pub unknown: Vec<(String, Option<String>)>,
}

impl RcptSeen {
    /// Copies what [`Event::Rcpt`] carries.
    pub fn new(to: &ForwardPath<'_>, p: &RcptParams<'_>) -> Self {
        Self {
            to: match to {
                ForwardPath::Postmaster => "postmaster".to_string(),
                ForwardPath::Mailbox(m) => m.to_string(),
            },
            notify: p.notify,
            orcpt: p.orcpt.map(|o| (o.addr_type.to_string(), o.addr.decoded().collect())),
            unknown: unknown_params(&p.unknown),
        }
    }
}

fn unknown_params(u: &UnknownParams<'_>) -> Vec<(String, Option<String>)> {
    u.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect()
}

/// What a [`pair_session`] produced.
#[derive(Default, Debug)]
pub struct PairOutcome {
    /// Bodies the server received.
    pub bodies: Vec<Vec<u8>>,
    /// Every `MAIL FROM` the server reported, in order.
    pub server_mail: Vec<MailSeen>,
    /// Every `RCPT TO` the server reported, in order (accepted or not).
    pub server_rcpts: Vec<RcptSeen>,
    /// Local parts of the recipients the server accepted.
    pub server_accepted: Vec<String>,
    /// Client per-recipient results (accepted?).
    pub client_results: Vec<bool>,
    /// Client events, `Debug`-formatted.
    pub client_events: Vec<String>,
    /// The client saw the message delivered.
    pub delivered: bool,
    /// Both sides went through STARTTLS.
    pub tls: bool,
}

/// The server's policy in [`pair_session`]: refuse recipients whose local part starts with "bad".
/// Records MAIL and RCPT as the server saw them.
fn decide(ev: &server::Event<'_>, out: &mut PairOutcome) -> Option<Reply<'static>> {
    match ev {
        server::Event::Mail { from, params } => {
            out.server_mail.push(MailSeen::new(from, params));
            None
        }
        server::Event::Rcpt { to, params } => {
            out.server_rcpts.push(RcptSeen::new(to, params));
            let local = match to {
                ForwardPath::Mailbox(m) => m.local_part,
                ForwardPath::Postmaster => "postmaster",
            };
            if local.starts_with("bad") {
                Some(Reply::NO_SUCH_USER)
            } else {
                out.server_accepted.push(local.to_string());
                None
            }
        }
        _ => None,
    }
}

/// The canonical form of a body as it travels: every CR, LF and CRLF becomes CRLF, and a
/// non-empty body ends with CRLF.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs the client core against the server core in memory, through pipes that move
/// `opts.pipe` bytes per step; the client sends one message from `from` to `rcpts`, then QUIT.
pub fn pair_session(opts: &PairOptions, from: &str, rcpts: &[String], body: &[u8]) -> PairOutcome {
    let to: Vec<Recipient<'_>> = rcpts.iter().map(|r| Recipient::new(r)).collect();
    pair_session_with(opts, &|_| {}, &Envelope::new(from, &to), body)
}

/// [`pair_session`] with a whole envelope (sender, parameters, recipients with DSN
/// parameters; at most 8 recipients), and `server` adjusting the server's configuration after
/// `opts` was applied (e.g. to withdraw DSN or SIZE).
pub fn pair_session_with(
    opts: &PairOptions,
    server: &dyn Fn(&mut server::Config),
    envelope: &Envelope<'_>,
    body: &[u8],
) -> PairOutcome {
    let mut sconfig = server::Config::new("mx.test");
    sconfig.capabilities.pipelining = opts.pipelining;
    sconfig.capabilities.chunking = opts.chunking;
    sconfig.capabilities.starttls = opts.starttls;
    server(&mut sconfig);
    let mut server = Server::new(sconfig);
    server.greet("ESMTP").unwrap();
    let mut cconfig = client::Config::new("client.test");
    cconfig.chunking = true;
    let mut client: Client<8> = Client::new(cconfig);

    let mut out = PairOutcome::default();
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let (mut s_in, mut c_in) = (Vec::new(), Vec::new());
    let mut body_rest = body;
    let mut sent_mail = false;
    let mut buf = [0u8; 333];
    for _round in 0..100_000 {
        // Client → pipe.
        loop {
            let n = client.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            c2s.extend_from_slice(&buf[..n]);
        }
        // Pipe → server, a piece at a time.
        let n = opts.pipe.min(c2s.len());
        s_in.extend(c2s.drain(..n));
        loop {
            let r = server.handle_input(&s_in).unwrap();
            let consumed = r.consumed;
            let mut stop = false;
            match r.progress {
                server::Progress::Event(ev) => {
                    if let server::Event::Data(d) = ev {
                        out.bodies.last_mut().expect("DataStart first").extend_from_slice(d);
                    }
                    if let server::Event::DataStart { .. } = ev {
                        out.bodies.push(Vec::new());
                    }
                    if ev.needs_decision() {
                        match decide(&ev, &mut out) {
                            None => server.accept().unwrap(),
                            Some(reply) => server.reply(reply).unwrap(),
                        }
                    }
                }
                _ => stop = true,
            }
            s_in.drain(..consumed);
            if stop {
                break;
            }
        }
        loop {
            let n = server.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            s2c.extend_from_slice(&buf[..n]);
        }
        // Pipe → client.
        let n = opts.pipe.min(s2c.len());
        c_in.extend(s2c.drain(..n));
        loop {
            let r = client.handle_input(&c_in).unwrap();
            let consumed = r.consumed;
            let mut stop = false;
            match r.progress {
                client::Progress::Event(ev) => {
                    out.client_events.push(format!("{ev:?}"));
                    match ev {
                        client::Event::TlsHandshake => {
                            assert!(server.is_tls_pending());
                            server.tls_established().unwrap();
                            client.tls_established().unwrap();
                            out.tls = true;
                        }
                        client::Event::Delivered { .. } => out.delivered = true,
                        client::Event::Error(e) => panic!("client error {e:?}"),
                        _ => {}
                    }
                }
                client::Progress::NeedInput => stop = true,
                client::Progress::Closed => {
                    out.client_results =
                        client.recipient_results().iter().map(|r| r.is_some_and(|r| r.is_accepted())).collect();
                    return out;
                }
            }
            c_in.drain(..consumed);
            if stop {
                break;
            }
        }
        // The application.
        if client.is_ready() {
            if opts.starttls && !client.is_tls() {
                client.starttls().unwrap();
            } else if !sent_mail {
                client.send_mail(envelope).unwrap();
                sent_mail = true;
            } else {
                client.quit().unwrap();
            }
        }
        while client.is_sending_body() {
            if body_rest.is_empty() {
                match client.finish_body() {
                    Ok(()) => {}
                    Err(client::ApiError::OutputFull) => break,
                    Err(e) => panic!("{e:?}"),
                }
                break;
            }
            let take = opts.push.min(body_rest.len());
            let n = client.send_body(&body_rest[..take]).unwrap();
            body_rest = &body_rest[n..];
            if n == 0 {
                break;
            }
        }
    }
    panic!("livelock: {:?}", out.client_events);
}
