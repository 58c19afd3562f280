//! Verdict header fields that arrive with a message are renamed as it streams into the spool:
//! `Authentication-Results:` becomes `X-Original-Authentication-Results:` and every
//! `X-Spam*:` field (`X-Spam-Flag`, `X-Spam-Status`, rspamd's `X-Spam`, `X-Spamd-Result`)
//! gets the same `X-Original-` prefix, so that a sender cannot mark its own mail as checked
//! or clean (RFC 8601 §5) and the only fields by those names are ours, added on top.
//!
//! [`HeaderFilter`] is a line-state machine over the content as the session hands it over, in
//! chunks split anywhere: it holds at most the first [`NAME_BUFFER`] octets of a header line
//! (until it knows the field's name) and nothing else; continuation lines and the body pass
//! through untouched, and so does everything once the empty line that ends the header block
//! has gone by. `ARC-Authentication-Results:` is left alone (renaming it would break the ARC
//! seal).

use std::io;

/// Octets of a header line held until its name is known: the longest name renamed
/// (`Authentication-Results`, 22) and some whitespace before the colon (obsolete syntax).
pub const NAME_BUFFER: usize = 32;

/// The prefix put before a renamed field's name.
pub const RENAMED_PREFIX: &[u8] = b"X-Original-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Checking nothing (not started, or a client whose fields are kept).
    #[default]
    Off,
    /// At the start of a header line, or within its name (the octets so far in the buffer).
    Name,
    /// Within a header line whose fate is decided, up to its LF.
    Rest,
    /// In the body: everything passes.
    Body,
}

/// See the [module notes](self).
#[derive(Debug, Clone, Default)]
pub struct HeaderFilter {
    state: State,
    buf: [u8; NAME_BUFFER],
    len: usize,
    /// Fields renamed in this message.
    renamed: usize,
}

/// Whether the field name (its first octets up to the colon, or the buffer's worth) is one
/// of ours.
fn is_verdict_field(name: &[u8], complete: bool) -> bool {
    let starts = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"X-Spam") {
        return true;
    }
    let trimmed = name.trim_ascii_end();
    complete && trimmed.eq_ignore_ascii_case(b"Authentication-Results")
}

impl HeaderFilter {
    /// A filter for a new message: renaming when `active`, else passing everything.
    pub fn start(&mut self, active: bool) {
        *self = Self { state: if active { State::Name } else { State::Off }, ..Self::default() };
    }

    /// How many fields were renamed in this message so far.
    pub fn renamed(&self) -> usize {
        self.renamed
    }

    /// The held octets, renamed or not, to `out`.
    fn release(&mut self, complete: bool, out: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let held = &self.buf[..self.len];
        if is_verdict_field(held, complete) {
            self.renamed += 1;
            out(RENAMED_PREFIX)?;
        }
        out(&self.buf[..self.len])?;
        self.len = 0;
        Ok(())
    }

    /// Passes `chunk` (the next octets of the message content) to `out`, renaming the
    /// verdict fields of its header block.
    pub fn write(&mut self, chunk: &[u8], out: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        // Start of the octets of `chunk` not yet written that pass unchanged.
        let mut from = 0;
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::Off | State::Body => break,
                State::Rest => match chunk[i..].iter().position(|&b| b == b'\n') {
                    Some(lf) => {
                        i += lf + 1;
                        out(&chunk[from..i])?;
                        from = i;
                        self.state = State::Name;
                    }
                    None => i = chunk.len(),
                },
                State::Name => {
                    let b = chunk[i];
                    if b == b'\n' {
                        // A line without a colon: the empty line (LF or CRLF) ends the header
                        // block; anything else is passed as it is.
                        let empty = self.buf[..self.len] == *b"" || self.buf[..self.len] == *b"\r";
                        self.release(false, out)?;
                        out(b"\n")?;
                        i += 1;
                        from = i;
                        if empty {
                            self.state = State::Body;
                        }
                    } else if self.len == 0 && (b == b' ' || b == b'\t') {
                        // A continuation line: it belongs to the field above, decided already.
                        from = i;
                        self.state = State::Rest;
                    } else if b == b':' || self.len == NAME_BUFFER {
                        self.release(b == b':', out)?;
                        from = i;
                        self.state = State::Rest;
                    } else {
                        self.buf[self.len] = b;
                        self.len += 1;
                        i += 1;
                        from = i;
                    }
                }
            }
        }
        if from < chunk.len() {
            out(&chunk[from..])?;
        }
        Ok(())
    }

    /// The end of the content: writes what is still held (a last line without a line end).
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.state == State::Name && self.len > 0 {
            self.release(false, out)?;
        }
        self.state = State::Off;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], splits: &[usize]) -> Vec<u8> {
        let mut f = HeaderFilter::default();
        f.start(true);
        let mut got = Vec::new();
        let mut out = |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(())
        };
        let mut at = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            f.write(&input[at..s], &mut out).unwrap();
            at = s;
        }
        f.finish(&mut out).unwrap();
        got
    }

    const IN: &[u8] = b"Authentication-Results: mx.example.org; dmarc=pass\r\n\
        \tdkim=pass\r\n\
        From: <a@example.org>\r\n\
        x-spam-flag: NO\r\n\
        X-Spam-Status: No, score=-100\r\n\
        ARC-Authentication-Results: i=1; mx.example.org\r\n\
        Authentication-Results-Not: x\r\n\
        Authentication-Results : obsolete\r\n\
        X-Spam: no\r\n\
        X-Spamd-Result-With-A-Very-Long-Name-Indeed-Longer-Than-The-Buffer: x\r\n\
        Subject: Authentication-Results: in a value\r\n\
        \r\n\
        Authentication-Results: in the body\r\n\
        X-Spam-Flag: NO\r\n";

    const OUT: &[u8] = b"X-Original-Authentication-Results: mx.example.org; dmarc=pass\r\n\
        \tdkim=pass\r\n\
        From: <a@example.org>\r\n\
        X-Original-x-spam-flag: NO\r\n\
        X-Original-X-Spam-Status: No, score=-100\r\n\
        ARC-Authentication-Results: i=1; mx.example.org\r\n\
        Authentication-Results-Not: x\r\n\
        X-Original-Authentication-Results : obsolete\r\n\
        X-Original-X-Spam: no\r\n\
        X-Original-X-Spamd-Result-With-A-Very-Long-Name-Indeed-Longer-Than-The-Buffer: x\r\n\
        Subject: Authentication-Results: in a value\r\n\
        \r\n\
        Authentication-Results: in the body\r\n\
        X-Spam-Flag: NO\r\n";

    #[test]
    fn renames_verdict_fields_of_the_header_block_only() {
        assert_eq!(String::from_utf8_lossy(&run(IN, &[])), String::from_utf8_lossy(OUT));
    }

    #[test]
    fn every_split_gives_the_same_result() {
        for a in 0..=IN.len() {
            assert_eq!(run(IN, &[a]), OUT, "split at {a}");
        }
        for a in (0..=IN.len()).step_by(7) {
            for b in a..=IN.len() {
                assert_eq!(run(IN, &[a, b]), OUT, "split at {a}, {b}");
            }
        }
        let every: Vec<usize> = (1..IN.len()).collect();
        assert_eq!(run(IN, &every), OUT, "one octet at a time");
    }

    #[test]
    fn bare_lf_lines_no_header_block_and_an_unterminated_end() {
        assert_eq!(
            run(b"X-Spam-Flag: NO\nA: b\n\nX-Spam-Flag: NO\n", &[3]),
            b"X-Original-X-Spam-Flag: NO\nA: b\n\nX-Spam-Flag: NO\n"
        );
        assert_eq!(run(b"\r\nX-Spam-Flag: NO\r\n", &[1]), b"\r\nX-Spam-Flag: NO\r\n");
        assert_eq!(run(b"A: b\r\nX-Spam", &[]), b"A: b\r\nX-Original-X-Spam");
        assert_eq!(run(b"A: b\r\nAuthentication-Results", &[]), b"A: b\r\nAuthentication-Results");
        // Off: nothing changes.
        let mut f = HeaderFilter::default();
        f.start(false);
        let mut got = Vec::new();
        f.write(IN, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, IN);
    }
}
