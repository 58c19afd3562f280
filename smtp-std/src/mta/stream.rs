//! Reading a spooled message without holding it: its header block alone (bounded), and the
//! message as CRLF lines (bare CR and bare LF become CRLF as it streams).

use std::io::{self, BufRead, Read};

/// The most of a header block that is read into memory (1 MiB): past it the block is cut at
/// a line end and reported as such.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// A message's header block, read from its start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderBlock {
    /// The header lines as written, each with its line end, followed by CRLF (the empty line
    /// that ends the block, also when the message had none): a message with an empty body.
    pub bytes: Vec<u8>,
    /// The block was longer than the limit and is cut after its last whole line.
    pub cut: bool,
}

/// Reads the header block of the message `input` starts with: its lines up to the first
/// empty line (CRLF or LF), at most `limit` octets of them. `input` is left after the empty
/// line (or after what was read, when the block was cut or there was no body).
pub fn read_header_block(input: &mut impl BufRead, limit: usize) -> io::Result<HeaderBlock> {
    let mut block = HeaderBlock::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let room = (limit.saturating_sub(block.bytes.len()) + 1) as u64;
        let n = input.by_ref().take(room).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if block.bytes.len() + line.len() > limit {
            block.cut = true;
            break;
        }
        if !line.ends_with(b"\n") {
            // The last line of a message without a body nor a final line end.
            block.bytes.extend_from_slice(&line);
            block.bytes.extend_from_slice(b"\r\n");
            break;
        }
        block.bytes.extend_from_slice(&line);
    }
    block.bytes.extend_from_slice(b"\r\n");
    Ok(block)
}

/// A reader that turns every bare CR and bare LF of `inner` into CRLF (the outbound client
/// sends a message that way, so what is signed or queued must be that).
#[derive(Debug)]
pub struct CrlfReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// The last octet given out was a CR.
    after_cr: bool,
    /// An LF owed (after the CR of a bare LF, or of a bare CR at the end).
    pending_lf: bool,
    eof: bool,
}

impl<R: Read> CrlfReader<R> {
    /// Wraps `inner` (read in 64 KiB pieces: `inner` needs no buffer of its own).
    pub fn new(inner: R) -> Self {
        Self { inner, buf: vec![0; 64 * 1024], pos: 0, len: 0, after_cr: false, pending_lf: false, eof: false }
    }
}

impl<R: Read> Read for CrlfReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.pending_lf {
                self.pending_lf = false;
                out[n] = b'\n';
                n += 1;
                continue;
            }
            if self.pos == self.len {
                if self.eof || n > 0 {
                    break;
                }
                self.len = loop {
                    match self.inner.read(&mut self.buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other?,
                    }
                };
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    // A CR at the very end was bare.
                    self.pending_lf = std::mem::take(&mut self.after_cr);
                }
                continue;
            }
            if std::mem::take(&mut self.after_cr) {
                // The octet after a CR: its LF, or else the LF the bare CR was owed (and this
                // octet again on the next turn).
                out[n] = b'\n';
                n += 1;
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            // A run without CR or LF is copied whole (found with memchr: most of a message).
            let avail = &self.buf[self.pos..self.len];
            let room = avail.len().min(out.len() - n);
            let run = memchr::memchr2(b'\r', b'\n', &avail[..room]).unwrap_or(room);
            out[n..n + run].copy_from_slice(&avail[..run]);
            n += run;
            self.pos += run;
            if run < room {
                // A CR (its LF, or the one it is owed, comes next) or a bare LF (a CR first).
                let b = avail[run];
                out[n] = b'\r';
                n += 1;
                self.pos += 1;
                self.after_cr = b == b'\r';
                self.pending_lf = b == b'\n';
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf(input: &[u8], out_chunk: usize) -> Vec<u8> {
        let mut r = CrlfReader::new(input);
        let mut all = Vec::new();
        let mut buf = vec![0; out_chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    #[test]
    fn bare_cr_and_lf_become_crlf_at_any_output_size() {
        for size in [1, 2, 3, 7, 4096] {
            assert_eq!(crlf(b"a\nb\rc\r\nd", size), b"a\r\nb\r\nc\r\nd", "{size}");
            assert_eq!(crlf(b"\r", size), b"\r\n");
            assert_eq!(crlf(b"\r\r\n\n", size), b"\r\n\r\n\r\n");
            assert_eq!(crlf(b"", size), b"");
        }
        // Against the client's whole-message conversion, on every short mix of CR, LF, x.
        for len in 0..7u32 {
            for code in 0..3u32.pow(len) {
                let input: Vec<u8> =
                    (0..len).map(|i| [b'\r', b'\n', b'x'][(code / 3u32.pow(i) % 3) as usize]).collect();
                let mut want = if input.is_empty() { Vec::new() } else { crate::client::to_crlf(&input) };
                // to_crlf also ends a message that does not end in a line end.
                if !input.is_empty() && !input.ends_with(b"\n") && !input.ends_with(b"\r") {
                    want.truncate(want.len() - 2);
                }
                assert_eq!(crlf(&input, 3), want, "{input:?}");
            }
        }
    }

    /// Gives its input `piece` octets at a time.
    struct Pieces<'a>(&'a [u8], usize);

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn runs_and_line_ends_across_refills_match_the_whole_conversion() {
        // Every mix of CR, LF and text up to 8 octets, split into pieces of 1..4 octets by
        // the inner reader and read out 1, 3 or 64 Ki octets at a time.
        for len in 0..8u32 {
            for code in 0..3u32.pow(len) {
                let input: Vec<u8> =
                    (0..len).map(|i| [b'\r', b'\n', b'x'][(code / 3u32.pow(i) % 3) as usize]).collect();
                let want = crlf(&input, 4096);
                for piece in 1..4 {
                    for out_chunk in [1, 3, 65536] {
                        let mut r = CrlfReader::new(Pieces(&input, piece));
                        let mut all = Vec::new();
                        let mut buf = vec![0; out_chunk];
                        loop {
                            let n = r.read(&mut buf).unwrap();
                            if n == 0 {
                                break;
                            }
                            all.extend_from_slice(&buf[..n]);
                        }
                        assert_eq!(all, want, "{input:?} piece {piece} out {out_chunk}");
                    }
                }
            }
        }
        // A long canonical message is unchanged.
        let msg = "Subject: x\r\n\r\n".to_owned() + &format!("{}\r\n", "y".repeat(76)).repeat(3000);
        assert_eq!(crlf(msg.as_bytes(), 65536), msg.as_bytes());
    }

    #[test]
    fn header_block_bounded_and_cut_at_a_line() {
        let mut m: &[u8] = b"A: 1\r\nB: 2\r\n\r\nbody\r\n";
        let h = read_header_block(&mut m, 1000).unwrap();
        assert_eq!((h.bytes.as_slice(), h.cut, m), (&b"A: 1\r\nB: 2\r\n\r\n"[..], false, &b"body\r\n"[..]));
        let mut m: &[u8] = b"A: 1\nB: 2\n\nbody";
        assert_eq!(read_header_block(&mut m, 1000).unwrap().bytes, b"A: 1\nB: 2\n\r\n");
        let mut m: &[u8] = b"A: 1\r\nB: 22222\r\n\r\nbody";
        let h = read_header_block(&mut m, 10).unwrap();
        assert_eq!((h.bytes.as_slice(), h.cut), (&b"A: 1\r\n\r\n"[..], true));
        let mut m: &[u8] = b"Subject: no body";
        assert_eq!(read_header_block(&mut m, 1000).unwrap().bytes, b"Subject: no body\r\n\r\n");
    }
}
