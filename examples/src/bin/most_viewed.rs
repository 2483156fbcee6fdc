//! A service answering seed question 2. Run: `cargo run --release -p notadb-examples --bin most_viewed`
//! then call `Query("most_viewed", keyspace "activity", partition key [user_id], {"window_secs": 3600})`.

use notadb::{Server, ServerConfig};
use notadb_examples::activity;

#[global_allocator]
static ALLOC: notadb::Allocator = notadb::Allocator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let server = Server::start(ServerConfig::default(), |node| {
        node.keyspace(activity::schema())
            .handler("most_viewed", activity::most_viewed)
    })
    .await?;
    println!("serving gRPC on {}", server.grpc_addr());
    server.run_until_signal().await?;
    Ok(())
}
