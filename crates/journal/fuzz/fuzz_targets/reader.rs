//! Fuzzes the journal reader: arbitrary bytes after valid records, or as a
//! snapshot. See `check.rs` for the property.
#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
