//! The milter client machine against arbitrary milter bytes: never panics, never asks the
//! driver for anything the protocol forbids (an API error panics in the driver), and gives
//! the same events and the same MTA bytes whole, byte by byte, and cut at every index (at a
//! sample of indices for long inputs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::testing::milter_script;

fuzz_target!(|data: &[u8]| {
    let whole = milter_script(data, &[]);
    let bytes: Vec<usize> = (1..data.len()).collect();
    assert_eq!(milter_script(data, &bytes), whole, "byte by byte");
    let step = (data.len() / 256).max(1);
    for at in (1..data.len()).step_by(step) {
        assert_eq!(milter_script(data, &[at]), whole, "cut at {at}");
    }
});
