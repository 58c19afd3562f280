//! The milter protocol (Sendmail's mail filter API, version 6, as Postfix speaks it), MTA
//! side: a sans-IO client for rspamd's proxy, OpenDKIM, OpenDMARC, clamav-milter...
//!
//! A [`Client`] owns no message bytes and no buffer. Each request — [`Client::negotiate`],
//! [`Client::connect`], [`Client::helo`], [`Client::mail`], [`Client::rcpt`],
//! [`Client::data`], [`Client::header`], [`Client::end_of_headers`], [`Client::body`],
//! [`Client::end_of_message`], [`Client::abort`], [`Client::quit`] — writes its packets
//! (macros first, then the command) into a buffer the caller lends and returns their length;
//! a body chunk is not copied at all: [`Client::body`] gives the 5-octet packet header to
//! send before the caller's own chunk. The milter's bytes go to [`Client::handle_input`],
//! which consumes at most one packet per call and reports at most one [`Event`] borrowing
//! from the input.
//!
//! ```text
//!  packet = length (u32, network order; counts the command and the data) | command | data
//!  MTA → milter   O negotiate  D macros  C connect  H helo  M mail  R rcpt  T data
//!                 L header  N end of headers  B body  E end of message  A abort  Q quit
//!  milter → MTA   O negotiated  c continue  a accept  r reject  t tempfail  d discard
//!                 y reply code  s skip  p progress  4 shutdown  f connection failure
//!                 (at E only) h add header  i insert header  m change header  + - 2 recipients
//!                 e change sender  b replace body  q quarantine
//! ```
//!
//! **Drain rule**: after each request, send the bytes it wrote; then, while
//! [`Client::awaiting_reply`], read from the milter and call [`Client::handle_input`] on the
//! unconsumed input until it answers [`Progress::NeedInput`]. A request while a reply is
//! awaited is [`ApiError::AwaitingReply`]. The input buffer must hold a whole packet:
//! 4 + [`Config::max_packet`] octets.
//!
//! # The conversation
//! 1. [`Client::negotiate`] → [`Event::Negotiated`]: what the milter wants. Stages it does not
//!    want (`NO_*`) are not sent: their request writes nothing and returns `Ok(0)`. Stages it
//!    does not answer (`NR_*`) are sent but no reply is awaited. The macro lists it asked for
//!    are in the event.
//! 2. [`Client::connect`], [`Client::helo`]; then per message [`Client::mail`],
//!    [`Client::rcpt`]..., [`Client::data`], [`Client::header`]..., [`Client::end_of_headers`],
//!    [`Client::body`]... ([`MAX_CHUNK`] octets at most each), [`Client::end_of_message`].
//!    Each stage answered gives an [`Event::Verdict`]. [`Verdict::Continue`]: go on. Any other
//!    verdict ends the message (or, at connect, the connection), except a refusal at RCPT,
//!    which refuses that recipient only, and [`Verdict::Skip`] to a body chunk, after which
//!    [`Client::body`] returns `None` (send no more body; go to the end of the message).
//! 3. At the end of the message the milter sends its [`Modification`]s (each an
//!    [`Event::Modification`], only those negotiated), then the verdict: apply the changes on
//!    [`Verdict::Continue`] or [`Verdict::Accept`]; drop them on a refusal.
//! 4. Another message may follow ([`Client::mail`] again; [`Client::abort`] first if one was
//!    left unfinished), or [`Client::quit`].
//!
//! A milter that breaks the protocol — an oversized or malformed packet, a reply nobody
//! asked for, a modification it did not negotiate — is an [`Error`], never a panic; the
//! session is over and the MTA applies its default action.
//!
//! ```
//! use smtp_proto::milter::{Client, Config, Event, Family, Progress, Verdict};
//!
//! let mut milter = Client::new(Config::new());
//! let mut out = [0u8; 512];
//! let n = milter.negotiate(&mut out).unwrap();
//! assert_eq!(&out[..n], b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xf7\xff");
//!
//! // The milter's answer: version 6, it may add headers, wants no HELO and no body.
//! let input = b"\0\0\0\x0dO\0\0\0\x06\0\0\0\x01\0\0\0\x12";
//! let r = milter.handle_input(input).unwrap();
//! assert_eq!(r.consumed, input.len());
//! assert!(matches!(r.progress, Progress::Event(Event::Negotiated { .. })));
//!
//! let peer = "192.0.2.1:4567".parse().unwrap();
//! let n = milter.connect(&[("j", "mx.example.org")], b"[192.0.2.1]", Family::Inet(peer), &mut out).unwrap();
//! assert!(milter.awaiting_reply());
//! # let _ = n;
//! let r = milter.handle_input(b"\0\0\0\x01c").unwrap();
//! assert!(matches!(r.progress, Progress::Event(Event::Verdict { verdict: Verdict::Continue, .. })));
//! assert_eq!(milter.helo(&[], "client.example", &mut out), Ok(0)); // not wanted
//! ```

mod error;
mod event;
pub mod flags;
mod wire;

pub use error::{ApiError, Error, Problem};
pub use event::{Event, Input, MacroLists, Modification, Negotiated, Progress, ReplyCode, Verdict};
pub use flags::{Actions, Protocol, Stage, MAX_CHUNK, VERSION};

use flags::{command, reply};
use wire::{Fields, Writer};

/// The default of [`Config::max_packet`]: a body chunk of [`MAX_CHUNK`] and its command
/// byte, and room to spare for a header field.
pub const MAX_PACKET: usize = 65_536 + 1024;

/// A macro: its name (`j`, `{daemon_name}`) and value.
pub type Macro<'a> = (&'a str, &'a str);

/// Where the SMTP client connected from (`SMFIC_CONNECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family<'a> {
    /// TCP over IPv4 or IPv6: the client's address and port.
    Inet(core::net::SocketAddr),
    /// A Unix socket, by its path.
    Unix(&'a str),
    /// Unknown (no address is sent).
    Unknown,
}

/// What the MTA offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// The actions offered: those the caller applies. Default: [`Actions::ALL`].
    pub actions: Actions,
    /// The protocol steps offered. Default: [`Protocol::OFFER`], everything this machine
    /// honours.
    pub protocol: Protocol,
    /// The longest packet accepted from the milter (its length field: command byte and
    /// data). Default [`MAX_PACKET`].
    pub max_packet: usize,
}

impl Config {
    /// The defaults.
    pub const fn new() -> Self {
        Self { actions: Actions::ALL, protocol: Protocol::OFFER, max_packet: MAX_PACKET }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the conversation is: which requests fit next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent.
    Start,
    /// Negotiated, before connect.
    Negotiated,
    /// Connected; between messages.
    Connected,
    /// The connection was refused or accepted as a whole at connect: only quit.
    Finished,
    /// After MAIL.
    Mail,
    /// After RCPT.
    Rcpt,
    /// After DATA or a header field.
    Headers,
    /// After the end of headers or a body chunk.
    Body,
    /// After the end of message (until its verdict).
    Ending,
    /// After quit, or a milter error.
    Closed,
}

/// The MTA side of one milter connection. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Client {
    config: Config,
    phase: Phase,
    /// The stage whose answer is awaited.
    awaiting: Option<Stage>,
    negotiated: Option<Negotiated>,
    /// The milter answered a body chunk with skip.
    skip_body: bool,
    error: Option<Error>,
}

impl Client {
    /// A client that offers what `config` says.
    pub fn new(config: Config) -> Self {
        Self { config, phase: Phase::Start, awaiting: None, negotiated: None, skip_body: false, error: None }
    }

    /// Whether a reply of the milter is awaited (read and call [`Client::handle_input`]).
    pub fn awaiting_reply(&self) -> bool {
        self.awaiting.is_some()
    }

    /// The stage whose answer is awaited.
    pub fn awaiting(&self) -> Option<Stage> {
        self.awaiting
    }

    /// The outcome of the negotiation, once it is known.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether the milter wants `stage` sent (it did not ask to leave it out, and, for the
    /// body, did not skip the rest).
    pub fn wants(&self, stage: Stage) -> bool {
        let (no, _) = stage.flags();
        let asked = self.negotiated.map_or(Protocol::NONE, |n| n.protocol);
        let left_out = !no.is_empty() && asked.contains(no);
        let skipped = stage == Stage::Body && self.skip_body;
        !(left_out || skipped)
    }

    /// Whether the session ended (after [`Client::quit`] or a milter error).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn ready(&self) -> Result<(), ApiError> {
        if self.phase == Phase::Closed {
            return Err(ApiError::Closed);
        }
        if self.awaiting.is_some() {
            return Err(ApiError::AwaitingReply);
        }
        Ok(())
    }

    /// Writes `stage`'s macros and command (if the milter wants the stage), then moves to
    /// `next` and awaits the answer unless the milter asked for none.
    fn send(
        &mut self,
        stage: Stage,
        allowed: &[Phase],
        next: Phase,
        macros: &[Macro<'_>],
        out: &mut [u8],
        data: impl FnOnce(&mut Writer<'_>),
    ) -> Result<usize, ApiError> {
        self.ready()?;
        if !allowed.contains(&self.phase) {
            return Err(ApiError::OutOfOrder);
        }
        if !self.wants(stage) {
            self.phase = next;
            return Ok(0);
        }
        let mut w = Writer::new(out);
        if !macros.is_empty() {
            w.open(command::MACRO);
            w.bytes(&[stage.command()]);
            for (name, value) in macros {
                w.field(name.as_bytes());
                w.field(value.as_bytes());
            }
            w.close();
        }
        w.open(stage.command());
        data(&mut w);
        w.close();
        let n = w.finish()?;
        let (_, nr) = stage.flags();
        let asked = self.negotiated.map_or(Protocol::NONE, |n| n.protocol);
        if nr.is_empty() || !asked.contains(nr) {
            self.awaiting = Some(stage);
        }
        self.phase = next;
        Ok(n)
    }

    /// `SMFIC_OPTNEG`: version 6 and what [`Config`] offers. Answered by
    /// [`Event::Negotiated`].
    pub fn negotiate(&mut self, out: &mut [u8]) -> Result<usize, ApiError> {
        let (actions, protocol) = (self.config.actions, self.config.protocol);
        self.send(Stage::Negotiate, &[Phase::Start], Phase::Negotiated, &[], out, |w| {
            w.bytes(&VERSION.to_be_bytes());
            w.bytes(&actions.0.to_be_bytes());
            w.bytes(&protocol.0.to_be_bytes());
        })
    }

    /// `SMFIC_CONNECT`: the client's host name (`[192.0.2.1]` when it has none) and address,
    /// with the connect macros (`j`, `_`, `{daemon_name}`, `{client_addr}`...).
    pub fn connect(
        &mut self,
        macros: &[Macro<'_>],
        hostname: &[u8],
        family: Family<'_>,
        out: &mut [u8],
    ) -> Result<usize, ApiError> {
        self.send(Stage::Connect, &[Phase::Negotiated], Phase::Connected, macros, out, |w| {
            w.field(hostname);
            match family {
                Family::Inet(addr) => {
                    w.bytes(if addr.is_ipv4() { b"4" } else { b"6" });
                    w.bytes(&addr.port().to_be_bytes());
                    wire::display(w, addr.ip());
                    w.bytes(&[0]);
                }
                Family::Unix(path) => {
                    w.bytes(b"L\0\0");
                    w.field(path.as_bytes());
                }
                Family::Unknown => w.bytes(b"U"),
            }
        })
    }

    /// `SMFIC_HELO`: the HELO/EHLO argument.
    pub fn helo(&mut self, macros: &[Macro<'_>], name: &str, out: &mut [u8]) -> Result<usize, ApiError> {
        self.send(Stage::Helo, &[Phase::Connected], Phase::Connected, macros, out, |w| w.field(name.as_bytes()))
    }

    /// `SMFIC_MAIL`: the envelope sender in angle brackets (`<>` for the null sender) and
    /// its ESMTP arguments (`SIZE=1024`, `BODY=8BITMIME`), with the macros `{mail_addr}`,
    /// `{auth_authen}`...
    pub fn mail(
        &mut self,
        macros: &[Macro<'_>],
        sender: &str,
        args: &[&str],
        out: &mut [u8],
    ) -> Result<usize, ApiError> {
        self.skip_body = false;
        self.send(Stage::Mail, &[Phase::Connected], Phase::Mail, macros, out, |w| {
            w.field(sender.as_bytes());
            args.iter().for_each(|a| w.field(a.as_bytes()));
        })
    }

    /// `SMFIC_RCPT`: one recipient in angle brackets and its ESMTP arguments, with the macro
    /// `{rcpt_addr}`.
    pub fn rcpt(&mut self, macros: &[Macro<'_>], rcpt: &str, args: &[&str], out: &mut [u8]) -> Result<usize, ApiError> {
        self.send(Stage::Rcpt, &[Phase::Mail, Phase::Rcpt], Phase::Rcpt, macros, out, |w| {
            w.field(rcpt.as_bytes());
            args.iter().for_each(|a| w.field(a.as_bytes()));
        })
    }

    /// `SMFIC_DATA`, with the macro `i` (the queue id).
    pub fn data(&mut self, macros: &[Macro<'_>], out: &mut [u8]) -> Result<usize, ApiError> {
        self.send(Stage::Data, &[Phase::Rcpt], Phase::Headers, macros, out, |_| {})
    }

    /// `SMFIC_HEADER`: one field, its name and its value (without the colon; without the
    /// space after it unless the milter negotiated [`Protocol::HEADER_LEADING_SPACE`]; lines
    /// of a folded value joined by their line breaks).
    pub fn header(&mut self, name: &[u8], value: &[u8], out: &mut [u8]) -> Result<usize, ApiError> {
        self.send(Stage::Header, &[Phase::Rcpt, Phase::Headers], Phase::Headers, &[], out, |w| {
            w.field(name);
            w.field(value);
        })
    }

    /// `SMFIC_EOH`: the end of the header block.
    pub fn end_of_headers(&mut self, macros: &[Macro<'_>], out: &mut [u8]) -> Result<usize, ApiError> {
        self.send(Stage::EndOfHeaders, &[Phase::Rcpt, Phase::Headers], Phase::Body, macros, out, |_| {})
    }

    /// `SMFIC_BODY` for a chunk of `len` octets (at most [`MAX_CHUNK`]): the packet header
    /// to send, immediately followed by the chunk itself (not copied here). `None`: the
    /// milter wants no (more) body; go to [`Client::end_of_message`].
    pub fn body(&mut self, len: usize) -> Result<Option<[u8; 5]>, ApiError> {
        self.ready()?;
        if !matches!(self.phase, Phase::Rcpt | Phase::Headers | Phase::Body) {
            return Err(ApiError::OutOfOrder);
        }
        if len > MAX_CHUNK {
            return Err(ApiError::ChunkTooLarge);
        }
        self.phase = Phase::Body;
        if !self.wants(Stage::Body) {
            return Ok(None);
        }
        let n = (len as u32 + 1).to_be_bytes();
        let (_, nr) = Stage::Body.flags();
        if !self.negotiated.is_some_and(|n| n.protocol.contains(nr)) {
            self.awaiting = Some(Stage::Body);
        }
        Ok(Some([n[0], n[1], n[2], n[3], command::BODY]))
    }

    /// `SMFIC_BODYEOB`: the end of the message. The milter answers with its modifications,
    /// then its verdict.
    pub fn end_of_message(&mut self, macros: &[Macro<'_>], out: &mut [u8]) -> Result<usize, ApiError> {
        let allowed = [Phase::Rcpt, Phase::Headers, Phase::Body];
        self.send(Stage::EndOfMessage, &allowed, Phase::Ending, macros, out, |_| {})
    }

    /// `SMFIC_ABORT`: the current message is abandoned (no reply); the next may start.
    pub fn abort(&mut self, out: &mut [u8]) -> Result<usize, ApiError> {
        self.ready()?;
        if matches!(self.phase, Phase::Start | Phase::Negotiated | Phase::Finished) {
            return Err(ApiError::OutOfOrder);
        }
        let mut w = Writer::new(out);
        w.open(command::ABORT);
        w.close();
        let n = w.finish()?;
        self.phase = Phase::Connected;
        self.skip_body = false;
        Ok(n)
    }

    /// `SMFIC_QUIT`: the end of the connection (no reply). Allowed at any time, also while a
    /// reply is awaited (after a timeout) or after a milter error; then close the connection.
    pub fn quit(&mut self, out: &mut [u8]) -> Result<usize, ApiError> {
        let mut w = Writer::new(out);
        w.open(command::QUIT);
        w.close();
        let n = w.finish()?;
        self.phase = Phase::Closed;
        self.awaiting = None;
        Ok(n)
    }

    /// Takes the milter's bytes: consumes at most one whole packet and reports what it says.
    /// A packet when no reply is awaited (seen from its command byte on), or a packet that
    /// breaks the protocol (an oversized one as soon as its length field is in), is an
    /// [`Error`] (the same one on every later call). The error is the same whatever the
    /// split of the input.
    pub fn handle_input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let need = Input { consumed: 0, progress: Progress::NeedInput };
        if input.is_empty() {
            return Ok(need);
        }
        let Some(stage) = self.awaiting else {
            // Reported once the command byte is in (the same error whatever the split).
            let Some(&command) = input.get(4) else { return Ok(need) };
            return Err(self.fail(Error::Unexpected { command, stage: None }));
        };
        let Some((len, rest)) = input.split_first_chunk::<4>() else { return Ok(need) };
        let len = u32::from_be_bytes(*len);
        if len == 0 {
            // No command byte: the packet ends at its length field.
            return Err(self.fail(Error::Malformed { command: 0, problem: Problem::ZeroLength }));
        }
        if len as usize > self.config.max_packet {
            return Err(self.fail(Error::Oversized { len, max: self.config.max_packet as u32 }));
        }
        let Some(packet) = rest.get(..len as usize) else { return Ok(need) };
        let (command, data) = (packet[0], &packet[1..]);
        match self.decode(stage, command, data) {
            Ok(event) => Ok(Input { consumed: 4 + len as usize, progress: Progress::Event(event) }),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.error = Some(e);
        self.phase = Phase::Closed;
        self.awaiting = None;
        e
    }

    /// One packet answering `stage`.
    fn decode<'b>(&mut self, stage: Stage, command: u8, data: &'b [u8]) -> Result<Event<'b>, Error> {
        let mut f = Fields::new(command, data);
        let unexpected = Error::Unexpected { command, stage: Some(stage) };
        if stage == Stage::Negotiate {
            if command != reply::OPTNEG {
                return Err(unexpected);
            }
            return self.negotiation(f);
        }
        let verdict = match command {
            reply::CONTINUE => Verdict::Continue,
            reply::ACCEPT => Verdict::Accept,
            reply::REJECT => Verdict::Reject,
            reply::TEMPFAIL => Verdict::TempFail,
            reply::DISCARD => Verdict::Discard,
            reply::SHUTDOWN => Verdict::Shutdown,
            reply::CONNECTION_FAILURE => Verdict::ConnectionFailure,
            reply::SKIP if stage == Stage::Body && self.config.protocol.contains(Protocol::SKIP) => Verdict::Skip,
            reply::REPLY_CODE => {
                let raw = f.string()?;
                f.end()?;
                wire::reply_code(raw).map_err(|problem| Error::Malformed { command, problem })?
            }
            reply::PROGRESS => {
                f.end()?;
                return Ok(Event::Progress);
            }
            _ if stage == Stage::EndOfMessage => return self.modification(f, command),
            _ => return Err(unexpected),
        };
        f.end()?;
        self.awaiting = None;
        self.phase = match (stage, verdict) {
            (_, Verdict::Continue) => self.phase,
            (Stage::Body, Verdict::Skip) => {
                self.skip_body = true;
                Phase::Body
            }
            (Stage::Connect, _) => Phase::Finished,
            (Stage::Helo, _) => Phase::Connected,
            (Stage::Rcpt, Verdict::Reject | Verdict::TempFail | Verdict::ReplyCode(_)) => Phase::Rcpt,
            _ => Phase::Connected,
        };
        if stage == Stage::EndOfMessage {
            self.phase = Phase::Connected;
        }
        Ok(Event::Verdict { stage, verdict })
    }

    fn negotiation<'b>(&mut self, mut f: Fields<'b>) -> Result<Event<'b>, Error> {
        let version = f.u32()?;
        let actions = Actions(f.u32()?);
        let protocol = Protocol(f.u32()?);
        if !(flags::MIN_VERSION..=VERSION).contains(&version) {
            return Err(Error::Version(version));
        }
        let lists = f.rest();
        let mut check = Fields::new(reply::OPTNEG, lists);
        while !check.is_empty() {
            let stage = check.u32()?;
            check.string()?;
            if Stage::from_macro_stage(stage).is_none() {
                return Err(Error::Malformed { command: reply::OPTNEG, problem: Problem::MacroStage });
            }
        }
        let options = Negotiated {
            version,
            actions: actions.and(self.config.actions),
            protocol: protocol.and(self.config.protocol),
            refused_actions: actions.without(self.config.actions),
            ignored_protocol: protocol.without(self.config.protocol),
        };
        self.negotiated = Some(options);
        self.awaiting = None;
        Ok(Event::Negotiated { options, macros: MacroLists::new(lists) })
    }

    /// A modification at the end of the message (the wait goes on).
    fn modification<'b>(&mut self, mut f: Fields<'b>, command: u8) -> Result<Event<'b>, Error> {
        let m = match command {
            reply::ADD_HEADER => Modification::AddHeader { name: f.header_name()?, value: f.header_value()? },
            reply::INSERT_HEADER => {
                Modification::InsertHeader { index: f.u32()?, name: f.header_name()?, value: f.header_value()? }
            }
            reply::CHANGE_HEADER => {
                Modification::ChangeHeader { index: f.u32()?, name: f.header_name()?, value: f.header_value()? }
            }
            reply::ADD_RCPT => Modification::AddRecipient { rcpt: f.address()?, args: None },
            reply::ADD_RCPT_PAR => {
                let rcpt = f.address()?;
                Modification::AddRecipient { rcpt, args: Some(f.optional_string()?.unwrap_or_default()) }
            }
            reply::DEL_RCPT => Modification::DeleteRecipient { rcpt: f.address()? },
            reply::CHANGE_FROM => Modification::ChangeFrom { from: f.address()?, args: f.optional_string()? },
            reply::REPLACE_BODY => Modification::ReplaceBody(f.rest()),
            reply::QUARANTINE => Modification::Quarantine { reason: f.string()? },
            _ => return Err(Error::Unexpected { command, stage: Some(Stage::EndOfMessage) }),
        };
        f.end()?;
        let allowed = self.negotiated.map_or(Actions::NONE, |n| n.actions);
        if !allowed.contains(m.action()) {
            return Err(Error::NotNegotiated { command });
        }
        Ok(Event::Modification(m))
    }
}
