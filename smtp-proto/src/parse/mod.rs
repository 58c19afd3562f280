//! Pure, stateless, zero-copy parsers: command lines, paths, MAIL/RCPT parameters, xtext.
//!
//! Incomplete input is a [`Status::Partial`], never an error. Errors know the reply the server
//! should send ([`command::CommandError::reply`]).

pub mod command;
pub mod params;
pub mod path;
pub mod reply;
pub(crate) mod swar;
pub mod xtext;

pub use command::{parse_command, parse_command_line, Command, CommandError, Verb};
pub use params::{
    parse_mail_params, parse_rcpt_params, Body, By, ByMode, MailAuth, MailParams, Notify, Orcpt, ParamError,
    RcptParams, Ret, UnknownParams,
};
pub use path::{
    parse_domain, parse_forward_path, parse_mailbox, parse_reverse_path, Domain, ForwardPath, Mailbox, PathError,
    ReversePath, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH,
};
pub use reply::{parse_reply, parse_reply_line, ParsedReply, ReplyError, ReplyLimits, ReplyLine};
pub use xtext::XText;

/// The result of a streaming parser: complete, or needs more input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A complete value.
    Complete(T),
    /// More input is needed; nothing was consumed.
    Partial,
}
