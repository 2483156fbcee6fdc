//! libFuzzer on [`notadb_fuzz::txn_report`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| notadb_fuzz::txn_report(data));
