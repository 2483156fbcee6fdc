//! `notadb cache create|list|drop|get|set|del`: named caches from the command line. Keys and
//! values are given and printed as UTF-8 text.

use anyhow::Context;
use clap::{Args, Subcommand};
use notadb_client::{cache_key, proto, Client};
use std::time::Duration;

/// The `notadb cache` commands.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Create a cache.
    Create(CreateArgs),
    /// List caches with their entries and bytes on the connected node.
    List,
    /// Drop a cache and its entries.
    Drop {
        /// The cache's name.
        name: String,
    },
    /// Print what the cache holds for each key (`KEY<TAB>hit|loaded|not-found|miss<TAB>VALUE`),
    /// loading misses when the cache has a loader.
    Get {
        /// The cache's name.
        cache: String,
        /// The keys to look up.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Do not load misses.
        #[arg(long)]
        no_load: bool,
    },
    /// Store one entry; prints its token.
    Set {
        /// The cache's name.
        cache: String,
        /// The entry's key.
        key: String,
        /// The entry's value.
        value: String,
        /// TTL, e.g. `30s`; `0s`: no expiry; absent: the cache's default.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Remove keys; prints their tokens.
    Del {
        /// The cache's name.
        cache: String,
        /// The keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// Arguments of `notadb cache create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The cache's name.
    pub name: String,
    /// Bytes all entries may take (keys, values and 96 bytes each).
    #[arg(long)]
    pub capacity_bytes: u64,
    /// TTL of sets without one and of loaded values, e.g. `10m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// How long "not found" from the loader is cached, e.g. `30s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub negative_ttl: Option<Duration>,
    /// The loader a miss calls (registered on the nodes, e.g. a `[[postgres_loaders]]` name).
    #[arg(long)]
    pub loader: Option<String>,
    /// Longest a load may take, e.g. `5s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub load_timeout: Option<Duration>,
    /// A keyspace whose writes drop this cache's entry for the written key.
    #[arg(long)]
    pub derived_from: Option<String>,
    /// Succeed when an identical cache exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

fn ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

fn print_tokens(tokens: &[notadb_client::Token]) {
    // `P:SEQ`, as `notadb transmitter flush` takes them.
    let tokens: Vec<String> = tokens
        .iter()
        .map(|t| format!("{}:{}", t.partition.0, t.seq.0))
        .collect();
    println!("{}", tokens.join(" "));
}

/// Runs a `notadb cache` command. Writes print their tokens as `partition:seq`, the form
/// `notadb transmitter flush` takes.
pub async fn run(client: &Client, command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Create(a) => {
            let settings = proto::CacheSettings {
                name: a.name,
                capacity_bytes: a.capacity_bytes,
                default_ttl_ms: ms(a.ttl),
                negative_ttl_ms: ms(a.negative_ttl),
                loader: a.loader.unwrap_or_default(),
                load_timeout_ms: ms(a.load_timeout),
                derived_from: a.derived_from.unwrap_or_default(),
            };
            let (settings, created) = client.create_cache(settings, a.if_not_exists).await?;
            println!(
                "{} cache `{}`",
                if created { "created" } else { "kept" },
                settings.name
            );
        }
        CacheCommand::List => {
            for info in client.list_caches().await? {
                let s = info.settings.unwrap_or_default();
                println!(
                    "{}\tcapacity {} B\t{} entries\t{} B\t{} evictions\tloader {}",
                    s.name,
                    s.capacity_bytes,
                    info.entries,
                    info.bytes,
                    info.evictions,
                    if s.loader.is_empty() { "-" } else { &s.loader }
                );
            }
        }
        CacheCommand::Drop { name } => {
            client.drop_cache(&name).await?;
            println!("dropped cache `{name}`");
        }
        CacheCommand::Get {
            cache,
            keys,
            no_load,
        } => {
            let request = keys.iter().map(|k| cache_key(k.as_str())).collect();
            let results = client.cache_get_many(&cache, request, &[], no_load).await?;
            for (key, r) in keys.iter().zip(results) {
                let status = match proto::CacheStatus::try_from(r.status)
                    .context("the node answered an unknown status")?
                {
                    proto::CacheStatus::Hit if r.loaded => "loaded",
                    proto::CacheStatus::Hit => "hit",
                    proto::CacheStatus::NotFound => "not-found",
                    proto::CacheStatus::Miss => "miss",
                };
                println!("{key}\t{status}\t{}", String::from_utf8_lossy(&r.value));
            }
        }
        CacheCommand::Set {
            cache,
            key,
            value,
            ttl,
        } => {
            let ttl = ttl.map(|d| d.as_millis() as i64);
            print_tokens(
                &client
                    .cache_set(&cache, key.as_bytes(), value.as_bytes(), ttl)
                    .await?,
            );
        }
        CacheCommand::Del { cache, keys } => {
            let keys = keys.iter().map(|k| cache_key(k.as_str())).collect();
            print_tokens(&client.cache_delete(&cache, keys).await?);
        }
    }
    Ok(())
}
