//! Differential: BDAT is exactly as strict as DATA. A body sent with BDAT, in chunks cut at
//! arbitrary points and with the input cut at arbitrary points, gets the verdict of a
//! byte-at-a-time reference (refused for a bare CR or LF under the default policy, or past the
//! size limit; otherwise accepted with exactly its bytes); and the same body (ending with CRLF)
//! sent dot-stuffed with DATA and with BDAT gets the same verdict: accepted with the same
//! content, or refused with the same reply (`smtp_proto::testing::check_data_vs_bdat`). Under
//! both bare-line-ending policies, with and without a size limit.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::BarePolicy;
use smtp_proto::server::Config;
use smtp_proto::testing::check_data_vs_bdat;

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    /// Where BDAT chunks end (offsets into the body, taken modulo its length plus one).
    chunks: Vec<u16>,
    /// Where the client's input is cut (offsets into the content segment).
    cuts: Vec<u16>,
    allow: bool,
    max_size: Option<u16>,
}

fuzz_target!(|input: Input| {
    if input.body.len() > 4096 || input.chunks.len() > 64 || input.cuts.len() > 64 {
        return;
    }
    let mut c = Config::new("fuzz.test");
    c.max_text_line = None;
    c.max_errors = u32::MAX;
    if input.allow {
        c.bare_line_endings = BarePolicy::Allow;
    }
    c.max_message_size = input.max_size.map(u64::from);
    let len = input.body.len();
    let chunks: Vec<usize> = input.chunks.iter().map(|&c| usize::from(c) % (len + 1)).collect();
    let cuts: Vec<usize> = input.cuts.iter().map(|&c| usize::from(c)).collect();
    check_data_vs_bdat(c, &input.body, &chunks, &cuts);
});
