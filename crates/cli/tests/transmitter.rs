//! The transmitter end to end: real `notadb serve` processes writing behind to a real
//! PostgreSQL (started by `scripts/test.sh`), one database per test; a real JetStream for the
//! takeover case.

mod harness;

use harness::cluster::{blocking, serial, ClusterNode, NodeSpec};
use harness::pg::{connect, Db};
use harness::{free_addr, http_get, BIN};
use notadb_client::{Client, Element, Token};
use notadb_testkit::NatsServer;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TABLE: &str =
    "CREATE TABLE items (k text PRIMARY KEY, name text, qty integer, notadb_seq bigint NOT NULL)";

async fn create_db(tag: &str) -> Db {
    Db::create(format!("notadb_tx_{tag}_{}", std::process::id()), TABLE).await
}

/// key → (name, qty, seq).
async fn rows(db: &Db) -> BTreeMap<String, (Option<String>, Option<i32>, i64)> {
    connect(&db.url)
        .await
        .query("SELECT k, name, qty, notadb_seq FROM items", &[])
        .await
        .expect("select rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

fn config_file(dir: &Path, url: &str) -> PathBuf {
    config_file_with(dir, url, "")
}

/// `config_file` with `extra` lines in its `[transmitter]` table.
fn config_file_with(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("notadb.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[node]
partitions = 8
[transmitter]
url = "{url}"
batch_max_delay_ms = 5
retry_max_ms = 500
{extra}
[[transmitter.tables]]
keyspace = "items"
table = "items"
fields = {{ name = "name", qty = "qty" }}
"#
        ),
    )
    .expect("write config");
    path
}

/// A single node with a transmitter.
struct Serve {
    child: Option<Child>,
    config: PathBuf,
    data_dir: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Serve {
    fn start(config: &Path, data_dir: &Path) -> Serve {
        let mut s = Serve {
            child: None,
            config: config.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            grpc: free_addr(),
            admin: free_addr(),
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        self.grpc = free_addr();
        self.admin = free_addr();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--grpc-addr", &self.grpc.to_string()])
            .args(["--admin-addr", &self.admin.to_string()])
            .args(["--frame-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn notadb serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(TcpStream::connect(self.admin).is_ok() && http_get(self.admin, "/readyz").0 == 200)
        {
            assert!(Instant::now() < deadline, "node not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit (at most 60 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        harness::terminate(&mut child, || "notadb serve".to_string())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("wait");
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("http://{}", self.grpc))
            .await
            .expect("connect")
            .with_timeout(Duration::from_secs(10))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A key's newest write: its seq, and its name and qty (None: deleted).
type Newest = BTreeMap<String, (u64, Option<(String, i32)>)>;

/// Every acknowledged write: key → (seq of its newest write, its value or None for a delete).
#[derive(Clone, Default)]
struct Model {
    newest: Arc<Mutex<Newest>>,
    tokens: Arc<Mutex<BTreeMap<u16, u64>>>,
}

impl Model {
    fn record(&self, key: String, token: Token, value: Option<(String, i32)>) {
        let mut newest = self.newest.lock().expect("newest lock");
        let e = newest.entry(key).or_insert((0, None));
        if token.seq.0 > e.0 {
            *e = (token.seq.0, value);
        }
        let mut tokens = self.tokens.lock().expect("tokens lock");
        let t = tokens.entry(token.partition.0).or_insert(0);
        *t = (*t).max(token.seq.0);
    }

    fn tokens(&self) -> Vec<Token> {
        self.tokens
            .lock()
            .expect("tokens lock")
            .iter()
            .map(|(p, s)| Token {
                partition: notadb_client::PartitionId(*p),
                seq: notadb_types::Seq(*s),
            })
            .collect()
    }

    /// The table must hold exactly the live keys, with their newest values and seqs.
    fn assert_matches(&self, rows: &BTreeMap<String, (Option<String>, Option<i32>, i64)>) {
        let newest = self.newest.lock().expect("newest lock");
        let mut live = 0;
        for (key, (seq, value)) in newest.iter() {
            match (value, rows.get(key)) {
                (None, None) => {}
                (Some((name, qty)), Some((n, q, s))) => {
                    live += 1;
                    assert_eq!(
                        (n.as_deref(), *q, *s),
                        (Some(name.as_str()), Some(*qty), *seq as i64),
                        "row {key}"
                    );
                }
                (want, got) => panic!("key {key}: expected {want:?}, table has {got:?}"),
            }
        }
        assert_eq!(rows.len(), live, "the table has rows the keyspace does not");
    }
}

/// `writes` puts and deletes over `keys` keys from 16 concurrent writers; every third write
/// to a key deletes it.
async fn write_load(client: &Client, model: &Model, writes: usize, keys: usize, round: u32) {
    write_load_until(
        client,
        model,
        writes,
        keys,
        round,
        Arc::new(AtomicBool::new(true)),
    )
    .await
}

/// `write_load` that goes on past `writes` until `stop` is set: load that lasts however fast
/// the node takes writes.
async fn write_load_until(
    client: &Client,
    model: &Model,
    writes: usize,
    keys: usize,
    round: u32,
    stop: Arc<AtomicBool>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, model, next, stop) =
            (client.clone(), model.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes && stop.load(Ordering::Acquire) {
                    return;
                }
                let key = format!("k{:05}", (i * 7919) % keys);
                let k = [Element::String(key.clone())];
                let mut attempt = 0;
                loop {
                    let result = if i % 3 == 2 {
                        client.delete("items", &k).await.map(|t| (t, None))
                    } else {
                        let (name, qty) = (format!("n{round}-{i}"), i as i32);
                        client
                            .put_json("items", &k, &serde_json::json!({"name": name, "qty": qty}))
                            .await
                            .map(|t| (t, Some((name, qty))))
                    };
                    match result {
                        Ok((token, value)) => {
                            model.record(key, token, value);
                            break;
                        }
                        Err(e) => {
                            attempt += 1;
                            assert!(attempt < 50, "write {i} kept failing: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

/// Waits until every acknowledged write is in the table, then checks the table.
async fn flush_and_match(client: &Client, model: &Model, db: &Db) {
    client
        .transmitter_flush(&model.tokens(), Duration::from_secs(60))
        .await
        .expect("flush");
    model.assert_matches(&rows(db).await);
}

async fn create_items(client: &Client) {
    client
        .create_keyspace(&harness::cluster::string_keyspace("items"), true)
        .await
        .expect("create keyspace");
}

#[test]
fn writes_and_deletes_end_equal_and_a_poison_record_goes_to_dead_letters() {
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = create_db("equal").await;
        let config = config_file(dir.path(), &db.url);
        let node = blocking(|| Serve::start(&config, &dir.path().join("data")));
        let client = node.client().await;
        create_items(&client).await;
        let model = Model::default();
        write_load(&client, &model, 50_000, 5_000, 0).await;
        // qty is an integer column: "many" can never be written.
        let poison = client
            .put_json(
                "items",
                &[Element::String("poison".into())],
                &serde_json::json!({"name": "p", "qty": "many"}),
            )
            .await
            .expect("the keyspace accepts it");
        write_load(&client, &model, 50_000, 5_000, 1).await;
        let mut tokens = model.tokens();
        tokens.push(poison);
        client
            .transmitter_flush(&tokens, Duration::from_secs(60))
            .await
            .expect("flush");
        // Past transmitter.max_flush_timeout_ms (60 s by default) a flush is refused.
        let refused = client
            .transmitter_flush(&tokens, Duration::from_secs(3600))
            .await
            .expect_err("an hour is over the limit");
        assert_eq!(
            refused.code(),
            Some(notadb_client::Code::InvalidArgument),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("max_flush_timeout_ms"),
            "{refused}"
        );
        let mut rows = rows(&db).await;
        assert!(
            rows.remove("poison").is_none(),
            "the poison row was written"
        );
        model.assert_matches(&rows);
        let dead = connect(&db.url)
            .await
            .query(
                "SELECT key::text, sqlstate, error, seq FROM notadb_transmitter_dead_letters",
                &[],
            )
            .await
            .expect("dead letters");
        assert_eq!(dead.len(), 1, "one dead letter");
        let (key, state, seq): (String, Option<String>, i64) =
            (dead[0].get(0), dead[0].get(1), dead[0].get(3));
        assert_eq!(key, r#"["poison"]"#);
        assert_eq!(
            state.as_deref(),
            Some("22P02"),
            "{}",
            dead[0].get::<_, String>(2)
        );
        assert_eq!(seq as u64, poison.seq.0);
        let status = client.status().await.expect("status");
        let t = status.transmitter.expect("transmitter status");
        assert!(t.active);
        assert_eq!(t.dead_letters, 1);
        drop(node);
        db.drop_db().await;
    });
}

#[test]
fn sigterm_stops_the_transmitter_in_a_backlog_without_draining_it_and_a_restart_finishes() {
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = create_db("term").await;
        // One row per transaction: a backlog of 20,000 keys takes many seconds to drain.
        let config = config_file_with(
            dir.path(),
            &db.url,
            "batch_max_rows = 1\nread_max_entries = 1",
        );
        let mut node = blocking(|| Serve::start(&config, &dir.path().join("data")));
        let client = node.client().await;
        create_items(&client).await;
        let model = Model::default();
        write_load(&client, &model, 20_000, 20_000, 0).await;
        let before = rows(&db).await.len();
        let status = blocking(|| node.terminate());
        assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
        // The batches in flight finish; nothing new starts. (Draining on, as a transmitter that
        // misses the stop does, writes thousands more rows in the shutdown grace period.)
        let written = rows(&db).await.len();
        assert!(
            written < before + 1_000,
            "the transmitter went on after SIGTERM: {before} rows before it, {written} after"
        );
        blocking(|| node.launch());
        let client = node.client().await;
        flush_and_match(&client, &model, &db).await;
        drop(node);
        db.drop_db().await;
    });
}

#[test]
fn kill_9_mid_stream_then_restart_ends_equal_and_no_row_goes_back() {
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = create_db("kill").await;
        let config = config_file(dir.path(), &db.url);
        let mut node = blocking(|| Serve::start(&config, &dir.path().join("data")));
        let client = node.client().await;
        create_items(&client).await;
        let model = Model::default();
        write_load(&client, &model, 20_000, 2_000, 0).await;
        blocking(|| node.kill9());
        let before = rows(&db).await;
        blocking(|| node.launch());
        let client = node.client().await;
        // While the restarted transmitter catches up, no row's seq may go down.
        let watcher = {
            let url = db.url.clone();
            let before = before.clone();
            tokio::spawn(async move {
                let client = connect(&url).await;
                for _ in 0..50 {
                    let rows = client
                        .query("SELECT k, notadb_seq FROM items", &[])
                        .await
                        .expect("select");
                    for r in rows {
                        let (k, s): (String, i64) = (r.get(0), r.get(1));
                        if let Some((_, _, old)) = before.get(&k) {
                            assert!(s >= *old, "row {k} went back from seq {old} to {s}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        write_load(&client, &model, 10_000, 2_000, 1).await;
        watcher.await.expect("no row went back");
        flush_and_match(&client, &model, &db).await;
        drop(node);
        db.drop_db().await;
    });
}

#[test]
fn a_lost_database_connection_under_load_loses_and_reorders_nothing() {
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = create_db("revoke").await;
        let role = format!("notadb_tx_role_{}", std::process::id());
        let admin = connect(&db.admin_url).await;
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw';
                 GRANT ALL ON DATABASE {db} TO {role}",
                db = db.name
            ))
            .await
            .expect("create role");
        connect(&db.url)
            .await
            .batch_execute(&format!(
                "GRANT ALL ON SCHEMA public TO {role}; GRANT ALL ON items TO {role}"
            ))
            .await
            .expect("grant");
        let url = db
            .url
            .replacen("postgres:postgres@", &format!("{role}:pw@"), 1);
        let config = config_file(dir.path(), &url);
        let node = blocking(|| Serve::start(&config, &dir.path().join("data")));
        let client = node.client().await;
        create_items(&client).await;
        let model = Model::default();
        // The load goes on until the database is back, so the outage falls inside it.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (client, model, stop) = (client.clone(), model.clone(), stop.clone());
            tokio::spawn(
                async move { write_load_until(&client, &model, 30_000, 3_000, 0, stop).await },
            )
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        admin
            .batch_execute(&format!(
                "ALTER ROLE {role} NOLOGIN;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ))
            .await
            .expect("revoke");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = client
            .status()
            .await
            .expect("status")
            .transmitter
            .expect("transmitter");
        let lag: u64 = during.partitions.iter().map(|p| p.lag_records).sum();
        admin
            .batch_execute(&format!("ALTER ROLE {role} LOGIN"))
            .await
            .expect("allow");
        stop.store(true, Ordering::Release);
        load.await.expect("load");
        // Lag drains.
        flush_and_match(&client, &model, &db).await;
        assert!(during.retries > 0, "the outage was not noticed: {during:?}");
        assert!(!during.last_error.is_empty());
        assert!(lag > 0, "no lag built up while the database was away");
        let after = client
            .status()
            .await
            .expect("status")
            .transmitter
            .expect("transmitter");
        assert!(after.last_error.is_empty(), "{after:?}");
        drop(node);
        db.drop_db().await;
        let _ = admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await;
    });
}

#[test]
fn another_replica_takes_over_when_the_active_transmitter_is_killed() {
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = create_db("takeover").await;
        let config = config_file(dir.path(), &db.url);
        let nats = blocking(|| NatsServer::start(&dir.path().join("nats"))).expect("nats-server");
        let spec = |id| NodeSpec::new(&nats.url(), "tx", 1, 0, id, dir.path()).with_config(&config);
        let mut a = blocking(|| ClusterNode::start(spec("a")));
        let mut b = blocking(|| ClusterNode::start(spec("b")));
        let client_a = a.client().await;
        create_items(&client_a).await;
        harness::cluster::wait_keyspace(&[&a, &b], "items").await;
        let model = Model::default();
        write_load(&client_a, &model, 5_000, 500, 0).await;
        client_a
            .transmitter_flush(&model.tokens(), Duration::from_secs(60))
            .await
            .expect("flush");
        let active =
            |s: Option<notadb_client::proto::TransmitterStatus>| s.is_some_and(|t| t.active);
        let a_active = active(client_a.status().await.expect("status").transmitter);
        let b_active = active(b.client().await.status().await.expect("status").transmitter);
        assert!(
            a_active != b_active,
            "exactly one active transmitter: a {a_active}, b {b_active}"
        );
        let (dead, survivor) = if a_active { (&mut a, &b) } else { (&mut b, &a) };
        blocking(|| dead.kill9());
        let client = survivor.client().await;
        write_load(&client, &model, 5_000, 500, 1).await;
        // The survivor takes over and catches up.
        flush_and_match(&client, &model, &db).await;
        assert!(active(client.status().await.expect("status").transmitter));
        db.drop_db().await;
    });
}

/// Transactions' writes reach PostgreSQL too: transfers within and across partitions by the
/// built-in `i64.transfer`, flushed with the tokens the transactions returned, end with every
/// balance in its table row equal to the node's.
#[test]
fn transaction_writes_are_transmitted() {
    const ACCOUNTS: i64 = 16;
    serial(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(
            format!("notadb_tx_txn_{}", std::process::id()),
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bytea, notadb_seq bigint NOT NULL)",
        )
        .await;
        let config = dir.path().join("notadb.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\npartitions = 8\n[transmitter]\nurl = \"{}\"\nbatch_max_delay_ms = 5\n\
                 [[transmitter.tables]]\nkeyspace = \"accounts\"\ntable = \"accounts\"\nvalue_column = \"balance\"\n",
                db.url
            ),
        )
        .expect("write config");
        let node = blocking(|| Serve::start(&config, &dir.path().join("data")));
        let client = node.client().await;
        let schema = harness::cluster::i64_bytes_keyspace("accounts");
        client
            .create_keyspace(&schema, false)
            .await
            .expect("create keyspace");
        let key = |a: i64| {
            notadb_client::txn_key(
                "accounts",
                &[Element::I64(a)],
                notadb_client::proto::Access::ReadWrite,
            )
        };
        let mut tokens: BTreeMap<u16, Token> = BTreeMap::new();
        let mut keep = |r: &notadb_client::proto::TransactResponse| {
            for t in &r.tokens {
                let t = notadb_proto::token_from_proto(t).expect("a token");
                let e = tokens.entry(t.partition.0).or_insert(t);
                if t.seq > e.seq {
                    *e = t;
                }
            }
        };
        let seeded = client
            .transact(notadb_client::proto::TransactRequest {
                procedure: "i64.add".into(),
                args: (0..ACCOUNTS).flat_map(|_| 100i64.to_be_bytes()).collect(),
                keys: (0..ACCOUNTS).map(key).collect(),
                ..Default::default()
            })
            .await
            .expect("seed");
        assert_eq!(seeded.tokens.len(), seeded.participants.len());
        keep(&seeded);
        let mut cross = 0;
        for i in 0..300i64 {
            let (from, to) = (i % ACCOUNTS, (i * 7 + 3) % ACCOUNTS);
            if from == to {
                continue;
            }
            let r = client
                .transact(notadb_client::proto::TransactRequest {
                    procedure: "i64.transfer".into(),
                    args: (1 + i % 5).to_be_bytes().to_vec(),
                    keys: vec![key(from), key(to)],
                    ..Default::default()
                })
                .await
                .expect("transfer");
            cross += usize::from(r.participants.len() > 1);
            keep(&r);
        }
        assert!(cross > 0, "no transfer crossed partitions");
        // A row only PostgreSQL has, touched by a transaction that aborts (the other account
        // has no funds): the transmitter leaves it alone.
        connect(&db.url)
            .await
            .batch_execute("INSERT INTO accounts VALUES (99, '\\x00', 0)")
            .await
            .expect("insert");
        let r = client
            .transact(notadb_client::proto::TransactRequest {
                procedure: "i64.transfer".into(),
                args: 1i64.to_be_bytes().to_vec(),
                keys: vec![key(98), key(99)],
                ..Default::default()
            })
            .await
            .expect("transfer");
        assert!(
            matches!(
                r.outcome,
                Some(notadb_client::proto::transact_response::Outcome::Aborted(_))
            ),
            "{r:?}"
        );
        keep(&r);
        let tokens: Vec<Token> = tokens.into_values().collect();
        client
            .transmitter_flush(&tokens, Duration::from_secs(60))
            .await
            .expect("flush");
        let rows: BTreeMap<i64, Vec<u8>> = connect(&db.url)
            .await
            .query("SELECT id, balance FROM accounts", &[])
            .await
            .expect("select")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut total = 0;
        for a in 0..ACCOUNTS {
            let stored = client
                .get("accounts", &[Element::I64(a)], &tokens)
                .await
                .expect("get")
                .expect("a balance");
            let stored = notadb_client::value_bytes(&stored).to_vec();
            assert_eq!(rows.get(&a), Some(&stored), "account {a}");
            total += i64::from_be_bytes(stored[..].try_into().expect("8 bytes"));
        }
        assert_eq!(total, ACCOUNTS * 100);
        assert_eq!(
            rows.get(&99),
            Some(&vec![0u8]),
            "the row only PostgreSQL had"
        );
        assert!(!rows.contains_key(&98));
        drop(node);
        db.drop_db().await;
    });
}
