//! PostgreSQL: the transmitter's own tables, its positions, and writing one batch in one
//! transaction together with the positions it covers.

use crate::batch::{Batch, DeadLetter, RowChange, RowOp};
use crate::mapping::{qualified, ColumnInfo, Table, TableInfo};
use crate::TransmitterError;
use notadb_types::{PartitionId, Seq};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

/// The table of committed positions, one row per transmitter and partition.
pub const POSITIONS_TABLE: &str = "notadb_transmitter_positions";
/// The table of changes that could not be written.
pub const DEAD_LETTERS_TABLE: &str = "notadb_transmitter_dead_letters";

/// Connects; the connection runs on its own task until the client is dropped.
pub async fn connect(url: &str) -> Result<Client, TransmitterError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| TransmitterError::from_pg("connecting to PostgreSQL", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "transmitter connection ended");
        }
    });
    Ok(client)
}

/// Creates the positions and dead-letter tables when missing.
pub async fn create_own_tables(client: &Client, schema: &str) -> Result<(), TransmitterError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {positions} (
            transmitter text NOT NULL,
            partition integer NOT NULL,
            seq bigint NOT NULL,
            ts_micros bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (transmitter, partition));
         CREATE TABLE IF NOT EXISTS {dead} (
            id bigserial PRIMARY KEY,
            transmitter text NOT NULL,
            keyspace text NOT NULL,
            table_name text NOT NULL,
            partition integer NOT NULL,
            seq bigint NOT NULL,
            key jsonb NOT NULL,
            value text,
            error text NOT NULL,
            sqlstate text,
            at timestamptz NOT NULL DEFAULT now())",
        positions = qualified(schema, POSITIONS_TABLE),
        dead = qualified(schema, DEAD_LETTERS_TABLE),
    );
    // Two transmitters starting at once may race on CREATE TABLE IF NOT EXISTS.
    match client.batch_execute(&sql).await {
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
        other => {
            other.map_err(|e| TransmitterError::from_pg("creating the transmitter's tables", e))
        }
    }
}

/// The columns and unique keys of `schema.table` (no columns: no such table).
pub async fn table_info(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<TableInfo, TransmitterError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| TransmitterError::from_pg("reading the table's columns", e))?;
    let columns = rows
        .iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            sql_type: r.get(1),
            not_null: r.get(2),
            has_default: r.get(3),
        })
        .collect();
    let keys = client
        .query(
            "SELECT i.indexrelid::bigint, a.attname::text
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL",
            &[&schema, &table],
        )
        .await
        .map_err(|e| TransmitterError::from_pg("reading the table's unique indexes", e))?;
    let mut unique: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for r in keys {
        unique.entry(r.get(0)).or_default().insert(r.get(1));
    }
    Ok(TableInfo {
        columns,
        unique_keys: unique.into_values().collect(),
    })
}

/// The committed position of each partition (0 for a partition never written); creates the
/// missing position rows.
pub async fn load_positions(
    client: &Client,
    schema: &str,
    name: &str,
    partitions: &[PartitionId],
) -> Result<BTreeMap<PartitionId, Seq>, TransmitterError> {
    let ps: Vec<i32> = partitions.iter().map(|p| i32::from(p.0)).collect();
    let table = qualified(schema, POSITIONS_TABLE);
    client
        .execute(
            &format!(
                "INSERT INTO {table} (transmitter, partition, seq) SELECT $1, p, 0 FROM unnest($2::int4[]) AS p
                 ON CONFLICT DO NOTHING"
            ),
            &[&name, &ps],
        )
        .await
        .map_err(|e| TransmitterError::from_pg("creating position rows", e))?;
    read_positions(client, schema, name, &ps).await
}

/// The committed positions of `partitions`.
pub async fn read_positions(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
    partitions: &[i32],
) -> Result<BTreeMap<PartitionId, Seq>, TransmitterError> {
    let rows = client
        .query(
            &format!(
                "SELECT partition, seq FROM {} WHERE transmitter = $1 AND partition = ANY($2)",
                qualified(schema, POSITIONS_TABLE)
            ),
            &[&name, &partitions],
        )
        .await
        .map_err(|e| TransmitterError::from_pg("reading positions", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let p: i32 = r.get(0);
            let seq: i64 = r.get(1);
            (PartitionId(p as u16), Seq(seq as u64))
        })
        .collect())
}

/// Prepared statements of one connection.
pub struct Sink {
    client: Client,
    name: String,
    upserts: Vec<Statement>,
    deletes: Vec<Statement>,
    dead_letter: Statement,
    advance: Statement,
}

/// What writing a batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows written (rows the database refused are not counted).
    pub rows: usize,
    /// The changes written to the dead-letter table: the batch's own and the rows the
    /// database refused.
    pub dead_letters: Vec<DeadLetter>,
}

/// A statement failed for a reason retrying will not fix: the rows go to dead letters.
fn is_poison(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let code = c.code();
        code.starts_with("22") || code.starts_with("23") || code == "42804" || code == "P0001"
    })
}

impl Sink {
    /// Prepares the statements for `tables` on `client`.
    pub async fn prepare(
        client: Client,
        schema: &str,
        name: &str,
        tables: &[Table],
    ) -> Result<Sink, TransmitterError> {
        let prep = |sql: String| {
            let client = &client;
            async move {
                client
                    .prepare(&sql)
                    .await
                    .map_err(|e| TransmitterError::from_pg("preparing a statement", e))
            }
        };
        let mut upserts = Vec::with_capacity(tables.len());
        let mut deletes = Vec::with_capacity(tables.len());
        for t in tables {
            upserts.push(prep(t.upsert_sql.clone()).await?);
            deletes.push(prep(t.delete_sql.clone()).await?);
        }
        let dead_letter = prep(format!(
            "INSERT INTO {} (transmitter, keyspace, table_name, partition, seq, key, value, error, sqlstate)
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9)",
            qualified(schema, DEAD_LETTERS_TABLE)
        ))
        .await?;
        let advance = prep(format!(
            "UPDATE {} AS t SET seq = u.new, ts_micros = u.ts, updated_at = now()
             FROM unnest($2::int4[], $3::int8[], $4::int8[], $5::int8[]) AS u(p, old, new, ts)
             WHERE t.transmitter = $1 AND t.partition = u.p AND t.seq = u.old",
            qualified(schema, POSITIONS_TABLE)
        ))
        .await?;
        Ok(Sink {
            client,
            name: name.to_string(),
            upserts,
            deletes,
            dead_letter,
            advance,
        })
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Prepares the statements of one more table (its index is the next one).
    pub async fn add_table(&mut self, t: &Table) -> Result<(), TransmitterError> {
        let pg = |e| TransmitterError::from_pg("preparing a statement", e);
        self.upserts
            .push(self.client.prepare(&t.upsert_sql).await.map_err(pg)?);
        self.deletes
            .push(self.client.prepare(&t.delete_sql).await.map_err(pg)?);
        Ok(())
    }

    /// Writes `batch` and moves the positions from `from` (what this transmitter last
    /// committed) to the batch's, in one transaction. Rows the database refuses for good go
    /// to the dead-letter table. `Fenced` when another transmitter moved a position.
    pub async fn write(
        &mut self,
        tables: &[Table],
        batch: &Batch,
        from: &BTreeMap<PartitionId, Seq>,
    ) -> Result<Written, TransmitterError> {
        let rows: Vec<&RowChange> = batch.rows().collect();
        match self.write_once(tables, batch, &rows, from, false).await {
            Err(TransmitterError::Poison(_)) => {
                self.write_once(tables, batch, &rows, from, true).await
            }
            other => other,
        }
    }

    async fn write_once(
        &mut self,
        tables: &[Table],
        batch: &Batch,
        rows: &[&RowChange],
        from: &BTreeMap<PartitionId, Seq>,
        isolate: bool,
    ) -> Result<Written, TransmitterError> {
        let pg = |what: &'static str| move |e| TransmitterError::from_pg(what, e);
        let mut tx = self.client.transaction().await.map_err(pg("beginning"))?;
        let mut dead: Vec<DeadLetter> = batch.dead_letters().to_vec();
        if isolate {
            // Halve the failing slice until the rows the database refuses stand alone.
            let mut pending = Vec::new();
            pending.push(0..rows.len());
            while let Some(range) = pending.pop() {
                let sp = tx.savepoint("rows").await.map_err(pg("savepoint"))?;
                let slice = &rows[range.clone()];
                match write_rows(&sp, &self.upserts, &self.deletes, slice).await {
                    Ok(()) => sp.commit().await.map_err(pg("releasing a savepoint"))?,
                    Err(e) if is_poison(&e) => {
                        sp.rollback()
                            .await
                            .map_err(pg("rolling back a savepoint"))?;
                        if slice.len() == 1 {
                            dead.push(dead_letter_of(&tables[slice[0].table], slice[0], &e));
                        } else {
                            let mid = range.start + slice.len() / 2;
                            pending.push(mid..range.end);
                            pending.push(range.start..mid);
                        }
                    }
                    Err(e) => return Err(TransmitterError::from_pg("writing rows", e)),
                }
            }
        } else {
            match write_rows(&tx, &self.upserts, &self.deletes, rows).await {
                Ok(()) => {}
                Err(e) if is_poison(&e) => {
                    return Err(TransmitterError::Poison(e.to_string()));
                }
                Err(e) => return Err(TransmitterError::from_pg("writing rows", e)),
            }
        }
        for d in &dead {
            let partition = i32::from(d.partition.0);
            let seq = d.seq.0 as i64;
            tx.execute(
                &self.dead_letter,
                &[
                    &self.name,
                    &d.keyspace,
                    &d.table,
                    &partition,
                    &seq,
                    &d.key,
                    &d.value,
                    &d.error,
                    &d.sqlstate,
                ],
            )
            .await
            .map_err(pg("writing a dead letter"))?;
        }
        let advances = batch.advances();
        let (mut ps, mut olds, mut news, mut tss) = (vec![], vec![], vec![], vec![]);
        for (p, a) in advances {
            ps.push(i32::from(p.0));
            olds.push(from.get(p).copied().unwrap_or(Seq(0)).0 as i64);
            news.push(a.seq.0 as i64);
            tss.push(a.ts_micros);
        }
        let moved = tx
            .execute(&self.advance, &[&self.name, &ps, &olds, &news, &tss])
            .await
            .map_err(pg("advancing positions"))?;
        if moved != advances.len() as u64 {
            // Dropping the transaction rolls it back.
            return Err(TransmitterError::Fenced);
        }
        tx.commit().await.map_err(pg("committing"))?;
        Ok(Written {
            rows: rows.len() - (dead.len() - batch.dead_letters().len()),
            dead_letters: dead,
        })
    }
}

/// Runs the upsert and delete statements for `rows` (sorted by table).
async fn write_rows(
    client: &impl GenericClient,
    upserts: &[Statement],
    deletes: &[Statement],
    rows: &[&RowChange],
) -> Result<(), tokio_postgres::Error> {
    let mut start = 0;
    while start < rows.len() {
        let table = rows[start].table;
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| r.table == table)
                .count();
        let group = &rows[start..end];
        let puts: Vec<&RowChange> = group
            .iter()
            .copied()
            .filter(|r| matches!(r.op, RowOp::Upsert(_)))
            .collect();
        let dels: Vec<&RowChange> = group
            .iter()
            .copied()
            .filter(|r| r.op == RowOp::Delete)
            .collect();
        if !puts.is_empty() {
            let params = columns_of(&puts, true);
            client.execute(&upserts[table], &params.refs()).await?;
        }
        if !dels.is_empty() {
            let params = columns_of(&dels, false);
            client.execute(&deletes[table], &params.refs()).await?;
        }
        start = end;
    }
    Ok(())
}

/// Column arrays of a statement: text per column (borrowed from the rows), then the seqs.
struct Params<'a> {
    texts: Vec<Vec<Option<&'a str>>>,
    seqs: Vec<i64>,
}

impl Params<'_> {
    fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let mut out: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = self
            .texts
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        out.push(&self.seqs);
        out
    }
}

fn columns_of<'a>(rows: &[&'a RowChange], with_values: bool) -> Params<'a> {
    let first = rows[0];
    let width = first.key.len()
        + match (&first.op, with_values) {
            (RowOp::Upsert(v), true) => v.len(),
            _ => 0,
        };
    let mut texts: Vec<Vec<Option<&str>>> =
        (0..width).map(|_| Vec::with_capacity(rows.len())).collect();
    let mut seqs = Vec::with_capacity(rows.len());
    for r in rows {
        let values = match (&r.op, with_values) {
            (RowOp::Upsert(v), true) => v.as_slice(),
            _ => &[],
        };
        let cells = r
            .key
            .iter()
            .map(|k| Some(k.as_str()))
            .chain(values.iter().map(Option::as_deref));
        for (column, cell) in texts.iter_mut().zip(cells) {
            column.push(cell);
        }
        seqs.push(r.seq.0 as i64);
    }
    Params { texts, seqs }
}

fn dead_letter_of(table: &Table, row: &RowChange, e: &tokio_postgres::Error) -> DeadLetter {
    let key = serde_json::Value::Array(
        row.key
            .iter()
            .map(|k| serde_json::Value::String(k.clone()))
            .collect(),
    );
    let value = match &row.op {
        RowOp::Upsert(values) => Some(
            serde_json::Value::Array(
                values
                    .iter()
                    .map(|v| {
                        v.clone()
                            .map_or(serde_json::Value::Null, serde_json::Value::String)
                    })
                    .collect(),
            )
            .to_string(),
        ),
        RowOp::Delete => None,
    };
    let error = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    DeadLetter {
        keyspace: table.keyspace.clone(),
        table: table.qualified.clone(),
        partition: row.partition,
        seq: row.seq,
        key: key.to_string(),
        value,
        error,
        sqlstate: e.code().map(|c| c.code().to_string()),
    }
}
