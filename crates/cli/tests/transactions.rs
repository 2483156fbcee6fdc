//! Transactions over gRPC: a server with registered procedures, a client that runs them; base
//! values loaded from PostgreSQL at submission.

mod harness;

use bytes::Bytes;
use harness::pg::{connect, Db};
use notadb::client::proto::{
    transact_response, value, Access as WireAccess, TransactRequest, TxnKeyValue,
};
use notadb::client::{txn_key, Client, Code, Element};
use notadb::{Abort, PostgresLoaderConfig, Server, ServerConfig, TxnContext};

fn balance(v: Option<&Bytes>) -> Result<i64, Abort> {
    let v = v.ok_or("no balance")?;
    Ok(i64::from_be_bytes(
        v[..].try_into().map_err(|_| "not 8 bytes")?,
    ))
}

/// The committed outcome carrying `output`.
fn committed(output: i64) -> Option<transact_response::Outcome> {
    Some(transact_response::Outcome::Committed(
        output.to_be_bytes().to_vec(),
    ))
}

/// The reason of an aborted outcome (a panic for any other).
fn aborted(outcome: Option<transact_response::Outcome>) -> String {
    match outcome {
        Some(transact_response::Outcome::Aborted(reason)) => reason,
        other => panic!("expected an abort, got {other:?}"),
    }
}

/// Account `id`'s balance as a plain `Get` reads it.
async fn stored(client: &Client, id: i64) -> Option<value::Kind> {
    client
        .get("accounts", &[Element::I64(id)], &[])
        .await
        .expect("get")
        .expect("present")
        .kind
}

fn stored_bytes(balance: i64) -> Option<value::Kind> {
    Some(value::Kind::Bytes(balance.to_be_bytes().to_vec()))
}

fn transfer(from: i64, to: i64, amount: i64) -> TransactRequest {
    let hundred = Some(100i64.to_be_bytes().to_vec());
    TransactRequest {
        procedure: "transfer".into(),
        args: amount.to_be_bytes().to_vec(),
        keys: vec![
            txn_key("accounts", &[Element::I64(from)], WireAccess::ReadWrite),
            txn_key("accounts", &[Element::I64(to)], WireAccess::ReadWrite),
        ],
        base: vec![
            TxnKeyValue {
                index: 0,
                value: hundred.clone(),
            },
            TxnKeyValue {
                index: 1,
                value: hundred,
            },
        ],
        ..TransactRequest::default()
    }
}

/// A single node with the `transfer` procedure and, when given, the PostgreSQL loader `pg`.
async fn start(dir: &std::path::Path, db: Option<&Db>) -> (Server, Client) {
    let mut config = ServerConfig {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        frame_addr: Some("127.0.0.1:0".parse().expect("addr")),
        postgres_loaders: db
            .map(|db| PostgresLoaderConfig {
                name: "pg".into(),
                url: db.url.clone(),
                sql: "SELECT int8send(balance) FROM accounts WHERE id = $1".into(),
            })
            .into_iter()
            .collect(),
        ..ServerConfig::default()
    };
    config.node.data_dir = dir.to_path_buf();
    config.node.partitions = 8;
    let server = Server::start(config, |b| {
        b.keyspace(harness::cluster::i64_bytes_keyspace("accounts"))
            .procedure("transfer", |t: &mut TxnContext<'_>| {
                let amount = i64::from_be_bytes(t.args()[..8].try_into().map_err(|_| "args")?);
                let (from, to) = (t.key(0)?, t.key(1)?);
                let (fb, tb) = (balance(t.read(&from)?)?, balance(t.read(&to)?)?);
                if fb < amount {
                    return Err(Abort(format!("insufficient funds: {fb} < {amount}")));
                }
                t.put(from, (fb - amount).to_be_bytes().to_vec())?;
                t.put(to, (tb + amount).to_be_bytes().to_vec())?;
                Ok(Bytes::from((fb - amount).to_be_bytes().to_vec()))
            })
    })
    .await
    .expect("server starts");
    let client = Client::connect(&format!("http://{}", server.grpc_addr()))
        .await
        .expect("connect");
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path(), None).await;
    let names = client.list_procedures().await.unwrap();
    for name in ["transfer", "i64.transfer", "i64.add", "i64.sum"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }

    // Accounts 1 and 2 across partitions or not, it is the same call.
    let r = client.transact(transfer(1, 2, 30)).await.expect("transfer");
    assert_eq!(r.txn_id.len(), 16);
    assert!(!r.participants.is_empty());
    assert_eq!(r.outcome, committed(70));
    // The stored values are what the procedure wrote: a plain Get sees them.
    assert_eq!(stored(&client, 2).await, stored_bytes(130));
    // The procedure's own abort is an outcome.
    let r = client
        .transact(transfer(1, 2, 500))
        .await
        .expect("transfer");
    let reason = aborted(r.outcome);
    assert!(reason.contains("insufficient funds: 70 < 500"), "{reason}");
    // A stale reconnaissance value: restart, naming the key by its position.
    let mut stale = transfer(1, 2, 1);
    stale.recon = vec![TxnKeyValue {
        index: 1,
        value: Some(100i64.to_be_bytes().to_vec()),
    }];
    let r = client.transact(stale).await.expect("transfer");
    assert_eq!(r.outcome, Some(transact_response::Outcome::RestartKey(1)));
    // Bad requests: clear codes, nothing logged.
    let mut unknown = transfer(1, 2, 1);
    unknown.procedure = "nope".into();
    assert_eq!(
        client.transact(unknown).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    let mut no_access = transfer(1, 2, 1);
    no_access.keys[0].access = WireAccess::Unspecified as i32;
    let err = client.transact(no_access).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("keys[0].access"), "{err}");
    let mut wrong_type = transfer(1, 2, 1);
    wrong_type.keys[1] = txn_key("accounts", &[Element::String("x".into())], WireAccess::Read);
    assert_eq!(
        client.transact(wrong_type).await.unwrap_err().code(),
        Some(Code::InvalidArgument)
    );
    server.shutdown().await.expect("shutdown");
}

/// `i64.add` of `deltas` to accounts `ids`, with `recon` values by key position.
fn add(ids: &[i64], deltas: &[i64], recon: Vec<TxnKeyValue>) -> TransactRequest {
    TransactRequest {
        procedure: "i64.add".into(),
        args: deltas.iter().flat_map(|d| d.to_be_bytes()).collect(),
        keys: ids
            .iter()
            .map(|&id| txn_key("accounts", &[Element::I64(id)], WireAccess::ReadWrite))
            .collect(),
        recon,
        ..TransactRequest::default()
    }
}

/// A dependent transaction (OLLP): account 1000 points at another account, and the
/// transaction credits whichever account it points at. The reconnaissance reads the pointer;
/// when the pointer moves between reconnaissance and execution, the transaction restarts and
/// the client helper runs the reconnaissance again, up to its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_transactions_redo_their_reconnaissance() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path(), None).await;
    const POINTER: i64 = 1000;
    let r = client
        .transact(add(&[POINTER], &[5], vec![]))
        .await
        .expect("set the pointer");
    assert_eq!(r.outcome, committed(5));
    let pointer = |client: Client| async move {
        let v = client
            .get("accounts", &[Element::I64(POINTER)], &[])
            .await?;
        let bytes = notadb::client::value_bytes(v.as_ref().expect("a pointer")).to_vec();
        Ok::<_, notadb::client::ClientError>((
            i64::from_be_bytes(bytes[..].try_into().expect("8")),
            bytes,
        ))
    };
    // The first reconnaissance is overtaken by a move of the pointer from 5 to 6.
    let attempts = AtomicUsize::new(0);
    let r = client
        .transact_dependent(3, |c| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                let (target, seen) = pointer(c.clone()).await?;
                if n == 0 {
                    c.transact(add(&[POINTER], &[1], vec![])).await?;
                }
                let recon = vec![TxnKeyValue {
                    index: 0,
                    value: Some(seen),
                }];
                Ok(add(&[POINTER, target], &[0, 7], recon))
            }
        })
        .await
        .expect("the dependent transaction");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(
        r.outcome,
        Some(transact_response::Outcome::Committed(
            [6i64.to_be_bytes(), 7i64.to_be_bytes()].concat()
        ))
    );
    // The pointer moves after every reconnaissance: a clear error after the bound.
    let err = client
        .transact_dependent(3, |c| async move {
            let (target, seen) = pointer(c.clone()).await?;
            c.transact(add(&[POINTER], &[1], vec![])).await?;
            let recon = vec![TxnKeyValue {
                index: 0,
                value: Some(seen),
            }];
            Ok(add(&[POINTER, target], &[0, 7], recon))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            notadb::client::ClientError::Restarted {
                attempts: 3,
                key: 0
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restarted 3 times"), "{err}");
    // Nothing was credited by the restarted attempts.
    for (id, want) in [(6, 7), (7, 0), (8, 0), (9, 0)] {
        let got = client
            .get("accounts", &[Element::I64(id)], &[])
            .await
            .expect("get");
        let got = got.map_or(0, |v| {
            i64::from_be_bytes(notadb::client::value_bytes(&v).try_into().expect("8"))
        });
        assert_eq!(got, want, "account {id}");
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_values_load_from_postgresql_at_submission() {
    let db = Db::create(
        format!("notadb_txn_base_{}", std::process::id()),
        "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 500), (2, 40);",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, client) = start(dir.path(), Some(&db)).await;
    let from_pg = |mut r: TransactRequest| {
        r.base.clear();
        r.base_loader = "pg".into();
        r
    };
    // Account 1 is not in the store: its balance (500) comes from PostgreSQL.
    let r = client
        .transact(from_pg(transfer(1, 2, 100)))
        .await
        .expect("transfer");
    assert_eq!(r.outcome, committed(400));
    // PostgreSQL changes, but the store now holds both accounts: they win over base values.
    connect(&db.url)
        .await
        .batch_execute("UPDATE accounts SET balance = 0")
        .await
        .expect("update");
    let r = client
        .transact(from_pg(transfer(1, 2, 100)))
        .await
        .expect("transfer");
    assert_eq!(r.outcome, committed(300));
    assert_eq!(stored(&client, 2).await, stored_bytes(240));
    // A key PostgreSQL does not have reads as absent: the procedure aborts on it.
    let r = client
        .transact(from_pg(transfer(7, 1, 1)))
        .await
        .expect("transfer");
    let reason = aborted(r.outcome);
    assert!(reason.contains("no balance"), "{reason}");
    // An unknown loader is refused before anything is logged.
    let mut unknown = transfer(1, 2, 1);
    unknown.base_loader = "nope".into();
    let err = client.transact(unknown).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    assert!(err.to_string().contains("no loader named `nope`"), "{err}");
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
