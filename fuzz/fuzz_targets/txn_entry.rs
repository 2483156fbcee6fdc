//! libFuzzer on [`notadb_fuzz::txn_entry`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::txn_entry(data));
