//! Reads: range resolution, filters, scans and aggregates, all synchronous over a read view.

pub mod aggregate;
pub mod filter;
pub mod json;
pub mod range;
pub mod scan;
