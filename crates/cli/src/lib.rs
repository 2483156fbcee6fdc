//! The `notadb` command's parts, also used by `notadb-bench` (the seed data set, bulk
//! writes, the client flags).

pub mod cache;
pub mod cli;
pub mod data;
pub mod demo;
pub mod dev_cluster;
pub mod keys;
pub mod keyspace;
pub mod load;
pub mod seed;
pub mod serve;
pub mod transmitter;
pub mod txn;
