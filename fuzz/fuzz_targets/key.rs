//! libFuzzer on [`notadb_fuzz::key`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::key(data));
