//! LMTP after the end of data (RFC 2033 §4.2): one reply per recipient accepted at RCPT, in
//! RCPT order, each one that recipient's outcome.

use crate::parse::reply::ParsedReply;

use super::{summary, Client, Command, Deferred, Error, ErrorKind, Event, RcptResult, State, Step};

impl<const N: usize> Client<N> {
    /// The end of data is queued: each recipient accepted at RCPT now waits for its own reply
    /// (its entry in the results becomes `None` until then).
    pub(super) fn lmtp_expect_replies(&mut self) {
        let mut due = 0;
        for r in &mut self.results[..self.tx.count] {
            if r.is_some_and(|r| r.is_accepted()) {
                *r = None;
                due += 1;
            }
        }
        self.tx.lmtp_left = due;
        self.tx.lmtp_cursor = 0;
        self.tx.delivered = 0;
    }

    /// Stores a reply after the end of data as the outcome of the next recipient waiting for
    /// one; returns that recipient's index (`None` if no reply was due).
    pub(super) fn lmtp_record(&mut self, r: &ParsedReply<'_>) -> Option<usize> {
        if self.tx.lmtp_left == 0 {
            return None;
        }
        let count = self.tx.count;
        let at = self.tx.lmtp_cursor;
        let i = at + self.results.get(at..count)?.iter().position(Option::is_none)?;
        self.results[i] = Some(RcptResult { code: r.code(), enhanced: r.enhanced() });
        self.tx.lmtp_cursor = i + 1;
        self.tx.lmtp_left -= 1;
        if r.is_success() {
            self.tx.delivered += 1;
        }
        Some(i)
    }

    /// A reply after the end of data: reported with its recipient; after the last one the
    /// client is idle and [`Event::LmtpDone`] follows on the next call.
    pub(super) fn lmtp_reply<'b>(&mut self, r: ParsedReply<'b>) -> Event<'b> {
        let Some(i) = self.lmtp_record(&r) else {
            let err = Error { step: Step::DataEnd, kind: ErrorKind::UnexpectedReply, reply: summary(&r) };
            self.fatal(err);
            return Event::Error(err);
        };
        if self.tx.lmtp_left == 0 {
            self.state = State::Ready;
            self.deferred = Deferred::LmtpDone;
        }
        Event::Reply { command: Command::DataEnd, recipient: Some(i), reply: r }
    }
}
