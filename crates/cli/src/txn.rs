//! `notadb txn`: run a registered transaction procedure, list the procedures.

use crate::keys::{elements, schema};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use notadb_client::{proto, txn_key, Client};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The `notadb txn` commands.
#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// List the procedures the node has registered.
    Procedures,
    /// Run a procedure and print its outcome as JSON (exit status 1 when it did not commit).
    Run(RunArgs),
}

/// Arguments of `notadb txn run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The procedure's name (`notadb txn procedures` lists them).
    pub procedure: String,
    /// A declared key, in the procedure's order: `KEYSPACE=JSON_ARRAY[:r|w|rw]` (default rw),
    /// e.g. `accounts=[1]:rw`.
    #[arg(long = "key", required = true)]
    pub keys: Vec<String>,
    /// Arguments as 64-bit integers (8 bytes each, big-endian), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with = "args_hex"
    )]
    pub i64: Vec<i64>,
    /// Arguments as hex bytes.
    #[arg(long)]
    pub args_hex: Option<String>,
    /// Milliseconds to wait for every participant (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub timeout_ms: u32,
}

/// Runs a `notadb txn` command; `run` fails when the transaction did not commit.
pub async fn run(client: &Client, command: TxnCommand) -> anyhow::Result<()> {
    match command {
        TxnCommand::Procedures => {
            for name in client.list_procedures().await? {
                println!("{name}");
            }
            Ok(())
        }
        TxnCommand::Run(args) => run_procedure(client, args).await,
    }
}

/// `KEYSPACE=JSON_ARRAY[:ACCESS]` → (keyspace, key JSON, access).
fn parse_key(text: &str) -> anyhow::Result<(String, String, proto::Access)> {
    let (keyspace, rest) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("--key {text}: expected KEYSPACE=JSON_ARRAY[:r|w|rw]"))?;
    let (json, access) = match rest.rsplit_once(':') {
        Some((json, "r")) => (json, proto::Access::Read),
        Some((json, "w")) => (json, proto::Access::Write),
        Some((json, "rw")) => (json, proto::Access::ReadWrite),
        _ => (rest, proto::Access::ReadWrite),
    };
    Ok((keyspace.to_string(), json.to_string(), access))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim_start_matches("0x");
    if !text.is_ascii() {
        bail!("--args-hex: not hex");
    }
    if !text.len().is_multiple_of(2) {
        bail!("--args-hex: an odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("--args-hex: not hex"))
        .collect()
}

async fn run_procedure(client: &Client, args: RunArgs) -> anyhow::Result<()> {
    let mut schemas = BTreeMap::new();
    let mut keys = Vec::with_capacity(args.keys.len());
    for (i, text) in args.keys.iter().enumerate() {
        let (keyspace, json, access) = parse_key(text)?;
        if !schemas.contains_key(&keyspace) {
            schemas.insert(keyspace.clone(), schema(client, &keyspace).await?);
        }
        let key = elements(&schemas[&keyspace], &json, 0, &format!("--key {i}"))?;
        keys.push(txn_key(&keyspace, &key, access));
    }
    let bytes = match &args.args_hex {
        Some(h) => unhex(h)?,
        None => args.i64.iter().flat_map(|v| v.to_be_bytes()).collect(),
    };
    let r = client
        .transact(proto::TransactRequest {
            procedure: args.procedure,
            args: bytes,
            keys,
            timeout_ms: args.timeout_ms,
            ..Default::default()
        })
        .await?;
    let mut out = json!({
        "txn_id": hex(&r.txn_id),
        "participants": r.participants,
        "tokens": r.tokens.iter().map(|t| json!({"partition": t.partition, "seq": t.seq})).collect::<Vec<_>>(),
    });
    let committed = match &r.outcome {
        Some(proto::transact_response::Outcome::Committed(output)) => {
            out["outcome"] = json!("committed");
            out["output_hex"] = json!(hex(output));
            if !output.is_empty() && output.len().is_multiple_of(8) {
                let ints: Vec<i64> = output
                    .chunks(8)
                    .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                out["output_i64"] = json!(ints);
            }
            true
        }
        Some(proto::transact_response::Outcome::Aborted(reason)) => {
            out["outcome"] = json!("aborted");
            out["reason"] = json!(reason);
            false
        }
        Some(proto::transact_response::Outcome::RestartKey(k)) => {
            out["outcome"] = json!("restart");
            out["restart_key"] = json!(k);
            false
        }
        None => bail!("the server returned no outcome"),
    };
    println!("{}", Value::to_string(&out));
    if !committed {
        bail!("the transaction did not commit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_and_without_access() {
        let (ks, json, a) = parse_key("accounts=[1]:r").unwrap();
        assert_eq!(
            (ks.as_str(), json.as_str(), a),
            ("accounts", "[1]", proto::Access::Read)
        );
        let (_, json, a) = parse_key(r#"kv=["a:rw"]"#).unwrap();
        assert_eq!(
            (json.as_str(), a),
            (r#"["a:rw"]"#, proto::Access::ReadWrite)
        );
        let (_, json, a) = parse_key(r#"kv=["x"]:w"#).unwrap();
        assert_eq!((json.as_str(), a), (r#"["x"]"#, proto::Access::Write));
        assert!(parse_key("nothing").is_err());
        assert_eq!(unhex("0x00ff").unwrap(), vec![0, 255]);
        assert!(unhex("abc").is_err());
        assert!(unhex("aéa").is_err());
    }
}
