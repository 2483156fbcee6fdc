//! The built-in PostgreSQL cache loader: one parameterised statement, its first column of the
//! first row is the value.
//!
//! The key binds to the statement's parameters by their types, as PostgreSQL infers them:
//! a byte-keyed cache has one parameter (`text`/`varchar`: the key as UTF-8; `bytea`: the raw
//! bytes; `int2`/`int4`/`int8`: the key as a decimal integer), and a cache derived from a
//! keyspace has one parameter per key element. The first column must be `bytea` or text
//! (`text`, `varchar`; cast `json`/`jsonb` with `::text`); no row or a NULL is "not found".

use bytes::Bytes;
use notadb_node::{CacheLoader, LoadKey};
use notadb_types::Element;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

/// A `[[postgres_loaders]]` table of the server config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresLoaderConfig {
    /// The name caches give as their `loader`.
    pub name: String,
    /// A libpq connection string or URL.
    pub url: String,
    /// The statement; `$1` (or `$1..$n` for a derived cache's key elements) is the key.
    pub sql: String,
}

/// Why a loader has no prepared statement.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// PostgreSQL could not be reached; loads retry.
    #[error("connecting to PostgreSQL: {0}")]
    Unreachable(String),
    /// PostgreSQL refused the loader's statement, or its parameters or columns do not fit:
    /// retrying will not help.
    #[error("loader `{loader}`: {message}")]
    Statement {
        /// The loader's name.
        loader: String,
        /// What is wrong.
        message: String,
    },
}

struct Connected {
    client: Client,
    statement: Statement,
}

/// Loads cache entries with one SQL statement over one pipelined connection, reconnecting
/// after the connection fails.
pub struct PostgresLoader {
    config: PostgresLoaderConfig,
    /// The live connection; loads share it (tokio-postgres pipelines their queries).
    current: std::sync::RwLock<Option<Arc<Connected>>>,
    /// Held while (re)connecting, so one caller connects and the others wait for it.
    connecting: Mutex<()>,
}

impl PostgresLoader {
    /// A loader that connects on first use.
    pub fn new(config: PostgresLoaderConfig) -> PostgresLoader {
        PostgresLoader {
            config,
            current: std::sync::RwLock::new(None),
            connecting: Mutex::new(()),
        }
    }

    /// Connects and prepares the statement now, so a start-up with a wrong statement fails
    /// at once. A database that cannot be reached is only reported: loads retry.
    pub async fn check(&self) -> Result<(), LoaderError> {
        match self.connected().await {
            Ok(_) => Ok(()),
            Err(e @ LoaderError::Unreachable(_)) => {
                tracing::warn!(loader = %self.config.name, error = %e, "cache loader database unreachable; loads will retry");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn live(&self) -> Option<Arc<Connected>> {
        self.current
            .read()
            .expect("connection lock")
            .clone()
            .filter(|c| !c.client.is_closed())
    }

    async fn connected(&self) -> Result<Arc<Connected>, LoaderError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let (client, connection) = tokio_postgres::connect(&self.config.url, NoTls)
            .await
            .map_err(|e| LoaderError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "cache loader connection ended");
            }
        });
        let refused = |message: String| LoaderError::Statement {
            loader: self.config.name.clone(),
            message,
        };
        let statement = client
            .prepare(&self.config.sql)
            .await
            .map_err(|e| refused(format!("preparing its sql: {}", pg_message(&e))))?;
        if statement.params().is_empty() {
            return Err(refused(
                "its sql takes no parameter; the key binds to $1".into(),
            ));
        }
        match statement.columns().first().map(|c| c.type_().clone()) {
            Some(t) if t == Type::BYTEA || is_text(&t) => {}
            Some(t) => {
                return Err(refused(format!(
                    "the first column is {t}; it must be bytea or text (cast json with ::text)"
                )))
            }
            None => return Err(refused("its sql returns no column".into())),
        }
        let connected = Arc::new(Connected { client, statement });
        *self.current.write().expect("connection lock") = Some(connected.clone());
        Ok(connected)
    }
}

fn is_text(t: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t)
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// Binds one key element to a parameter of type `t`.
fn bind(element: &Element, t: &Type, i: usize) -> Result<Param, String> {
    let wrong = || {
        format!(
            "parameter ${}: a {element:?} key element cannot bind to {t}",
            i + 1
        )
    };
    let int = |v: i64| -> Result<Param, String> {
        Ok(match *t {
            Type::INT8 => Box::new(v),
            Type::INT4 => Box::new(i32::try_from(v).map_err(|_| wrong())?),
            Type::INT2 => Box::new(i16::try_from(v).map_err(|_| wrong())?),
            _ => return Err(wrong()),
        })
    };
    match element {
        Element::String(s) if is_text(t) => Ok(Box::new(s.clone())),
        Element::String(s) if [Type::INT2, Type::INT4, Type::INT8].contains(t) => int(s
            .parse()
            .map_err(|_| format!("parameter ${}: the key `{s}` is not an integer", i + 1))?),
        Element::Bytes(b) if *t == Type::BYTEA => Ok(Box::new(b.clone())),
        Element::I64(v) | Element::Timestamp(v) => int(*v),
        Element::F64(v) if *t == Type::FLOAT8 => Ok(Box::new(*v)),
        Element::Bool(v) if *t == Type::BOOL => Ok(Box::new(*v)),
        _ => Err(wrong()),
    }
}

#[async_trait::async_trait]
impl CacheLoader for PostgresLoader {
    async fn load(&self, key: LoadKey<'_>) -> Result<Option<Bytes>, String> {
        let connected = self.connected().await.map_err(|e| e.to_string())?;
        let types = connected.statement.params();
        let elements: Vec<Element> = if key.elements.is_empty() {
            // A byte key: text if the parameter is, raw bytes for bytea.
            vec![if types[0] == Type::BYTEA {
                Element::Bytes(key.key.to_vec())
            } else {
                Element::String(
                    String::from_utf8(key.key.to_vec())
                        .map_err(|_| "the key is not UTF-8 and $1 is not bytea".to_string())?,
                )
            }]
        } else {
            key.elements.to_vec()
        };
        if elements.len() != types.len() {
            return Err(format!(
                "loader `{}`: its sql takes {} parameters, the key has {} elements",
                self.config.name,
                types.len(),
                elements.len()
            ));
        }
        let params = elements
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (e, t))| bind(e, t, i))
            .collect::<Result<Vec<Param>, String>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let rows = connected
            .client
            .query(&connected.statement, &refs)
            .await
            .map_err(|e| format!("loader `{}`: {}", self.config.name, pg_message(&e)))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value = if connected.statement.columns()[0].type_() == &Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(0)
                .map(|v| v.map(Bytes::from))
        } else {
            row.try_get::<_, Option<String>>(0)
                .map(|v| v.map(Bytes::from))
        };
        value.map_err(|e| format!("loader `{}`: reading the value: {e}", self.config.name))
    }
}
