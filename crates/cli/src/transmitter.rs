//! `notadb transmitter`: the tables a transmitter expects, and waiting for writes to reach
//! PostgreSQL.

use anyhow::Context;
use clap::{Args, Subcommand};
use notadb::ServerConfig;
use notadb_client::{Client, PartitionId, Token};
use notadb_types::Seq;
use std::path::PathBuf;
use std::time::Duration;

/// The `notadb transmitter` commands.
#[derive(Subcommand, Debug)]
pub enum TransmitterCommand {
    /// Print the CREATE TABLE statements the config's `[transmitter]` mappings expect, for
    /// the keyspaces of the node at `--addr`.
    Ddl(DdlArgs),
    /// Wait until writes are in PostgreSQL: every token (`partition:seq`, from the `token`
    /// that `put` and `delete` print) committed by the transmitter.
    Flush(FlushArgs),
}

/// Arguments of `notadb transmitter ddl`.
#[derive(Args, Debug)]
pub struct DdlArgs {
    /// The node's TOML configuration file, with a `[transmitter]` table.
    #[arg(long, env = "NOTADB_CONFIG")]
    pub config: PathBuf,
}

/// Arguments of `notadb transmitter flush`.
#[derive(Args, Debug)]
pub struct FlushArgs {
    /// Tokens, `partition:seq`.
    #[arg(required = true)]
    pub tokens: Vec<String>,
    /// Longest wait.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// Runs a `notadb transmitter` command. `ddl` fails on a mapping that does not fit its
/// keyspace; `flush` fails when the tokens are not in the database within `--wait`.
pub async fn run(client: &Client, cmd: TransmitterCommand) -> anyhow::Result<()> {
    match cmd {
        TransmitterCommand::Ddl(args) => {
            let config = ServerConfig::from_file(&args.config).map_err(crate::cli::ConfigError)?;
            let t = config
                .transmitter
                .context("the config has no [transmitter] table")?;
            for m in &t.tables {
                let info = client
                    .describe_keyspace(&m.keyspace)
                    .await
                    .with_context(|| format!("keyspace {:?} of table {:?}", m.keyspace, m.table))?;
                let schema = notadb_proto::schema_from_proto(
                    info.schema.as_ref().context("the node sent no schema")?,
                )?;
                m.check_keyspace(&schema).map_err(anyhow::Error::msg)?;
                println!("{}\n", m.create_table_sql(&t.schema, &schema));
            }
            Ok(())
        }
        TransmitterCommand::Flush(args) => {
            let tokens = args
                .tokens
                .iter()
                .map(|t| parse_token(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            client.transmitter_flush(&tokens, args.wait).await?;
            println!("in the database: {}", args.tokens.join(" "));
            Ok(())
        }
    }
}

fn parse_token(s: &str) -> anyhow::Result<Token> {
    let (p, seq) = s
        .split_once(':')
        .with_context(|| format!("token {s:?}: expected partition:seq"))?;
    Ok(Token {
        partition: PartitionId(
            p.parse()
                .with_context(|| format!("token {s:?}: partition"))?,
        ),
        seq: Seq(seq.parse().with_context(|| format!("token {s:?}: seq"))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_or_say_why_not() {
        let t = parse_token("3:17").expect("valid");
        assert_eq!((t.partition.0, t.seq.0), (3, 17));
        assert!(parse_token("3").is_err());
        assert!(parse_token("x:1").is_err());
    }
}
