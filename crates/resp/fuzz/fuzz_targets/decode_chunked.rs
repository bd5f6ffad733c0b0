//! Fuzz incremental request decoding: one `RequestDecoder` fed the input in
//! pieces (cut as the first byte says) returns exactly what one read of the
//! whole input gives, errors included, and looks at no byte twice.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resp::request_decoder::check_chunked(data);
});
