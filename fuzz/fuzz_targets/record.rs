//! libFuzzer on [`notadb_fuzz::record`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::record(data));
