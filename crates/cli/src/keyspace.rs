//! `notadb keyspace create|list|describe|drop`.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use notadb_client::{proto, Client};
use notadb_proto::schema_from_proto;
use notadb_types::{ElementType, KeyElement, KeyspaceSchema, Order, TtlSpec, ValueFormat};
use serde_json::json;

/// The `notadb keyspace` commands.
#[derive(Subcommand, Debug)]
pub enum KeyspaceCommand {
    /// Create a keyspace.
    Create(CreateArgs),
    /// List keyspaces.
    List,
    /// Show one keyspace.
    Describe {
        /// The keyspace's name.
        name: String,
    },
    /// Drop a keyspace and its data.
    Drop {
        /// The keyspace's name.
        name: String,
    },
}

/// Arguments of `notadb keyspace create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The keyspace's name.
    pub name: String,
    /// Key elements, `name:type[:desc]` separated by commas; types: bytes, string, i64, f64,
    /// bool, timestamp. Example: `store_id:string,product:string,score:f64:desc,item_id:string`.
    #[arg(long)]
    pub key: String,
    /// Number of leading key elements forming the partition key.
    #[arg(long, default_value_t = 1)]
    pub partition_by: usize,
    /// Value format: bytes or json.
    #[arg(long, default_value = "bytes")]
    pub value: String,
    /// Entries expire this long (e.g. `24h`) after the timestamp element `--ttl-element`, or
    /// after they were written when no element is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// The timestamp key element TTL counts from.
    #[arg(long)]
    pub ttl_element: Option<String>,
    /// Succeed when an identical keyspace exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// Parses `name:type[:asc|desc],...`.
pub fn parse_key(spec: &str) -> anyhow::Result<Vec<KeyElement>> {
    spec.split(',')
        .map(|part| {
            let fields: Vec<&str> = part.trim().split(':').collect();
            let (name, ty, order) = match fields.as_slice() {
                [name, ty] => (name, ty, "asc"),
                [name, ty, order] => (name, ty, *order),
                _ => bail!("--key: expected `name:type[:desc]`, found `{part}`"),
            };
            Ok(KeyElement {
                name: name.to_string(),
                ty: ty
                    .parse::<ElementType>()
                    .map_err(|e| anyhow!("--key `{part}`: {e}"))?,
                order: order
                    .parse::<Order>()
                    .map_err(|e| anyhow!("--key `{part}`: {e}"))?,
            })
        })
        .collect()
}

fn print_info(info: &proto::KeyspaceInfo) -> anyhow::Result<()> {
    let schema = info
        .schema
        .as_ref()
        .ok_or_else(|| anyhow!("the node returned no schema"))?;
    let schema = schema_from_proto(schema).map_err(|e| anyhow!("{e}"))?;
    let out = json!({"id": info.id, "approximate_bytes": info.approximate_bytes, "schema": schema});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Runs a `notadb keyspace` command; keyspaces are printed as pretty JSON (id, approximate
/// bytes and schema).
pub async fn run(client: &Client, cmd: KeyspaceCommand) -> anyhow::Result<()> {
    match cmd {
        KeyspaceCommand::Create(args) => {
            let ttl = match (args.ttl, args.ttl_element) {
                (None, None) => None,
                (None, Some(_)) => bail!("--ttl-element needs --ttl"),
                (Some(d), None) => Some(TtlSpec::Append {
                    ttl_micros: d.as_micros() as u64,
                }),
                (Some(d), Some(element)) => Some(TtlSpec::Element {
                    element,
                    ttl_micros: d.as_micros() as u64,
                }),
            };
            let schema = KeyspaceSchema {
                name: args.name,
                key: parse_key(&args.key)?,
                partition_by: args.partition_by,
                value_format: args
                    .value
                    .parse::<ValueFormat>()
                    .map_err(|e| anyhow!("--value: {e}"))?,
                ttl,
            };
            print_info(&client.create_keyspace(&schema, args.if_not_exists).await?)
        }
        KeyspaceCommand::List => {
            for info in client.list_keyspaces().await? {
                print_info(&info)?;
            }
            Ok(())
        }
        KeyspaceCommand::Describe { name } => print_info(&client.describe_keyspace(&name).await?),
        KeyspaceCommand::Drop { name } => {
            client.drop_keyspace(&name).await?;
            println!("dropped {name}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spec_parses_and_rejects() {
        let key = parse_key("a:string,b:f64:desc").expect("valid");
        assert_eq!(key[1].order, Order::Desc);
        assert_eq!(key[1].ty, ElementType::F64);
        assert!(parse_key("a").is_err());
        assert!(parse_key("a:float")
            .unwrap_err()
            .to_string()
            .contains("`a:float`"));
    }
}
