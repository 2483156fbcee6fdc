//! `notadb demo`: a single node on the embedded log in a temporary directory, the seed data,
//! and the seed questions answered through the public gRPC API.

use crate::load::{progress, send_writes};
use crate::seed::{self, most_viewed_request, top_items_request, SeedSize};
use anyhow::{anyhow, Context};
use clap::Args;
use notadb::{JsonHandler, NodeConfig, Server, ServerConfig};
use notadb_client::{Client, Element};
use notadb_examples::{activity, items};
use notadb_proto::{element_from_proto, tuple_from_proto};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `notadb demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Answer the questions and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Keep the data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub grpc_addr: SocketAddr,
    /// Admin HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub admin_addr: SocketAddr,
    /// Frame protocol address (the lean API the Rust client and `notadb-bench run` use), or `off`.
    #[arg(long, default_value = "127.0.0.1:7072")]
    pub frame_addr: String,
    /// Sizes of the seed data set.
    #[command(flatten)]
    pub size: SeedSize,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Median latency of `n` sequential calls.
async fn median<F, Fut, T>(n: usize, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[n / 2])
}

/// Starts the demo node, loads the seed data and answers each seed question for a few stores
/// and users, with a built-in read and with its handler, timing both; then serves until
/// Ctrl-C, or shuts down with `--once`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    args.size.validate()?;
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let config = ServerConfig {
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        frame_addr: notadb::parse_frame_addr(&args.frame_addr)
            .map_err(|e| anyhow::anyhow!("--frame-addr: {e}"))?,
        node: NodeConfig {
            data_dir: data_dir.clone(),
            node_id: "demo".into(),
            ..NodeConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::start(config, |node| {
        node.keyspace(items::schema())
            .keyspace(activity::schema())
            .handler("top_available", JsonHandler(items::top_available))
            .handler("most_viewed", activity::most_viewed)
    })
    .await
    .context("starting the demo node")?;
    println!(
        "notadb demo: one node, embedded log, {} partitions, data in {}",
        server.node().partitioner().count(),
        data_dir.display()
    );
    println!(
        "gRPC {}  admin http://{}/",
        server.grpc_addr(),
        server.admin_addr()
    );
    let client = Client::connect(&server.grpc_addr().to_string()).await?;
    let size = args.size;

    let started = Instant::now();
    let bar = progress((size.stores * size.products * size.items) as u64, "items");
    let writes = (0..size.stores)
        .flat_map(|s| (0..size.products).map(move |p| (s, p)))
        .map(|(s, p)| seed::items_batch(&size, s, p));
    let mut tokens = send_writes(&client, writes.into_iter().map(|w| vec![w]), 16, &bar).await?;
    bar.finish();
    let now = notadb::record::now_micros();
    let bar = progress((size.users * size.events_per_user) as u64, "activity");
    let writes = (0..size.users).map(|u| seed::activity_batch(&size, u, now));
    tokens.extend(send_writes(&client, writes.into_iter().map(|w| vec![w]), 16, &bar).await?);
    bar.finish();
    // Read with every token: returns once the node applied all of it.
    client
        .clone()
        .with_timeout(Duration::from_secs(600))
        .scan(top_items_request(
            &seed::store(0),
            &seed::product(0),
            &tokens,
        ))
        .await?;
    let rows = size.stores * size.products * size.items + size.users * size.events_per_user;
    println!(
        "loaded and applied {rows} rows in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    for (s, p) in [
        (0, 0),
        (size.stores / 2, size.products.min(3) - 1),
        (size.stores - 1, size.products - 1),
    ] {
        let (store, product) = (seed::store(s), seed::product(p));
        println!("Q1: the available items of {store} for {product}, best score first, top 10");
        let t = Instant::now();
        let scan = client
            .scan(top_items_request(&store, &product, &[]))
            .await?;
        let took = t.elapsed();
        for row in &scan.rows {
            let key = tuple_from_proto(row.key.as_ref(), "key").map_err(|e| anyhow!("{e}"))?;
            println!(
                "    {:<18} score {}",
                key[3].to_json().as_str().unwrap_or_default(),
                key[2]
            );
        }
        let args = json!({"product": product, "limit": 10});
        let t2 = Instant::now();
        let handled = client
            .query(
                "top_available",
                "items",
                &[Element::String(store.clone())],
                &args,
                &[],
            )
            .await?;
        let took2 = t2.elapsed();
        let scanned: Vec<serde_json::Value> = scan
            .rows
            .iter()
            .map(|row| tuple_from_proto(row.key.as_ref(), "key").map(|k| k[3].to_json()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("{e}"))?;
        let from_handler: Vec<serde_json::Value> = handled
            .as_array()
            .map(|a| a.iter().map(|i| i["item_id"].clone()).collect())
            .unwrap_or_default();
        let same = scanned == from_handler;
        let m = median(200, || async {
            Ok(client
                .scan(top_items_request(&store, &product, &[]))
                .await?)
        })
        .await?;
        println!(
            "    Scan {} (median of 200: {}); handler top_available {} ({} rows{})\n",
            ms(took),
            ms(m),
            ms(took2),
            scan.rows.len(),
            if same { ", same answer" } else { ", DIFFERENT" }
        );
    }
    for u in [0, size.users / 2, size.users - 1] {
        let user = seed::user(u);
        println!("Q2: the items {user} viewed most in the past hour");
        let t = Instant::now();
        let agg = client.aggregate(most_viewed_request(&user)).await?;
        let took = t.elapsed();
        for g in &agg.groups {
            let item = g
                .key
                .as_ref()
                .map(|k| element_from_proto(k, "group"))
                .transpose()
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "    {:<12} {} views",
                item.map(|i| i.to_string()).unwrap_or_default(),
                g.value
            );
        }
        if agg.groups.is_empty() {
            println!("    (no views in the past hour)");
        }
        let t2 = Instant::now();
        let handled = client
            .query(
                "most_viewed",
                "activity",
                &[Element::String(user.clone())],
                &json!({"window_secs": 3600}),
                &[],
            )
            .await?;
        let took2 = t2.elapsed();
        let aggregated: Vec<serde_json::Value> = agg
            .groups
            .iter()
            .map(|g| {
                let item = g
                    .key
                    .as_ref()
                    .map(|k| element_from_proto(k, "group"))
                    .transpose()?;
                Ok(json!({"item_id": item.map(|i| i.to_json()), "views": g.value as u64}))
            })
            .collect::<Result<_, notadb_proto::ConvertError>>()
            .map_err(|e| anyhow!("{e}"))?;
        let same = Some(&aggregated) == handled.as_array();
        let m = median(200, || async {
            Ok(client.aggregate(most_viewed_request(&user)).await?)
        })
        .await?;
        println!("    Aggregate {} (median of 200: {}, {} rows scanned); handler most_viewed {} ({} items{})\n", ms(took), ms(m), agg.rows_scanned, ms(took2), aggregated.len(), if same { ", same answer" } else { ", DIFFERENT" });
    }

    if args.once {
        server.shutdown().await?;
        return Ok(());
    }
    println!("serving gRPC on {} (try: notadb scan items --prefix '[\"store-0000\",\"shoes\"]' --where available=true --limit 10); Ctrl-C to stop", server.grpc_addr());
    server.run_until_signal().await?;
    Ok(())
}
