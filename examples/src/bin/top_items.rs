//! A service answering seed question 1. Run: `cargo run --release -p notadb-examples --bin top_items`
//! then call `Query("top_available", keyspace "items", partition key [store_id], {"product": P})`.

use notadb::{JsonHandler, Server, ServerConfig};
use notadb_examples::items;

#[global_allocator]
static ALLOC: notadb::Allocator = notadb::Allocator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let server = Server::start(ServerConfig::default(), |node| {
        node.keyspace(items::schema())
            .handler("top_available", JsonHandler(items::top_available))
    })
    .await?;
    println!("serving gRPC on {}", server.grpc_addr());
    server.run_until_signal().await?;
    Ok(())
}
