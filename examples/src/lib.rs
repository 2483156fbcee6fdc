//! Two small services built with the notadb framework, one per seed question. Each module
//! holds a keyspace schema and a query handler; `src/bin/` runs each as a server.

#![warn(missing_docs)]

pub mod activity;
pub mod items;
