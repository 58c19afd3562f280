//! One message as DATA and as BDAT: the same verdict and the same body, at any chunking
//! ([`check_data_vs_bdat`]).

use super::*;

/// How a message sent through a server session ended, as the application saw it
/// ([`send_as_data`], [`send_as_bdat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// [`Event::DataEnd`]: the content the application received, escaped as in
    /// [`Transcript::bodies`] (see [`Verdict::accepted`]).
    Accepted(String),
    /// [`Event::DataAborted`].
    Refused {
        /// Why.
        error: DataError,
        /// The reply that refused the message: its first line.
        reply: String,
    },
}

impl Verdict {
    /// The verdict for `body` accepted whole.
    pub fn accepted(body: &[u8]) -> Self {
        Verdict::Accepted(escape(body))
    }
}

const ENVELOPE: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n";

/// The verdict of a transcript of [`ENVELOPE`], one message, then `NOOP`; panics unless the
/// session is in sync after the message (the `NOOP` answered `250`, nothing else refused).
fn verdict(t: &Transcript) -> Verdict {
    let replies: Vec<String> = t.output_str().split("\r\n").map(str::to_owned).collect();
    assert!(
        replies.iter().rev().find(|l| !l.is_empty()).is_some_and(|l| l == "250 2.0.0 OK"),
        "the NOOP after the message was not answered: {replies:?}"
    );
    let ends: Vec<&String> =
        t.events.iter().filter(|e| e.starts_with("DataEnd") || e.starts_with("DataAborted")).collect();
    assert_eq!(ends.len(), 1, "one end of the message: {:?}", t.events);
    if ends[0].starts_with("DataEnd") {
        assert!(!replies.iter().any(|l| l.starts_with('5')), "{replies:?}");
        return Verdict::Accepted(t.bodies().first().cloned().unwrap_or_default());
    }
    let error = if ends[0].contains("BareLineEnding") {
        DataError::BareLineEnding
    } else if ends[0].contains("TooBig") {
        DataError::TooBig
    } else if ends[0].contains("LineTooLong") {
        DataError::LineTooLong
    } else {
        panic!("{}", ends[0])
    };
    let reply = replies.iter().find(|l| l.starts_with('5')).cloned().expect("a refusal");
    Verdict::Refused { error, reply }
}

/// Dot-stuffs `body` for DATA (a `.` is doubled at the start of the content and after each
/// CRLF, never after a bare CR or LF) and adds the terminator. `body` must be empty or end
/// with CRLF: what DATA can carry.
pub fn stuffed(body: &[u8]) -> Vec<u8> {
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "DATA content ends with CRLF");
    let mut out = Vec::with_capacity(body.len() + 8);
    for (i, &c) in body.iter().enumerate() {
        if c == b'.' && (i == 0 || body[..i].ends_with(b"\r\n")) {
            out.push(b'.');
        }
        out.push(c);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Sends `body` (empty or ending with CRLF) in one transaction with DATA, dot-stuffed, the
/// content and the `NOOP` after it cut at `cuts`; returns the verdict. The application
/// accepts everything ([`accept_all`]).
pub fn send_as_data(config: Config, body: &[u8], cuts: &[usize]) -> Verdict {
    let mut head = ENVELOPE.to_vec();
    head.extend_from_slice(b"DATA\r\n");
    let mut content = stuffed(body);
    content.extend_from_slice(b"NOOP\r\n");
    let t = run_with(config, accept_all, &[&head, &content], &|i, _| if i == 1 { cuts.to_vec() } else { vec![] });
    verdict(&t)
}

/// Sends `body` in one transaction with BDAT (CHUNKING is switched on), in chunks that end at
/// `chunks` (offsets into `body`; the last chunk, from the last offset to the end, is the
/// `LAST` one, so an offset of `body.len()` makes it `BDAT 0 LAST`), all pipelined with the
/// `NOOP` after them in one segment cut at `cuts`; returns the verdict. The application
/// accepts everything ([`accept_all`]).
pub fn send_as_bdat(mut config: Config, body: &[u8], chunks: &[usize], cuts: &[usize]) -> Verdict {
    config.capabilities.chunking = true;
    let mut ends: Vec<usize> = chunks.iter().copied().filter(|&c| c <= body.len()).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut script = ENVELOPE.to_vec();
    let mut from = 0;
    for end in ends {
        script.extend_from_slice(format!("BDAT {}\r\n", end - from).as_bytes());
        script.extend_from_slice(&body[from..end]);
        from = end;
    }
    script.extend_from_slice(format!("BDAT {} LAST\r\n", body.len() - from).as_bytes());
    script.extend_from_slice(&body[from..]);
    script.extend_from_slice(b"NOOP\r\n");
    let t = run_with(config, accept_all, &[&script], &|_, _| cuts.to_vec());
    verdict(&t)
}

/// The verdict the core must give `body` sent with BDAT, read off the bytes one at a time:
/// refused as too big past `max_message_size`; under [`BarePolicy::Reject`](crate::data::BarePolicy::Reject)
/// refused for a CR not followed by LF (the end of the content included) or an LF not after a
/// CR. The first problem decides, a bare LF counting at its octet and a bare CR at the octet
/// after it (that is where it shows); a tie goes to the bare line ending.
pub fn bdat_reference(config: &Config, body: &[u8]) -> Verdict {
    let max = config.max_message_size.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let bare = if config.bare_line_endings == crate::data::BarePolicy::Reject {
        (0..body.len()).find_map(|i| match body[i] {
            b'\r' if body.get(i + 1) != Some(&b'\n') => Some(i + 1),
            b'\n' if i == 0 || body[i - 1] != b'\r' => Some(i),
            _ => None,
        })
    } else {
        None
    };
    let line = |reply: Reply<'_>| {
        let mut buf = [0u8; 512];
        let n = reply.write(config.capabilities.enhanced_status_codes, &mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n - 2]).into_owned()
    };
    match bare {
        Some(at) if at <= max => {
            Verdict::Refused { error: DataError::BareLineEnding, reply: line(Reply::BARE_LINE_ENDING) }
        }
        _ if body.len() > max => Verdict::Refused {
            error: DataError::TooBig,
            reply: line(Reply::TOO_BIG.with_text("Chunk exceeds message size limit")),
        },
        _ => Verdict::accepted(body),
    }
}

/// The reply code and the enhanced status code (if any) of a reply line.
fn codes(line: &str) -> (&str, Option<&str>) {
    let mut words = line.splitn(3, ' ');
    let code = words.next().unwrap_or("");
    let esc = words.next().filter(|w| w.split('.').count() == 3 && w.bytes().all(|c| c == b'.' || c.is_ascii_digit()));
    (code, esc)
}

/// The oracle of the `bdat_data` fuzz target: BDAT is exactly as strict as DATA. `body` is
/// sent with BDAT in chunks ending at `chunks` and the session cut at `cuts`, and must get
/// [`bdat_reference`]'s verdict; then `body` (with a CRLF added unless it is empty or ends with
/// one) is sent with DATA and with BDAT, and both must get the same verdict: accepted with the
/// same content, or refused with the same reply code and enhanced status code (and the same
/// [`DataError`], but for one case: a bare CR that is itself the first octet past the size
/// limit is a bare line ending to DATA and too big to BDAT, which must answer the chunk it
/// ends before the octet after it arrives). Set `max_text_line` to `None`: BDAT has no text
/// line limit. Panics on a difference.
pub fn check_data_vs_bdat(config: Config, body: &[u8], chunks: &[usize], cuts: &[usize]) {
    let mut config = config;
    config.capabilities.chunking = true;
    assert_eq!(config.max_text_line, None, "BDAT has no text line limit");
    let bdat = send_as_bdat(config, body, chunks, cuts);
    assert_eq!(bdat, bdat_reference(&config, body), "BDAT against the reference, chunks {chunks:?}");
    let mut body = body.to_vec();
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    let bdat = send_as_bdat(config, &body, chunks, cuts);
    let data = send_as_data(config, &body, cuts);
    match (&data, &bdat) {
        (Verdict::Accepted(d), Verdict::Accepted(b)) => {
            assert_eq!(d, b, "the same content");
            assert_eq!(d, &escape(&body), "the content sent");
        }
        (Verdict::Refused { error: de, reply: dr }, Verdict::Refused { error: be, reply: br }) => {
            let max = config.max_message_size.and_then(|m| usize::try_from(m).ok());
            let cr_past_limit = max.is_some_and(|m| body.get(m) == Some(&b'\r'));
            if !(*de == DataError::BareLineEnding && *be == DataError::TooBig && cr_past_limit) {
                assert_eq!(de, be, "DATA {data:?}, BDAT {bdat:?}");
                assert_eq!(codes(dr), codes(br), "the same reply codes: DATA {data:?}, BDAT {bdat:?}");
            }
        }
        _ => panic!("DATA {data:?}, BDAT {bdat:?}, body {:?}", escape(&body)),
    }
}
