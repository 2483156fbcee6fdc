//! libFuzzer on [`notadb_fuzz::cache_rows`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::cache_rows(data));
