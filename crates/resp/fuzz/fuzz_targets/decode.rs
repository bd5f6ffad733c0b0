//! Fuzz the decoder: never panics, and every frame it accepts re-encodes to
//! exactly the bytes it was decoded from (encode ∘ decode = identity).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resp::decode::check_roundtrip(data);
});
