//! The application's side of a session: the [`Handler`] trait, its [`Decision`]s and the owned
//! [`Session`] / [`Envelope`] it sees.

use std::io;
use std::net::SocketAddr;

use smtp_proto::data::DataError;
use smtp_proto::parse::{ForwardPath, MailParams, RcptParams, ReversePath};
use smtp_proto::reply::EnhancedCode;
use smtp_proto::sasl::Credentials;
use smtp_proto::Reply;

/// An SMTP reply owned by the application (the core's [`Reply`] borrows its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedReply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (RFC 3463), written when the server offers ENHANCEDSTATUSCODES.
    pub enhanced: Option<EnhancedCode>,
    /// Text after the codes (one line; the core refuses line breaks).
    pub text: String,
}

impl OwnedReply {
    /// A reply with `code`, optional enhanced code `(class, subject, detail)` and `text`.
    pub fn new(code: u16, enhanced: Option<(u8, u16, u16)>, text: impl Into<String>) -> Self {
        Self { code, enhanced: enhanced.map(|(c, s, d)| EnhancedCode::new(c, s, d)), text: text.into() }
    }

    /// The reply as the core's borrowed type.
    pub fn as_reply(&self) -> Reply<'_> {
        Reply::new(self.code, self.enhanced, &self.text)
    }
}

impl From<Reply<'_>> for OwnedReply {
    fn from(r: Reply<'_>) -> Self {
        Self { code: r.code, enhanced: r.enhanced, text: r.text.to_owned() }
    }
}

/// The application's answer to a stage that waits for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Decision {
    /// Accept with the core's standard positive reply (e.g. `250 2.1.0 Sender OK`).
    #[default]
    Accept,
    /// Answer with this reply: a positive one with the code the stage calls for (250 to
    /// HELO/MAIL/end of data, 250–252 to RCPT, 354 to DATA, 235 to AUTH), or a 4xx/5xx refusal.
    /// `421` also closes the connection.
    Reply(OwnedReply),
}

impl Decision {
    /// Refuse (or answer) with a custom reply.
    pub fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: impl Into<String>) -> Self {
        Decision::Reply(OwnedReply::new(code, enhanced, text))
    }
}

impl Decision {
    /// The refusal for a local I/O error while a message is received or stored: `452 4.3.1
    /// Insufficient system storage` when storage ran out ([`is_storage_full`]), else `451
    /// 4.3.0`. The client keeps the message and tries again later either way.
    pub fn io_error(e: &io::Error) -> Self {
        if is_storage_full(e) {
            Reply::INSUFFICIENT_STORAGE.into()
        } else {
            Reply::LOCAL_ERROR.into()
        }
    }
}

/// Whether `e` says storage ran out: no space left on the device (`ENOSPC`, also when the
/// file system has no inode left) or a quota exceeded (`EDQUOT`).
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl From<Reply<'_>> for Decision {
    fn from(r: Reply<'_>) -> Self {
        Decision::Reply(r.into())
    }
}

/// The envelope of the current mail transaction, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `MAIL FROM` address once accepted; `Some("")` for the null reverse path `<>`.
    pub mail_from: Option<String>,
    /// Accepted `RCPT TO` addresses, in order (`postmaster` for `<postmaster>`).
    pub rcpt_to: Vec<String>,
    /// `SMTPUTF8` was given on MAIL.
    pub smtputf8: bool,
    /// `BODY=8BITMIME` (or `BINARYMIME`) was given on MAIL.
    pub eight_bit: bool,
    /// `SIZE=` declared on MAIL.
    pub declared_size: Option<u64>,
}

/// What the server knows about a connection, owned, kept in sync with the core's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// A number unique within this server process, for logs.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address on this connection.
    pub local: SocketAddr,
    /// TLS is active (implicit TLS, or after STARTTLS).
    pub tls: bool,
    /// The connection came in on an implicit-TLS listener (RFC 8314).
    pub implicit_tls: bool,
    /// The HELO/EHLO argument once accepted.
    pub helo: Option<String>,
    /// `true` when the client greeted with EHLO (ESMTP), `false` for HELO.
    pub esmtp: bool,
    /// The authenticated identity once AUTH succeeded.
    pub user: Option<String>,
    /// The current transaction.
    pub envelope: Envelope,
}

impl Session {
    /// A fresh session for a connection.
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, implicit_tls: bool) -> Self {
        Self {
            id,
            peer,
            local,
            tls: implicit_tls,
            implicit_tls,
            helo: None,
            esmtp: false,
            user: None,
            envelope: Envelope::default(),
        }
    }
}

/// An AUTH attempt whose SASL exchange the core ran (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// `PLAIN`, `LOGIN`, `XOAUTH2` or `OAUTHBEARER`.
    pub mechanism: &'static str,
    /// Who logs in (PLAIN authcid, LOGIN user name, XOAUTH2 user, OAUTHBEARER authzid or "").
    pub identity: &'a str,
    /// The password or bearer token.
    pub secret: &'a str,
    /// The authorisation identity to act as, when given and different (PLAIN authzid).
    pub authzid: Option<&'a str>,
}

impl<'a> AuthRequest<'a> {
    /// The request for the core's decoded credentials.
    pub fn from_credentials(c: &Credentials<'a>) -> Option<Self> {
        Some(match *c {
            Credentials::Plain { authzid, authcid, password } => AuthRequest {
                mechanism: "PLAIN",
                identity: authcid,
                secret: password,
                authzid: (!authzid.is_empty()).then_some(authzid),
            },
            Credentials::Login { username, password } => {
                AuthRequest { mechanism: "LOGIN", identity: username, secret: password, authzid: None }
            }
            Credentials::XOAuth2 { user, token } => {
                AuthRequest { mechanism: "XOAUTH2", identity: user, secret: token, authzid: None }
            }
            Credentials::OAuthBearer { authzid, token, .. } => {
                AuthRequest { mechanism: "OAUTHBEARER", identity: authzid.unwrap_or(""), secret: token, authzid: None }
            }
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

/// Formats a reverse path as an address (`""` for `<>`).
pub fn reverse_path_string(p: &ReversePath<'_>) -> String {
    match p {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    }
}

/// Formats a forward path as an address (`postmaster` for `<postmaster>`).
pub fn forward_path_string(p: &ForwardPath<'_>) -> String {
    match p {
        ForwardPath::Postmaster => "postmaster".to_owned(),
        ForwardPath::Mailbox(m) => m.to_string(),
    }
}

/// The application's hooks, one per stage of a session — the shape of Node `smtp-server`'s
/// `onConnect`, `onAuth`, `onMailFrom`, `onRcptTo`, `onData` and `onClose`.
///
/// Every method has a default: accept everything and discard the message (like `smtp-sink`),
/// except AUTH, refused by default (`535 5.7.8`). The server clones the handler for each
/// connection, so `&mut self` is per-connection state (an open file for the message, say);
/// share state between connections through an `Arc` inside the handler.
///
/// Protocol errors (syntax, bad sequence, limits, TLS and AUTH rules) never reach the handler:
/// the core answers them. Hooks see only what passed them.
pub trait Handler: Clone + Send + 'static {
    /// A client connected (before the greeting; after the handshake on an implicit-TLS
    /// listener). Refuse with e.g. `554 5.3.2` ([`Reply::NOT_ACCEPTING`]) and the connection
    /// closes; a positive reply's text replaces the banner for this connection.
    fn connect(&mut self, session: &Session) -> Decision {
        let _ = session;
        Decision::Accept
    }

    /// HELO or EHLO with its argument.
    fn helo(&mut self, session: &Session, host: &str) -> Decision {
        let _ = (session, host);
        Decision::Accept
    }

    /// AUTH with credentials decoded by the core. Accept to authenticate as
    /// `auth.identity`. Default: refuse (`535 5.7.8`).
    fn auth(&mut self, session: &Session, auth: &AuthRequest<'_>) -> Decision {
        let _ = (session, auth);
        Reply::AUTH_FAILED.into()
    }

    /// Whether `identity` names one of your accounts. A refused AUTH logs the user name only
    /// when it does (`user=<unknown>` otherwise): a password typed into the user field never
    /// reaches the log. Default: `false`, so no failed name is ever logged.
    fn knows_user(&mut self, session: &Session, identity: &str) -> bool {
        let _ = (session, identity);
        false
    }

    /// MAIL FROM with its parameters (unknown ones are in `params.unknown`).
    fn mail_from(&mut self, session: &Session, from: &ReversePath<'_>, params: &MailParams<'_>) -> Decision {
        let _ = (session, from, params);
        Decision::Accept
    }

    /// RCPT TO with its parameters.
    fn rcpt_to(&mut self, session: &Session, to: &ForwardPath<'_>, params: &RcptParams<'_>) -> Decision {
        let _ = (session, to, params);
        Decision::Accept
    }

    /// DATA (or the first BDAT): the envelope is complete. Accept to receive the content.
    fn data_start(&mut self, session: &Session) -> Decision {
        let _ = session;
        Decision::Accept
    }

    /// A piece of message content, dot-unstuffed, as it streams in. An error here is
    /// remembered: the rest of the content is skipped and the end of data is answered
    /// [`Decision::io_error`]: `452 4.3.1` when storage ran out, else `451 4.3.0` (the client
    /// keeps the message and retries).
    fn data_chunk(&mut self, session: &Session, chunk: &[u8]) -> io::Result<()> {
        let _ = (session, chunk);
        Ok(())
    }

    /// The message ended (`size` octets). Accept **only once the message is safely stored**:
    /// the client then forgets it.
    fn data_end(&mut self, session: &Session, size: u64) -> Decision {
        let _ = (session, size);
        Decision::Accept
    }

    /// The message in progress will not be delivered: refused by the core after its end
    /// (`error`: bare CR/LF, too big, line too long), content error, or the connection
    /// was lost or shut down mid-message (`error` is `None`). Clean up here.
    fn data_abort(&mut self, session: &Session, error: Option<DataError>) {
        let _ = (session, error);
    }

    /// The connection closed.
    fn close(&mut self, session: &Session) {
        let _ = session;
    }

    /// The server refused `peer` by one of its limits, without asking the other hooks: a
    /// connection (per-client limits, `max_clients`; [`Handler::connect`] is not called) or,
    /// [`Limited::Client`]`(`[`Refusal::AuthLocked`](crate::limits::Refusal::AuthLocked)`)`,
    /// an AUTH from a locked-out client. Called on the accepting thread (for connections):
    /// keep it short, e.g. a counter. Default: nothing.
    fn limited(&self, peer: SocketAddr, limit: Limited) {
        let _ = (peer, limit);
    }
}

/// Which limit refused a client ([`Handler::limited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limited {
    /// A per-client limit ([`crate::limits`]): connections, connection rate, AUTH failures.
    Client(crate::limits::Refusal),
    /// The server holds [`crate::Options::max_clients`] sessions already.
    MaxClients,
}

/// The default handler: accepts every message and discards it (like Postfix `smtp-sink`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl Handler for Sink {}
