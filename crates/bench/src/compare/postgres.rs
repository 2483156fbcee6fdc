//! PostgreSQL under comparison: tables with the indexes an expert would build, prepared
//! statements, one connection per client.

use super::dataset::Dataset;
use super::workload::{score_answer, Op, Params, Target, Variant, Workload};
use crate::cpu::{self, Meter};
use anyhow::{anyhow, Context};
use bytes::Bytes;
use futures::{FutureExt, SinkExt};
use notadb_cli::load::progress;
use notadb_cli::seed;
use notadb_examples::activity::HOUR_MICROS;
use std::fmt::Write;
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

/// Rows per `COPY` chunk sent while loading.
const COPY_CHUNK_ROWS: u64 = 10_000;

const SCHEMA: &str = r#"
DROP TABLE IF EXISTS items, activity, kv;
CREATE TABLE items (store_id text NOT NULL, product text NOT NULL, score float8 NOT NULL,
    item text COLLATE "C" NOT NULL, available bool NOT NULL, price float8 NOT NULL, name text NOT NULL,
    PRIMARY KEY (store_id, product, item));
CREATE TABLE activity (user_id text NOT NULL, ts bigint NOT NULL, feature text NOT NULL,
    item text COLLATE "C" NOT NULL);
CREATE TABLE kv (k text COLLATE "C" PRIMARY KEY, v bytea NOT NULL);
"#;

/// Built after the first load (faster than maintaining them row by row); covering, so both
/// seed questions are index-only scans once `VACUUM` has set the visibility map.
const INDEXES: &str = r#"
CREATE INDEX items_top ON items (store_id, product, score DESC) INCLUDE (available, item, price, name);
CREATE INDEX activity_user_ts ON activity (user_id, ts) INCLUDE (feature, item);
"#;

const Q1: &str = "SELECT item, score, price, name FROM items \
     WHERE store_id = $1 AND product = $2 AND available ORDER BY score DESC LIMIT 10";
const Q2: &str = "SELECT item, count(*) AS views FROM activity \
     WHERE user_id = $1 AND ts >= $2 AND feature = 'view' \
     GROUP BY item ORDER BY views DESC, item LIMIT 10";
const GET: &str = "SELECT v FROM kv WHERE k = $1";
const MULTI_GET: &str = "SELECT k, v FROM kv WHERE k = ANY($1)";
const PUT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";

pub struct PostgresTarget {
    /// Connection settings of the benchmark database.
    config: tokio_postgres::Config,
    client: Client,
    description: String,
}

async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

impl PostgresTarget {
    pub async fn open(url: &str, database: &str) -> anyhow::Result<PostgresTarget> {
        if database.is_empty()
            || !database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            anyhow::bail!(
                "--postgres-db: expected letters, digits and underscores, found `{database}`"
            );
        }
        let mut config: tokio_postgres::Config = url.parse().context("--postgres-url")?;
        let admin = connect(&config).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await?;
        }
        let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
        let mut settings = Vec::new();
        for s in [
            "synchronous_commit",
            "fsync",
            "shared_buffers",
            "max_connections",
        ] {
            let v: String = admin.query_one(&format!("SHOW {s}"), &[]).await?.get(0);
            settings.push(format!("{s}={v}"));
        }
        config.dbname(database);
        let client = connect(&config).await?;
        Ok(PostgresTarget {
            config,
            client,
            description: format!(
                "PostgreSQL {version} ({}), tokio-postgres, prepared statements",
                settings.join(", ")
            ),
        })
    }

    async fn copy(
        &self,
        table: &str,
        rows: impl Iterator<Item = String>,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        let sink = self
            .client
            .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        let mut chunk = String::new();
        let mut n: u64 = 0;
        for row in rows {
            chunk.push_str(&row);
            n += 1;
            if n == COPY_CHUNK_ROWS {
                sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
                bar.inc(n);
                n = 0;
            }
        }
        sink.send(Bytes::from(chunk)).await?;
        bar.inc(n);
        sink.finish().await?;
        Ok(())
    }
}

fn variant(workload: Workload, name: &str, how: &str) -> Variant {
    Variant::new("postgres", workload, name, how)
}

#[async_trait::async_trait]
impl Target for PostgresTarget {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            variant(Workload::Q1, "SELECT … ORDER BY score DESC LIMIT 10", "covering index `(store_id, product, score DESC) INCLUDE (available, item, price, name)`: an index-only scan that stops after 10 available rows"),
            variant(Workload::Q2, "SELECT … GROUP BY item", "covering index `(user_id, ts) INCLUDE (feature, item)`: index-only range scan of the last hour, then `GROUP BY` and a top-10 sort"),
            variant(Workload::Get, "SELECT by primary key", "`SELECT v FROM kv WHERE k = $1`"),
            variant(Workload::MultiGet, "SELECT … = ANY($1)", "`SELECT k, v FROM kv WHERE k = ANY($1)` with 100 keys"),
            variant(Workload::Put, "INSERT … ON CONFLICT DO UPDATE", "one upsert per request, autocommit (`synchronous_commit` as configured)"),
        ]
    }

    async fn load(&mut self, from: Option<&Dataset>, data: &Dataset) -> anyhow::Result<()> {
        if from.is_none() {
            self.client.batch_execute(SCHEMA).await?;
        }
        let bar = progress(data.new_rows(from), "postgres");
        let size = data.seed;
        let items = data
            .new_stores(from)
            .flat_map(|s| (0..size.products).flat_map(move |p| seed::items(&size, s, p)))
            .map(|i| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    i.store, i.product, i.score, i.item, i.available, i.price, i.name
                )
            });
        self.copy("items", items, &bar).await?;
        let events = data
            .new_users(from)
            .flat_map(|u| seed::events(&size, u, data.now_micros))
            .map(|e| format!("{}\t{}\t{}\t{}\n", e.user, e.ts_micros, e.feature, e.item));
        self.copy("activity", events, &bar).await?;
        let kv = data.new_keys(from).map(|i| {
            let mut row = format!("{}\t\\\\x", Dataset::key(i));
            for b in data.value(i, 0) {
                write!(row, "{b:02x}").expect("writing to a string");
            }
            row.push('\n');
            row
        });
        self.copy("kv", kv, &bar).await?;
        bar.finish();
        if from.is_none() {
            self.client.batch_execute(INDEXES).await?;
        }
        self.client
            .batch_execute("VACUUM ANALYZE items, activity, kv")
            .await?;
        Ok(())
    }

    async fn cpu_meter(&self) -> anyhow::Result<Meter> {
        Ok(Meter::Named(&[cpu::POSTGRES]))
    }

    async fn connect(&self, variant: &Variant, data: &Dataset) -> anyhow::Result<Op> {
        let client = Arc::new(connect(&self.config).await?);
        let data = *data;
        let sql = match variant.workload {
            Workload::Q1 => Q1,
            Workload::Q2 => Q2,
            Workload::Get => GET,
            Workload::MultiGet => MULTI_GET,
            Workload::Put => PUT,
        };
        let statement = client.prepare(sql).await?;
        let op: Op = match variant.workload {
            Workload::Q1 => Box::new(move |p: &Params| {
                let (c, s) = (client.clone(), statement.clone());
                let (store, product) = (seed::store(p.store), seed::product(p.product));
                async move {
                    let rows = c.query(&s, &[&store, &product]).await?;
                    Ok(score_answer(rows.iter().map(|r| r.get::<_, f64>(1))))
                }
                .boxed()
            }),
            Workload::Q2 => Box::new(move |p: &Params| {
                let (c, s) = (client.clone(), statement.clone());
                let user = seed::user(p.user);
                async move {
                    let since = notadb::record::now_micros() - HOUR_MICROS;
                    let rows = c.query(&s, &[&user, &since]).await?;
                    Ok(rows
                        .iter()
                        .map(|r| r.get::<_, i64>(1).to_string())
                        .collect())
                }
                .boxed()
            }),
            Workload::Get => Box::new(move |p: &Params| {
                let (c, s) = (client.clone(), statement.clone());
                let key = Dataset::key(p.key);
                async move {
                    let row = c
                        .query_opt(&s, &[&key])
                        .await?
                        .ok_or_else(|| anyhow!("key not found"))?;
                    Ok(vec![
                        String::from_utf8_lossy(row.get::<_, &[u8]>(0)).into_owned()
                    ])
                }
                .boxed()
            }),
            Workload::MultiGet => Box::new(move |p: &Params| {
                let (c, s) = (client.clone(), statement.clone());
                let keys: Vec<String> = p.keys.iter().map(|&k| Dataset::key(k)).collect();
                async move {
                    let rows = c.query(&s, &[&keys]).await?;
                    // `= ANY` returns a repeated key once; count the keys that were found.
                    let found: std::collections::BTreeSet<String> =
                        rows.iter().map(|r| r.get(0)).collect();
                    Ok(vec![keys
                        .iter()
                        .filter(|k| found.contains(*k))
                        .count()
                        .to_string()])
                }
                .boxed()
            }),
            Workload::Put => Box::new(move |p: &Params| {
                let (c, s) = (client.clone(), statement.clone());
                let (key, value) = (Dataset::key(p.key), data.value(p.key, p.version));
                async move {
                    c.execute(&s, &[&key, &value]).await?;
                    Ok(Vec::new())
                }
                .boxed()
            }),
        };
        Ok(op)
    }
}
