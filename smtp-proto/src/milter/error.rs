//! What can go wrong: the milter's bytes ([`Error`]) and the caller's requests ([`ApiError`]).

use core::fmt;

use super::flags::Stage;

/// What is wrong with a packet from the milter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Problem {
    /// The length field is zero (a packet holds at least its command byte).
    ZeroLength,
    /// The data is shorter than the command needs (a missing integer or NUL terminator).
    Truncated,
    /// Bytes after the last field the command carries.
    TrailingData,
    /// A header name that is empty or holds a byte outside printable ASCII or a colon.
    HeaderName,
    /// A header value with a line break not followed by a space or tab (a field injected
    /// into the header block), or ending in one.
    HeaderValue,
    /// `SMFIR_REPLYCODE` that is not a 4xx or 5xx reply.
    ReplyCode,
    /// A macro stage number outside 0..=6 in the negotiation.
    MacroStage,
    /// An address (recipient, sender) that is empty.
    EmptyAddress,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::ZeroLength => "zero length",
            Problem::Truncated => "truncated data",
            Problem::TrailingData => "unexpected data after the last field",
            Problem::HeaderName => "invalid header name",
            Problem::HeaderValue => "header value with a line break not followed by white space",
            Problem::ReplyCode => "reply code that is not a 4xx or 5xx SMTP reply",
            Problem::MacroStage => "unknown macro stage",
            Problem::EmptyAddress => "empty address",
        })
    }
}

/// A fault of the milter: its bytes do not follow the protocol. The session is over (the
/// same error is returned by every later [`super::Client::handle_input`]); send nothing more
/// but [`super::Client::quit`], close the connection and apply the default action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A packet longer than the limit (`len` is its length field: command byte and data).
    Oversized {
        /// The length field.
        len: u32,
        /// The limit ([`super::Config::max_packet`]).
        max: u32,
    },
    /// A packet whose data does not fit its command.
    Malformed {
        /// The packet's command byte.
        command: u8,
        /// What is wrong.
        problem: Problem,
    },
    /// A reply command that does not exist or cannot answer this stage (a modification
    /// before the end of the message, a skip outside the body, a negotiation answer later).
    Unexpected {
        /// The packet's command byte.
        command: u8,
        /// The stage whose answer was awaited; `None`: no answer was awaited.
        stage: Option<Stage>,
    },
    /// A modification the milter did not ask for in the negotiation (or that was not offered).
    NotNegotiated {
        /// The packet's command byte.
        command: u8,
    },
    /// The milter answered the negotiation with a protocol version outside 2..=6.
    Version(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b: &u8| if b.is_ascii_graphic() { char::from(*b) } else { '?' };
        match self {
            Error::Oversized { len, max } => write!(f, "milter packet of {len} octets, over the limit of {max}"),
            Error::Malformed { command, problem } => {
                write!(f, "malformed milter packet '{}' ({command:#04x}): {problem}", c(command))
            }
            Error::Unexpected { command, stage: Some(stage) } => {
                write!(f, "milter reply '{}' ({command:#04x}) cannot answer {stage:?}", c(command))
            }
            Error::Unexpected { command, stage: None } => {
                write!(f, "milter reply '{}' ({command:#04x}) while no reply was awaited", c(command))
            }
            Error::NotNegotiated { command } => {
                write!(f, "milter modification '{}' ({command:#04x}) was not negotiated", c(command))
            }
            Error::Version(v) => write!(f, "milter protocol version {v} (2 to 6 are understood)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// A request the machine cannot carry out: a mistake of the caller, not of the milter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiError {
    /// A reply is awaited: feed the milter's bytes to [`super::Client::handle_input`] first.
    AwaitingReply,
    /// This request does not fit here (e.g. RCPT before MAIL, a header after the end of
    /// headers, anything before the negotiation).
    OutOfOrder,
    /// The output buffer is too small for the packet; nothing was written.
    BufferTooSmall {
        /// Octets the packet needs.
        needed: usize,
    },
    /// A string argument holds a NUL octet (it would end the field early).
    Nul,
    /// A body chunk longer than [`super::MAX_CHUNK`].
    ChunkTooLarge,
    /// The session ended: after [`super::Client::quit`] or a milter [`Error`].
    Closed,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::AwaitingReply => f.write_str("a milter reply is awaited"),
            ApiError::OutOfOrder => f.write_str("milter request out of order"),
            ApiError::BufferTooSmall { needed } => write!(f, "output buffer too small: {needed} octets needed"),
            ApiError::Nul => f.write_str("a milter argument holds a NUL octet"),
            ApiError::ChunkTooLarge => f.write_str("milter body chunk over 65535 octets"),
            ApiError::Closed => f.write_str("the milter session is closed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApiError {}
