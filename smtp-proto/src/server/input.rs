//! The input side of a session: command lines, DATA content and BDAT chunks, consumed from
//! the caller's buffer.

use super::*;

impl<B: Buffers> Server<B> {
    /// Feeds input. See the [module docs](crate::server) for the loop.
    pub fn handle_input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, ApiMisuse> {
        let r = self.input(input);
        if self.sasl_held {
            self.settle_sasl();
        }
        r
    }

    pub(super) fn input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, ApiMisuse> {
        if self.pending.is_some() {
            return Err(ApiMisuse::DecisionPending);
        }
        // Backpressure: take input only with RESERVE free, so that whatever it makes the core
        // write fits. Not while a refused BDAT chunk is skipped: that writes nothing, and its
        // reply, held back in the queue until the chunk is consumed, could not drain to make
        // room (the session would ask for a flush forever).
        if self.free() < RESERVE && self.hold.is_none() && !matches!(self.state, State::Closed) {
            return Ok(Input { consumed: 0, progress: Progress::Flush });
        }
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let (n, step) = match self.state {
                State::Closed => (rest.len(), Step::Done(Progress::Closed)),
                State::Start => {
                    if rest.is_empty() {
                        (0, Step::Done(Progress::NeedInput))
                    } else if self.config.reject_early_talkers {
                        self.close_with(Reply::SYNC_ERROR);
                        (rest.len(), Step::Done(Progress::Closed))
                    } else {
                        return Err(ApiMisuse::Greeting);
                    }
                }
                State::TlsPending if rest.is_empty() => (0, Step::Done(Progress::NeedInput)),
                State::TlsPending => {
                    (rest.len(), Step::Done(Progress::Event(Event::PlaintextDiscarded { len: rest.len() })))
                }
                State::Data(_) => self.data(rest),
                State::DataDone(result) => (0, Step::Done(self.data_done(result))),
                State::Bdat { .. } => self.bdat(rest),
                State::Command | State::AuthExchange(_) => self.lines(rest),
            };
            consumed += n;
            match step {
                Step::Done(progress) => return Ok(Input { consumed, progress }),
                Step::Again => {}
            }
        }
    }

    pub(super) fn data<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let mut consumed = 0;
        loop {
            let State::Data(decoder) = &mut self.state else {
                return (consumed, Step::Again);
            };
            let d = decoder.decode(&input[consumed..]);
            consumed += d.consumed;
            if let Some(result) = d.end {
                self.state = State::DataDone(result);
            }
            if !d.body.is_empty() {
                return (consumed, Step::Done(Progress::Event(Event::Data(d.body))));
            }
            if d.end.is_some() {
                return (consumed, Step::Again);
            }
            if consumed >= input.len() || d.consumed == 0 {
                return (consumed, Step::Done(Progress::NeedInput));
            }
        }
    }

    pub(super) fn data_done<'b>(&mut self, result: Result<u64, DataError>) -> Progress<'b> {
        self.state = State::Command;
        match result {
            Ok(size) => self.data_end(size),
            Err(error) => {
                self.tx = None;
                self.fail(match error {
                    DataError::TooBig => Reply::TOO_BIG,
                    DataError::LineTooLong => Reply::TEXT_LINE_TOO_LONG,
                    _ => Reply::BARE_LINE_ENDING,
                });
                Progress::Event(Event::DataAborted { error })
            }
        }
    }

    pub(super) fn data_end<'b>(&mut self, size: u64) -> Progress<'b> {
        self.lmtp_left = if self.config.lmtp { self.recipients() } else { 1 };
        self.pending = Some(Pending::DataEnd);
        Progress::Event(Event::DataEnd { size })
    }

    pub(super) fn start_chunk(&mut self, size: u64, last: bool, discard: Discard) {
        self.state = State::Bdat { remaining: size, last, discard };
    }

    /// BDAT content: passed through raw, counted against the size limit and, under
    /// [`BarePolicy::Reject`], checked for bare CR and LF as DATA content is. A chunk is always
    /// consumed whole (its octet count keeps the session in sync); after a violation nothing
    /// more of it is passed on, and the chunk's reply, at its end, refuses the message
    /// ([`Event::DataAborted`], the transaction dropped: the BDATs that follow get `503`).
    /// Under `Reject`, a CR at the end of the input inside a chunk is left unconsumed until
    /// the octet after it arrives.
    pub(super) fn bdat<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let State::Bdat { remaining, last, discard } = &mut self.state else {
            return (0, Step::Again);
        };
        if *remaining == 0 {
            let (last, mut discard) = (*last, *discard);
            self.state = State::Command;
            self.hold = None;
            if discard == Discard::No && last && self.tx.is_some_and(|t| t.bare.holds_cr()) {
                // The content ends with a CR: no LF can follow it any more.
                discard = Discard::Bare;
            }
            let step = match discard {
                Discard::Refused => Step::Again,
                Discard::TooBig => {
                    self.tx = None;
                    self.fail(Reply::TOO_BIG.with_text("Chunk exceeds message size limit"));
                    Step::Done(Progress::Event(Event::DataAborted { error: DataError::TooBig }))
                }
                Discard::Bare => {
                    self.tx = None;
                    self.fail(Reply::BARE_LINE_ENDING);
                    Step::Done(Progress::Event(Event::DataAborted { error: DataError::BareLineEnding }))
                }
                Discard::No if last => Step::Done(self.data_end(self.tx.map_or(0, |t| t.size))),
                Discard::No => {
                    let mut text = PrefixBuf::new();
                    let _ = write!(text, "{} octets received", self.tx.map_or(0, |t| t.size));
                    self.say(Reply::OK.with_text(text.as_str()));
                    Step::Again
                }
            };
            return (0, step);
        }
        // This call's part of the chunk.
        let full = (*remaining).min(input.len() as u64) as usize;
        let reject = self.config.bare_line_endings == BarePolicy::Reject;
        let mut n = full;
        if reject && *discard == Discard::No && (full as u64) < *remaining && input.last() == Some(&b'\r') {
            // A CR that ends the input but not the chunk: whether it is bare shows at the next
            // octet. It stays unconsumed until that arrives, so that what is passed on does not
            // depend on how the input was split (a bare CR is never passed on; a CR ending a
            // chunk is, with its chunk, and judged by the next chunk's first octet).
            n -= 1;
        }
        if n == 0 {
            return (0, Step::Done(Progress::NeedInput));
        }
        *remaining -= n as u64;
        if *discard == Discard::No {
            let limit = self.config.max_message_size.unwrap_or(u64::MAX);
            let mut keep = n;
            if let Some(tx) = self.tx.as_mut() {
                // Pass content up to the limit exactly, so that any split reports the same.
                let room = limit.saturating_sub(tx.size);
                if n as u64 > room {
                    keep = room as usize;
                    *discard = Discard::TooBig;
                }
                if reject {
                    // Up to one octet past the limit: a bare LF there, or a bare CR just
                    // before it, is found first, as the DATA decoder finds it. (A CR that is
                    // itself past the limit is refused as too big: whether it is bare shows
                    // only at the next octet, maybe in the next chunk, after this chunk's
                    // reply.) The window may end with the CR left unconsumed: it tells whether
                    // a CR before it is bare, and is checked again with what follows it.
                    let window = &input[..full.min(keep + 1)];
                    if let Some(p) = tx.bare.check(window) {
                        keep = p;
                        *discard = Discard::Bare;
                    } else if window.len() > n {
                        tx.bare = BareCheck::default();
                    }
                }
                tx.size += keep as u64;
            }
            if keep == 0 {
                return (n, Step::Again);
            }
            return (n, Step::Done(Progress::Event(Event::Data(&input[..keep]))));
        }
        (n, Step::Again)
    }

    pub(super) fn lines<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let mut consumed = 0;
        loop {
            if self.pending.is_some() {
                return (consumed, Step::Done(Progress::NeedInput));
            }
            if !matches!(self.state, State::Command | State::AuthExchange(_)) {
                // BDAT chunk, closed...: let the dispatcher go on with the rest.
                return (consumed, Step::Again);
            }
            if self.free() < RESERVE {
                return (consumed, Step::Done(Progress::Flush));
            }
            let rest = &input[consumed..];
            let in_auth = matches!(self.state, State::AuthExchange(_));
            if let Some(skip) = self.skipping {
                let Some(lf) = memchr::memchr(b'\n', rest) else {
                    return (input.len(), Step::Done(Progress::NeedInput));
                };
                consumed += lf + 1;
                self.skipping = None;
                if in_auth {
                    self.state = State::Command;
                }
                self.fail(match skip {
                    Skip::Auth => Reply::AUTH_LINE_TOO_LONG,
                    Skip::Command => Reply::LINE_TOO_LONG,
                });
                continue;
            }
            // An AUTH command line and the SASL responses after it have the AUTH line limit,
            // every other command line the command line limit.
            let auth_line = in_auth || is_auth_line(rest);
            let limit = if auth_line { self.config.max_auth_line } else { self.config.max_command_line };
            let window = &rest[..rest.len().min(limit)];
            let Some(lf) = memchr::memchr(b'\n', window) else {
                if rest.len() >= limit {
                    // Too long: drop what we have of it and skip to its LF, never buffering it.
                    self.skipping = Some(if auth_line { Skip::Auth } else { Skip::Command });
                    consumed += window.len();
                    continue;
                }
                return (consumed, Step::Done(Progress::NeedInput));
            };
            consumed += lf + 1;
            let line = &rest[..lf];
            let (line, bare_lf) = match line.strip_suffix(b"\r") {
                Some(l) => (l, false),
                None => (line, true),
            };
            if bare_lf && self.config.bare_line_endings == BarePolicy::Reject {
                if in_auth {
                    self.state = State::Command;
                }
                self.fail(Reply::COMMAND_BARE_LF);
                continue;
            }
            if let State::AuthExchange(step) = self.state {
                if let Some(ev) = self.auth_line(step, line) {
                    return (consumed, Step::Done(Progress::Event(ev)));
                }
                continue;
            }
            let more = consumed < input.len();
            if let Some(ev) = self.command(parse_command_line(line), more) {
                return (consumed, Step::Done(Progress::Event(ev)));
            }
        }
    }
}
