//! A keyspace mapped onto a table: which element or field goes to which column, how values are
//! rendered for PostgreSQL, the SQL the transmitter runs, and the checks against the real
//! table. Pure: the catalog queries live in `sink.rs`.

use crate::config::{DeleteMode, TableMapping};
use notadb_record::KeyspaceDef;
use notadb_types::{Element, ElementType, KeyspaceId, KeyspaceSchema, ValueFormat};
use std::collections::{BTreeMap, BTreeSet};

/// A column of the real table, as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The column's name.
    pub name: String,
    /// `format_type(...)`, e.g. `bigint`, `character varying(20)`, `timestamp with time zone`.
    pub sql_type: String,
    /// Whether the column is `NOT NULL`.
    pub not_null: bool,
    /// Whether the column has a default.
    pub has_default: bool,
}

/// The real table: its columns and the column sets of its unique indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// The columns, in table order; none when the table does not exist.
    pub columns: Vec<ColumnInfo>,
    /// The column set of each unique index without a predicate (the primary key's included).
    pub unique_keys: Vec<BTreeSet<String>>,
}

/// One mapped column and the PostgreSQL type values are cast to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The column's type as the catalog names it; values are cast to it.
    pub sql_type: String,
}

impl Column {
    /// Whether the column takes timestamps as text (rather than microseconds).
    fn is_timestamp(&self) -> bool {
        self.sql_type.starts_with("timestamp")
    }
}

/// A keyspace resolved against its schema and its table: everything needed to turn log
/// entries into rows.
#[derive(Clone, Debug)]
pub struct Table {
    /// The keyspace's name.
    pub keyspace: String,
    /// The keyspace's id.
    pub keyspace_id: KeyspaceId,
    /// The keyspace's schema.
    pub schema: KeyspaceSchema,
    /// `"schema"."table"`.
    pub qualified: String,
    /// One per key element, in key order.
    pub key: Vec<Column>,
    /// JSON field name and its column.
    pub fields: Vec<(String, Column)>,
    /// The column receiving the whole value; `None` when none is mapped.
    pub value: Option<Column>,
    /// The column receiving the expiry; `None` when none is mapped.
    pub expires: Option<Column>,
    /// The column holding the seq of the change that wrote the row.
    pub seq: String,
    /// The boolean column a soft delete sets; `None`: a delete removes the row.
    pub soft_delete: Option<String>,
    /// The statement that inserts or updates a batch of rows, skipping rows a newer seq wrote.
    pub upsert_sql: String,
    /// The statement that deletes (or soft-deletes) a batch of rows, skipping rows a newer
    /// seq wrote.
    pub delete_sql: String,
}

/// Quotes an SQL identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

/// The column type the expected `CREATE TABLE` gives a key element, and the types a real
/// table may use instead.
fn element_types(ty: ElementType) -> (&'static str, &'static [&'static str]) {
    match ty {
        ElementType::Bytes => ("bytea", &["bytea"]),
        ElementType::String => (
            "text",
            &["text", "character varying", "character", "citext"],
        ),
        ElementType::I64 => ("bigint", &["bigint", "numeric"]),
        ElementType::F64 => ("double precision", &["double precision", "numeric"]),
        ElementType::Bool => ("boolean", &["boolean"]),
        ElementType::Timestamp => (
            "timestamp with time zone",
            &[
                "timestamp with time zone",
                "timestamp without time zone",
                "bigint",
            ],
        ),
    }
}

fn value_types(format: ValueFormat) -> (&'static str, &'static [&'static str]) {
    match format {
        ValueFormat::Json => ("jsonb", &["jsonb", "json", "text"]),
        ValueFormat::Bytes => ("bytea", &["bytea"]),
    }
}

fn type_matches(sql_type: &str, allowed: &[&str]) -> bool {
    allowed
        .iter()
        .any(|a| sql_type == *a || sql_type.starts_with(&format!("{a}(")))
}

impl TableMapping {
    /// The column of each key element, in key order.
    fn key_column_names(&self, schema: &KeyspaceSchema) -> Vec<String> {
        schema
            .key
            .iter()
            .map(|e| {
                self.key_columns
                    .get(&e.name)
                    .cloned()
                    .unwrap_or_else(|| e.name.clone())
            })
            .collect()
    }

    /// Checks the mapping against the keyspace alone (no database).
    pub fn check_keyspace(&self, schema: &KeyspaceSchema) -> Result<(), String> {
        let at = format!("transmitter table {:?}", self.table);
        for element in self.key_columns.keys() {
            if schema.element_index(element).is_none() {
                return Err(format!(
                    "{at}: key_columns names {element:?}, which is not a key element of keyspace {:?}",
                    schema.name
                ));
            }
        }
        if !self.fields.is_empty() && schema.value_format != ValueFormat::Json {
            return Err(format!(
                "{at}: `fields` needs JSON values; keyspace {:?} stores bytes (use value_column)",
                schema.name
            ));
        }
        if self.expires_column.is_some() && schema.ttl.is_none() {
            return Err(format!(
                "{at}: expires_column is set but keyspace {:?} has no TTL",
                schema.name
            ));
        }
        let mut seen = BTreeSet::new();
        let columns = self
            .key_column_names(schema)
            .into_iter()
            .chain(self.fields.values().cloned())
            .chain(self.value_column.clone())
            .chain(self.expires_column.clone())
            .chain(self.soft_delete_column.clone())
            .chain(Some(self.seq_column.clone()));
        for c in columns {
            if !seen.insert(c.clone()) {
                return Err(format!("{at}: column {c:?} is mapped twice"));
            }
        }
        Ok(())
    }

    /// The `CREATE TABLE` this mapping expects, for a keyspace with `schema`.
    pub fn create_table_sql(&self, schema_name: &str, schema: &KeyspaceSchema) -> String {
        let keys = self.key_column_names(schema);
        let mut lines: Vec<String> = schema
            .key
            .iter()
            .zip(&keys)
            .map(|(e, c)| format!("{} {} NOT NULL", quote(c), element_types(e.ty).0))
            .collect();
        for column in self.fields.values() {
            lines.push(format!("{} text", quote(column)));
        }
        if let Some(c) = &self.value_column {
            lines.push(format!(
                "{} {}",
                quote(c),
                value_types(schema.value_format).0
            ));
        }
        if let Some(c) = &self.expires_column {
            lines.push(format!("{} timestamp with time zone", quote(c)));
        }
        if let Some(c) = &self.soft_delete_column {
            lines.push(format!("{} boolean NOT NULL DEFAULT false", quote(c)));
        }
        lines.push(format!("{} bigint NOT NULL", quote(&self.seq_column)));
        let pk: Vec<String> = keys.iter().map(|c| quote(c)).collect();
        lines.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        format!(
            "-- keyspace {}; field columns may use any type that accepts the field's text form\nCREATE TABLE {} (\n    {}\n);",
            schema.name,
            qualified(schema_name, &self.table),
            lines.join(",\n    ")
        )
    }

    /// Resolves the mapping against the keyspace and the real table; the first mismatch is an
    /// error that names the column and says what was expected.
    pub fn resolve(
        &self,
        schema_name: &str,
        def: &KeyspaceDef,
        info: &TableInfo,
    ) -> Result<Table, String> {
        let schema = &def.schema;
        self.check_keyspace(schema)?;
        let table = qualified(schema_name, &self.table);
        if info.columns.is_empty() {
            return Err(format!(
                "table {table} does not exist; `notadb transmitter ddl` prints the CREATE TABLE the mapping expects"
            ));
        }
        let by_name: BTreeMap<&str, &ColumnInfo> =
            info.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let column = |name: &str, allowed: &[&str], what: &str| -> Result<Column, String> {
            let c = by_name
                .get(name)
                .ok_or_else(|| format!("table {table} has no column {name:?} (for {what})"))?;
            if !allowed.is_empty() && !type_matches(&c.sql_type, allowed) {
                return Err(format!(
                    "column {table}.{name} is {}; {what} needs one of: {}",
                    c.sql_type,
                    allowed.join(", ")
                ));
            }
            Ok(Column {
                name: name.to_string(),
                sql_type: c.sql_type.clone(),
            })
        };
        let key_names = self.key_column_names(schema);
        let key = schema
            .key
            .iter()
            .zip(&key_names)
            .map(|(e, c)| {
                column(
                    c,
                    element_types(e.ty).1,
                    &format!("key element {:?} ({})", e.name, e.ty.name()),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key_set: BTreeSet<String> = key_names.iter().cloned().collect();
        if !info.unique_keys.contains(&key_set) {
            return Err(format!(
                "table {table} needs a primary key or unique index on exactly ({}), the key columns",
                key_names.join(", ")
            ));
        }
        let fields = self
            .fields
            .iter()
            .map(|(f, c)| Ok((f.clone(), column(c, &[], &format!("field {f:?}"))?)))
            .collect::<Result<Vec<_>, String>>()?;
        let value = self
            .value_column
            .as_deref()
            .map(|c| column(c, value_types(schema.value_format).1, "the whole value"))
            .transpose()?;
        let expires = self
            .expires_column
            .as_deref()
            .map(|c| {
                column(
                    c,
                    &[
                        "timestamp with time zone",
                        "timestamp without time zone",
                        "bigint",
                    ],
                    "the expiry",
                )
            })
            .transpose()?;
        column(&self.seq_column, &["bigint"], "the change's seq")?;
        let soft_delete = match (&self.delete, &self.soft_delete_column) {
            (DeleteMode::Soft, Some(c)) => {
                column(c, &["boolean"], "soft deletes")?;
                Some(c.clone())
            }
            _ => None,
        };
        let mapped: BTreeSet<&str> = key_names
            .iter()
            .map(String::as_str)
            .chain(fields.iter().map(|(_, c)| c.name.as_str()))
            .chain(value.iter().map(|c| c.name.as_str()))
            .chain(expires.iter().map(|c| c.name.as_str()))
            .chain(soft_delete.as_deref())
            .chain(Some(self.seq_column.as_str()))
            .collect();
        if let Some(c) = info
            .columns
            .iter()
            .find(|c| c.not_null && !c.has_default && !mapped.contains(c.name.as_str()))
        {
            return Err(format!(
                "column {table}.{} is NOT NULL without a default and not mapped: every insert would fail",
                c.name
            ));
        }
        let mut t = Table {
            keyspace: schema.name.clone(),
            keyspace_id: def.id,
            schema: schema.clone(),
            qualified: table,
            key,
            fields,
            value,
            expires,
            seq: self.seq_column.clone(),
            soft_delete,
            upsert_sql: String::new(),
            delete_sql: String::new(),
        };
        t.upsert_sql = t.build_upsert();
        t.delete_sql = t.build_delete();
        Ok(t)
    }
}

impl Table {
    /// The columns an upsert writes, in parameter order (the seq comes last).
    pub fn value_columns(&self) -> impl Iterator<Item = &Column> {
        self.fields
            .iter()
            .map(|(_, c)| c)
            .chain(self.value.iter())
            .chain(self.expires.iter())
    }

    /// `unnest($1::text[], …, $n::int8[]) AS u(c0, …, seq)` over `columns` then the seq, and
    /// the cast expression of each column.
    fn unnest(columns: &[&Column]) -> (String, Vec<String>) {
        let arrays: Vec<String> = (1..=columns.len())
            .map(|i| format!("${i}::text[]"))
            .chain(Some(format!("${}::int8[]", columns.len() + 1)))
            .collect();
        let names: Vec<String> = (0..columns.len())
            .map(|i| format!("c{i}"))
            .chain(Some("seq".to_string()))
            .collect();
        let casts = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("u.c{i}::{}", c.sql_type))
            .collect();
        (
            format!("unnest({}) AS u({})", arrays.join(", "), names.join(", ")),
            casts,
        )
    }

    fn key_list(&self) -> String {
        let keys: Vec<String> = self.key.iter().map(|c| quote(&c.name)).collect();
        keys.join(", ")
    }

    fn build_upsert(&self) -> String {
        let columns: Vec<&Column> = self.key.iter().chain(self.value_columns()).collect();
        let (from, mut select) = Table::unnest(&columns);
        let mut names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        names.push(quote(&self.seq));
        select.push("u.seq".into());
        let mut sets: Vec<String> = self
            .value_columns()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
            .collect();
        sets.push(format!("{0} = EXCLUDED.{0}", quote(&self.seq)));
        if let Some(soft) = &self.soft_delete {
            names.push(quote(soft));
            select.push("false".into());
            sets.push(format!("{} = false", quote(soft)));
        }
        format!(
            "INSERT INTO {t} AS t ({names}) SELECT {select} FROM {from} \
             ON CONFLICT ({keys}) DO UPDATE SET {sets} WHERE t.{seq} < EXCLUDED.{seq}",
            t = self.qualified,
            names = names.join(", "),
            select = select.join(", "),
            keys = self.key_list(),
            sets = sets.join(", "),
            seq = quote(&self.seq),
        )
    }

    fn build_delete(&self) -> String {
        let key: Vec<&Column> = self.key.iter().collect();
        let (from, casts) = Table::unnest(&key);
        let seq = quote(&self.seq);
        match &self.soft_delete {
            Some(soft) => {
                let names: Vec<String> = key.iter().map(|c| quote(&c.name)).collect();
                format!(
                    "INSERT INTO {t} AS t ({names}, {seq}, {soft}) SELECT {casts}, u.seq, true FROM {from} \
                     ON CONFLICT ({keys}) DO UPDATE SET {seq} = EXCLUDED.{seq}, {soft} = true \
                     WHERE t.{seq} < EXCLUDED.{seq}",
                    t = self.qualified,
                    names = names.join(", "),
                    soft = quote(soft),
                    casts = casts.join(", "),
                    keys = self.key_list(),
                )
            }
            None => {
                let matches: Vec<String> = key
                    .iter()
                    .zip(&casts)
                    .map(|(c, cast)| format!("t.{} = {cast}", quote(&c.name)))
                    .collect();
                format!(
                    "DELETE FROM {t} AS t USING {from} WHERE {matches} AND t.{seq} < u.seq",
                    t = self.qualified,
                    matches = matches.join(" AND "),
                )
            }
        }
    }

    /// The text PostgreSQL parses into column `c` for a key element.
    pub fn render_element(c: &Column, e: &Element) -> String {
        match e {
            Element::Bytes(b) => hex(b),
            Element::String(s) => s.clone(),
            Element::I64(v) => v.to_string(),
            Element::F64(v) if v.is_infinite() => {
                if *v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            }
            Element::F64(v) => v.to_string(),
            Element::Bool(v) => v.to_string(),
            Element::Timestamp(micros) => render_micros(c, *micros),
        }
    }
}

/// A timestamp for column `c`: ISO 8601 in UTC for timestamp columns, microseconds otherwise.
pub fn render_micros(c: &Column, micros: i64) -> String {
    if c.is_timestamp() {
        iso_utc(micros)
    } else {
        micros.to_string()
    }
}

/// `\x…`, PostgreSQL's hex input form for `bytea`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00` for microseconds since the Unix epoch.
pub fn iso_utc(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{frac:06}+00",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use notadb_types::{KeyElement, Order};

    fn def() -> KeyspaceDef {
        KeyspaceDef {
            id: KeyspaceId(7),
            schema: KeyspaceSchema {
                name: "items".into(),
                key: vec![
                    KeyElement::new("store", ElementType::I64, Order::Asc),
                    KeyElement::new("item", ElementType::String, Order::Asc),
                ],
                partition_by: 1,
                value_format: ValueFormat::Json,
                ttl: None,
            },
        }
    }

    fn mapping() -> TableMapping {
        toml::from_str(
            r#"
            keyspace = "items"
            table = "items"
            key_columns = { store = "store_id" }
            fields = { title = "title" }
            "#,
        )
        .expect("mapping parses")
    }

    fn col(name: &str, ty: &str, not_null: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            sql_type: ty.into(),
            not_null,
            has_default: false,
        }
    }

    fn info() -> TableInfo {
        TableInfo {
            columns: vec![
                col("store_id", "bigint", true),
                col("item", "text", true),
                col("title", "text", false),
                col("notadb_seq", "bigint", true),
            ],
            unique_keys: vec![BTreeSet::from(["store_id".into(), "item".into()])],
        }
    }

    #[test]
    fn resolves_and_builds_guarded_statements() {
        let t = mapping()
            .resolve("public", &def(), &info())
            .expect("resolves");
        assert_eq!(
            t.upsert_sql,
            "INSERT INTO \"public\".\"items\" AS t (\"store_id\", \"item\", \"title\", \"notadb_seq\") \
             SELECT u.c0::bigint, u.c1::text, u.c2::text, u.seq \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS u(c0, c1, c2, seq) \
             ON CONFLICT (\"store_id\", \"item\") DO UPDATE SET \"title\" = EXCLUDED.\"title\", \
             \"notadb_seq\" = EXCLUDED.\"notadb_seq\" WHERE t.\"notadb_seq\" < EXCLUDED.\"notadb_seq\""
        );
        assert!(t.delete_sql.starts_with("DELETE FROM \"public\".\"items\" AS t USING unnest($1::text[], $2::text[], $3::int8[])"));
        assert!(t.delete_sql.ends_with("t.\"notadb_seq\" < u.seq"));
    }

    #[test]
    fn mismatches_are_named() {
        let m = mapping();
        let mut wrong_type = info();
        wrong_type.columns[0].sql_type = "integer".into();
        let e = m.resolve("public", &def(), &wrong_type).unwrap_err();
        assert!(
            e.contains("store_id is integer") && e.contains("bigint"),
            "{e}"
        );
        let mut no_pk = info();
        no_pk.unique_keys.clear();
        assert!(m
            .resolve("public", &def(), &no_pk)
            .unwrap_err()
            .contains("primary key"));
        let mut extra = info();
        extra.columns.push(col("owner", "text", true));
        assert!(m
            .resolve("public", &def(), &extra)
            .unwrap_err()
            .contains("owner"));
        let missing = TableInfo::default();
        assert!(m
            .resolve("public", &def(), &missing)
            .unwrap_err()
            .contains("does not exist"));
        let mut bad_key = m.clone();
        bad_key.key_columns.insert("nope".into(), "x".into());
        assert!(bad_key
            .check_keyspace(&def().schema)
            .unwrap_err()
            .contains("nope"));
    }

    #[test]
    fn expected_ddl_names_every_column() {
        let ddl = mapping().create_table_sql("public", &def().schema);
        assert!(ddl.contains("\"store_id\" bigint NOT NULL"), "{ddl}");
        assert!(
            ddl.contains("PRIMARY KEY (\"store_id\", \"item\")"),
            "{ddl}"
        );
        assert!(ddl.contains("\"notadb_seq\" bigint NOT NULL"), "{ddl}");
    }

    #[test]
    fn renders_timestamps_and_bytes() {
        assert_eq!(iso_utc(0), "1970-01-01 00:00:00.000000+00");
        assert_eq!(
            iso_utc(1_000_000_000_123_456),
            "2001-09-09 01:46:40.123456+00"
        );
        assert_eq!(iso_utc(-1), "1969-12-31 23:59:59.999999+00");
        assert_eq!(
            iso_utc(951_782_400_000_000),
            "2000-02-29 00:00:00.000000+00"
        );
        assert_eq!(hex(&[0, 255, 16]), "\\x00ff10");
    }
}
