//! Transactions over gRPC: a server with registered procedures, a client that runs them.

use bytes::Bytes;
use notadb::client::proto::{
    transact_response, value, Access as WireAccess, TransactRequest, TxnKeyValue,
};
use notadb::client::{txn_key, Client, Code, Element};
use notadb::types::{ElementType, KeyElement, KeyspaceSchema, Order, ValueFormat};
use notadb::{Abort, Server, ServerConfig, TxnContext};

fn accounts() -> KeyspaceSchema {
    KeyspaceSchema {
        name: "accounts".into(),
        key: vec![KeyElement::new("id", ElementType::I64, Order::Asc)],
        partition_by: 1,
        value_format: ValueFormat::Bytes,
        ttl: None,
    }
}

fn balance(v: Option<&Bytes>) -> Result<i64, Abort> {
    let v = v.ok_or("no balance")?;
    Ok(i64::from_be_bytes(
        v[..].try_into().map_err(|_| "not 8 bytes")?,
    ))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        ..ServerConfig::default()
    };
    config.node.data_dir = dir.path().to_path_buf();
    config.node.partitions = 8;
    let server = Server::start(config, |b| {
        b.keyspace(accounts())
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
    assert_eq!(client.list_procedures().await.unwrap(), vec!["transfer"]);

    // Accounts 1 and 2 across partitions or not, it is the same call.
    let r = client.transact(transfer(1, 2, 30)).await.expect("transfer");
    assert_eq!(r.txn_id.len(), 16);
    assert!(!r.participants.is_empty());
    assert_eq!(
        r.outcome,
        Some(transact_response::Outcome::Committed(
            70i64.to_be_bytes().to_vec()
        ))
    );
    // The stored values are what the procedure wrote: a plain Get sees them.
    let got = client
        .get("accounts", &[Element::I64(2)], &[])
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got.kind,
        Some(value::Kind::Bytes(130i64.to_be_bytes().to_vec()))
    );
    // The procedure's own abort is an outcome.
    let r = client
        .transact(transfer(1, 2, 500))
        .await
        .expect("transfer");
    match r.outcome {
        Some(transact_response::Outcome::Aborted(reason)) => {
            assert!(reason.contains("insufficient funds: 70 < 500"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
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
