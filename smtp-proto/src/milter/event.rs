//! What the machine reports: [`Event`]s borrowing from the input, with the milter's
//! [`Verdict`]s and [`Modification`]s.

use core::fmt;

use crate::reply::EnhancedCode;

use super::flags::{Actions, Protocol, Stage};

/// The outcome of the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// The milter's protocol version (2..=6).
    pub version: u32,
    /// The actions the milter will use (within those offered).
    pub actions: Actions,
    /// The protocol steps the milter asked for (within those offered).
    pub protocol: Protocol,
    /// Actions the milter asked for that were not offered: it must not use them (a
    /// modification of theirs is [`super::Error::NotNegotiated`]).
    pub refused_actions: Actions,
    /// Protocol steps the milter asked for that were not offered: ignored.
    pub ignored_protocol: Protocol,
}

/// The macros a milter asked for, per stage (`SMFIR_SETSYMLIST` in its negotiation answer).
/// Send those (sending more does no harm).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacroLists<'b> {
    /// Validated `(u32 stage, name list NUL)` records.
    raw: &'b [u8],
}

impl<'b> MacroLists<'b> {
    pub(crate) fn new(raw: &'b [u8]) -> Self {
        Self { raw }
    }

    /// Whether the milter asked for no list.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Each stage with its list of macro names (space-separated, as sent: `{j} {daemon_name}`).
    pub fn iter(&self) -> impl Iterator<Item = (Stage, &'b [u8])> + 'b {
        let mut rest = self.raw;
        core::iter::from_fn(move || {
            let (n, tail) = rest.split_first_chunk::<4>()?;
            let end = tail.iter().position(|&b| b == 0)?;
            let stage = Stage::from_macro_stage(u32::from_be_bytes(*n))?;
            let names = &tail[..end];
            rest = &tail[end + 1..];
            Some((stage, names))
        })
    }
}

impl fmt::Debug for MacroLists<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(s, n)| (s, Text(n)))).finish()
    }
}

/// Bytes shown as text in `Debug`.
struct Text<'a>(&'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// `SMFIR_REPLYCODE`: the SMTP reply the milter wants the client to get (4xx or 5xx).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyCode<'b> {
    /// The reply code (400..=599).
    pub code: u16,
    /// The enhanced status code, when the text starts with one of the same class.
    pub enhanced: Option<EnhancedCode>,
    /// The first line's text after the codes, without a line end.
    pub text: &'b [u8],
    /// The whole reply as sent (several lines are separated by CRLF), without its NUL.
    pub raw: &'b [u8],
}

impl fmt::Debug for ReplyCode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyCode")
            .field("code", &self.code)
            .field("enhanced", &self.enhanced)
            .field("text", &Text(self.text))
            .finish()
    }
}

/// The milter's answer to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict<'b> {
    /// `SMFIR_CONTINUE`: go on (at the end of the message: accept it, with the modifications
    /// reported before).
    Continue,
    /// `SMFIR_ACCEPT`: accept — the connection (at connect or HELO) or the message (later) —
    /// without further filtering.
    Accept,
    /// `SMFIR_REJECT`: refuse with a 5xx (a recipient at RCPT, else the message; at connect,
    /// the connection).
    Reject,
    /// `SMFIR_TEMPFAIL`: refuse with a 4xx (same scope as [`Verdict::Reject`]).
    TempFail,
    /// `SMFIR_DISCARD`: accept the message and drop it silently.
    Discard,
    /// `SMFIR_REPLYCODE`: refuse with this reply (same scope as [`Verdict::Reject`]).
    ReplyCode(ReplyCode<'b>),
    /// `SMFIR_SKIP` (answer to a body chunk): send no more body, go to the end of the message.
    Skip,
    /// `SMFIR_SHUTDOWN`: the milter is going away (Postfix answers 421 and closes).
    Shutdown,
    /// `SMFIR_CONN_FAIL`: fail the SMTP connection (421).
    ConnectionFailure,
}

/// A change to the message the milter asks for at the end of the message, before its verdict.
/// The caller applies them in the order reported, to the message as the milter saw it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Modification<'b> {
    /// `SMFIR_ADDHEADER`: append the field at the end of the header block.
    AddHeader {
        /// The field name.
        name: &'b [u8],
        /// The value (a line break inside it is followed by white space).
        value: &'b [u8],
    },
    /// `SMFIR_INSHEADER`: insert the field before the `index`-th field (0: on top; past the
    /// end: appended).
    InsertHeader {
        /// 0-based position in the header block.
        index: u32,
        /// The field name.
        name: &'b [u8],
        /// The value.
        value: &'b [u8],
    },
    /// `SMFIR_CHGHEADER`: replace the value of the `index`-th field named `name` (1-based,
    /// names compared without case); an empty value deletes it; past the last such field
    /// the field is appended (libmilter's `smfi_chgheader`).
    ChangeHeader {
        /// 1-based occurrence of the name.
        index: u32,
        /// The field name.
        name: &'b [u8],
        /// The new value; empty: delete the field.
        value: &'b [u8],
    },
    /// `SMFIR_ADDRCPT` / `SMFIR_ADDRCPT_PAR`: add an envelope recipient.
    AddRecipient {
        /// The address (as the milter wrote it, usually in angle brackets).
        rcpt: &'b [u8],
        /// ESMTP arguments (`SMFIR_ADDRCPT_PAR`), if any.
        args: Option<&'b [u8]>,
    },
    /// `SMFIR_DELRCPT`: remove an envelope recipient.
    DeleteRecipient {
        /// The address, as given at RCPT.
        rcpt: &'b [u8],
    },
    /// `SMFIR_CHGFROM`: change the envelope sender (an MTA may refuse to).
    ChangeFrom {
        /// The new sender.
        from: &'b [u8],
        /// ESMTP arguments, if any.
        args: Option<&'b [u8]>,
    },
    /// `SMFIR_REPLBODY`: one chunk of the new body (the chunks in order replace the whole
    /// body; CRLF line ends).
    ReplaceBody(&'b [u8]),
    /// `SMFIR_QUARANTINE`: hold the message (file it away) for this reason.
    Quarantine {
        /// Why.
        reason: &'b [u8],
    },
}

impl fmt::Debug for Modification<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Modification::AddHeader { name, value } => {
                f.debug_struct("AddHeader").field("name", &Text(name)).field("value", &Text(value)).finish()
            }
            Modification::InsertHeader { index, name, value } => f
                .debug_struct("InsertHeader")
                .field("index", index)
                .field("name", &Text(name))
                .field("value", &Text(value))
                .finish(),
            Modification::ChangeHeader { index, name, value } => f
                .debug_struct("ChangeHeader")
                .field("index", index)
                .field("name", &Text(name))
                .field("value", &Text(value))
                .finish(),
            Modification::AddRecipient { rcpt, args } => {
                f.debug_struct("AddRecipient").field("rcpt", &Text(rcpt)).field("args", &args.map(Text)).finish()
            }
            Modification::DeleteRecipient { rcpt } => {
                f.debug_struct("DeleteRecipient").field("rcpt", &Text(rcpt)).finish()
            }
            Modification::ChangeFrom { from, args } => {
                f.debug_struct("ChangeFrom").field("from", &Text(from)).field("args", &args.map(Text)).finish()
            }
            Modification::ReplaceBody(chunk) => f.debug_tuple("ReplaceBody").field(&Text(chunk)).finish(),
            Modification::Quarantine { reason } => f.debug_struct("Quarantine").field("reason", &Text(reason)).finish(),
        }
    }
}

impl Modification<'_> {
    /// The action the milter must have negotiated to ask for this.
    pub fn action(&self) -> Actions {
        match self {
            Modification::AddHeader { .. } | Modification::InsertHeader { .. } => Actions::ADD_HEADERS,
            Modification::ChangeHeader { .. } => Actions::CHANGE_HEADERS,
            Modification::AddRecipient { args: None, .. } => Actions::ADD_RCPT,
            Modification::AddRecipient { args: Some(_), .. } => Actions::ADD_RCPT_PAR,
            Modification::DeleteRecipient { .. } => Actions::DEL_RCPT,
            Modification::ChangeFrom { .. } => Actions::CHANGE_FROM,
            Modification::ReplaceBody(_) => Actions::CHANGE_BODY,
            Modification::Quarantine { .. } => Actions::QUARANTINE,
        }
    }
}

/// What the machine reports after [`super::Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'b> {
    /// The milter answered the negotiation; the connection may start.
    Negotiated {
        /// Versions, actions and steps agreed.
        options: Negotiated,
        /// The macros it wants per stage, if it said.
        macros: MacroLists<'b>,
    },
    /// The milter's answer to `stage`; the wait is over (unless it is a
    /// [`Verdict::Continue`] for a body chunk: then send the next one).
    Verdict {
        /// The stage answered.
        stage: Stage,
        /// The answer.
        verdict: Verdict<'b>,
    },
    /// A modification (only while the end of the message is answered); the wait goes on.
    Modification(Modification<'b>),
    /// `SMFIR_PROGRESS`: the milter is still working; the wait goes on (restart its timer).
    Progress,
}

/// What to do next after [`super::Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Progress<'b> {
    /// Handle this event, then call `handle_input` again with the rest of the input.
    Event(Event<'b>),
    /// The input holds no whole packet: read more (if a reply is awaited), keeping the
    /// unconsumed bytes.
    NeedInput,
}

/// The result of [`super::Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Input<'b> {
    /// Octets of the input consumed; keep the rest and feed it again.
    pub consumed: usize,
    /// What to do next.
    pub progress: Progress<'b>,
}
