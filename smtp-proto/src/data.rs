//! The DATA path: streaming dot-unstuffing on receive ([`DataDecoder`]) and dot-stuffing on send
//! ([`Stuffer`]). Correct at any split of the input; only `CRLF . CRLF` ends a message.

/// What to do with a bare CR or bare LF in message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BarePolicy {
    /// Reject the message (`550 5.5.2` after the real end). The default: the SMTP smuggling
    /// defence.
    #[default]
    Reject,
    /// Pass them through unchanged. They never end a message and never start a line.
    Allow,
}

/// Why a message was refused after its real end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataError {
    /// A bare LF or bare CR under [`BarePolicy::Reject`].
    BareLineEnding,
    /// The message is larger than the limit.
    TooBig,
    /// A text line was longer than the limit.
    LineTooLong,
}

/// One step of [`DataDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'b> {
    /// Input bytes consumed (always > 0 when the input was not empty).
    pub consumed: usize,
    /// Unstuffed body bytes: a sub-slice of the input, or a `'static` one for a CR held across
    /// calls. May be empty. Never includes the final `.CRLF`; includes the CRLF before it.
    pub body: &'b [u8],
    /// `Some` once the real end (`CRLF.CRLF`) was consumed: the body size, or why it is refused.
    pub end: Option<Result<u64, DataError>>,
}

/// Streaming dot-unstuffing decoder for DATA content (helper: implement).
#[derive(Debug, Clone)]
pub struct DataDecoder {
    _policy: BarePolicy,
}

impl DataDecoder {
    /// A decoder positioned right after the 354 (at the start of a line).
    pub fn new(policy: BarePolicy, max_size: Option<u64>, max_line: Option<usize>) -> Self {
        let _ = (max_size, max_line);
        Self { _policy: policy }
    }

    /// Decodes the next piece of `input`.
    pub fn decode<'b>(&mut self, input: &'b [u8]) -> Decoded<'b> {
        Decoded { consumed: input.len(), body: input, end: None }
    }
}

/// Streaming dot-stuffer for the send side (helper: implement).
#[derive(Debug, Clone, Default)]
pub struct Stuffer {
    _policy: BarePolicy,
}
