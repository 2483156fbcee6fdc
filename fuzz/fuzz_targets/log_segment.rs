//! libFuzzer on [`notadb_fuzz::log_segment`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::log_segment(data));
