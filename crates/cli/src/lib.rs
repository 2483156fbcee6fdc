//! The `notadb` command's parts; `notadb-bench` uses the seed data set (`seed`) and the
//! bulk writes and progress bars (`load`).

#![warn(missing_docs)]

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
