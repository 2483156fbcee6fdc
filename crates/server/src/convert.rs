//! gRPC messages to node requests and node results to gRPC messages.

use crate::status::convert_status;
use notadb_node::{
    AggregateFunction, AggregateRequest, Bound, Consistency, Filter, FilterOp, KeyRange, Mutation,
    ScanRequest, TimeWindow, ValueInput,
};
use notadb_proto::{element_from_proto, token_from_proto, tuple_from_proto, v1};
use notadb_types::ValueFormat;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::Status;

fn invalid(message: String) -> Status {
    crate::status::invalid_argument(message)
}

/// The request's deadline from its `grpc-timeout` header, if any.
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

/// Tokens and deadline of a read.
pub fn consistency(tokens: &[v1::Token], metadata: &MetadataMap) -> Result<Consistency, Status> {
    let tokens = tokens
        .iter()
        .map(token_from_proto)
        .collect::<Result<Vec<_>, _>>()
        .map_err(convert_status)?;
    Ok(Consistency {
        tokens,
        deadline: deadline(metadata),
    })
}

/// A key tuple (required).
pub fn key(
    tuple: Option<&v1::Tuple>,
    field: impl std::fmt::Display,
) -> Result<Vec<notadb_types::Element>, Status> {
    tuple_from_proto(tuple, field).map_err(convert_status)
}

fn bound(b: Option<&v1::Bound>, field: &str) -> Result<Option<Bound>, Status> {
    b.map(|b| {
        Ok(Bound {
            key: key(b.key.as_ref(), format_args!("{field}.key"))?,
            inclusive: b.inclusive,
        })
    })
    .transpose()
}

/// A range; absent means the whole keyspace.
pub fn range(r: Option<&v1::Range>) -> Result<KeyRange, Status> {
    let Some(r) = r else {
        return Ok(KeyRange::default());
    };
    Ok(KeyRange {
        prefix: key(r.prefix.as_ref(), "range.prefix")?,
        start: bound(r.start.as_ref(), "range.start")?,
        end: bound(r.end.as_ref(), "range.end")?,
    })
}

/// A value (required).
pub fn value(v: Option<&v1::Value>, field: impl std::fmt::Display) -> Result<ValueInput, Status> {
    match v.and_then(|v| v.kind.as_ref()) {
        Some(v1::value::Kind::Bytes(b)) => Ok(ValueInput::Bytes(b.clone())),
        Some(v1::value::Kind::Json(s)) => Ok(ValueInput::Json(s.clone())),
        None => Err(invalid(format!(
            "{field}: a value (bytes or json) is required"
        ))),
    }
}

/// The message of a stored value in a keyspace of `format`.
pub fn value_to_proto(format: ValueFormat, bytes: Vec<u8>) -> v1::Value {
    let kind = match format {
        ValueFormat::Json => match String::from_utf8(bytes) {
            Ok(s) => v1::value::Kind::Json(s),
            Err(e) => v1::value::Kind::Bytes(e.into_bytes()),
        },
        ValueFormat::Bytes => v1::value::Kind::Bytes(bytes),
    };
    v1::Value { kind: Some(kind) }
}

fn keyspace(name: &str, field: impl std::fmt::Display) -> Result<String, Status> {
    if name.is_empty() {
        return Err(invalid(format!("{field}: a keyspace name is required")));
    }
    Ok(name.to_string())
}

/// A put.
pub fn put(p: &v1::PutRequest, field: &str) -> Result<Mutation, Status> {
    Ok(Mutation::Put {
        keyspace: keyspace(&p.keyspace, format_args!("{field}keyspace"))?,
        key: key(p.key.as_ref(), format_args!("{field}key"))?,
        value: value(p.value.as_ref(), format_args!("{field}value"))?,
    })
}

/// A delete.
pub fn delete(d: &v1::DeleteRequest, field: &str) -> Result<Mutation, Status> {
    Ok(Mutation::Delete {
        keyspace: keyspace(&d.keyspace, format_args!("{field}keyspace"))?,
        key: key(d.key.as_ref(), format_args!("{field}key"))?,
    })
}

/// A range delete.
pub fn delete_range(d: &v1::DeleteRangeRequest, field: &str) -> Result<Mutation, Status> {
    Ok(Mutation::DeleteRange {
        keyspace: keyspace(&d.keyspace, format_args!("{field}keyspace"))?,
        range: range(d.range.as_ref())?,
    })
}

/// The mutations of a `Write`.
pub fn mutations(w: &v1::WriteRequest) -> Result<Vec<Mutation>, Status> {
    w.mutations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("mutations[{i}].");
            match &m.op {
                Some(v1::mutation::Op::Put(p)) => put(p, &field),
                Some(v1::mutation::Op::Delete(d)) => delete(d, &field),
                Some(v1::mutation::Op::DeleteRange(d)) => delete_range(d, &field),
                None => Err(invalid(format!(
                    "mutations[{i}]: a mutation needs put, delete or delete_range"
                ))),
            }
        })
        .collect()
}

fn filter_op(op: i32, field: &str) -> Result<FilterOp, Status> {
    Ok(match v1::FilterOp::try_from(op) {
        Ok(v1::FilterOp::Eq) => FilterOp::Eq,
        Ok(v1::FilterOp::Ne) => FilterOp::Ne,
        Ok(v1::FilterOp::Lt) => FilterOp::Lt,
        Ok(v1::FilterOp::Le) => FilterOp::Le,
        Ok(v1::FilterOp::Gt) => FilterOp::Gt,
        Ok(v1::FilterOp::Ge) => FilterOp::Ge,
        Err(_) => return Err(invalid(format!("{field}: unknown filter op {op}"))),
    })
}

/// Filters of a scan or aggregate.
pub fn filters(fs: &[v1::Filter]) -> Result<Vec<Filter>, Status> {
    fs.iter()
        .enumerate()
        .map(|(i, f)| {
            let op = filter_op(f.op, &format!("filters[{i}].op"))?;
            match &f.target {
                Some(v1::filter::Target::Element(name)) => {
                    let v = f.element_value.as_ref().ok_or_else(|| {
                        invalid(format!(
                            "filters[{i}].element_value: required for an element filter"
                        ))
                    })?;
                    Ok(Filter::Element {
                        name: name.clone(),
                        op,
                        value: element_from_proto(v, &format!("filters[{i}].element_value"))
                            .map_err(convert_status)?,
                    })
                }
                Some(v1::filter::Target::Field(path)) => {
                    let value = serde_json::from_str(&f.json_value).map_err(|e| {
                        invalid(format!(
                            "filters[{i}].json_value: expected JSON text, found `{}`: {e}",
                            f.json_value
                        ))
                    })?;
                    Ok(Filter::Field {
                        path: path.clone(),
                        op,
                        value,
                    })
                }
                None => Err(invalid(format!(
                    "filters[{i}]: a filter needs an element or a field"
                ))),
            }
        })
        .collect()
}

/// A scan.
pub fn scan(s: &v1::ScanRequest) -> Result<ScanRequest, Status> {
    Ok(ScanRequest {
        keyspace: keyspace(&s.keyspace, "keyspace")?,
        range: range(s.range.as_ref())?,
        limit: s.limit as usize,
        reverse: s.reverse,
        filters: filters(&s.filters)?,
    })
}

/// An aggregate.
pub fn aggregate(a: &v1::AggregateRequest) -> Result<AggregateRequest, Status> {
    let function = match v1::AggregateFunction::try_from(a.function) {
        Ok(v1::AggregateFunction::Count) => AggregateFunction::Count,
        Ok(v1::AggregateFunction::Sum) => AggregateFunction::Sum,
        Ok(v1::AggregateFunction::Min) => AggregateFunction::Min,
        Ok(v1::AggregateFunction::Max) => AggregateFunction::Max,
        Err(_) => {
            return Err(invalid(format!(
                "function: unknown aggregate function {}",
                a.function
            )))
        }
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(AggregateRequest {
        keyspace: keyspace(&a.keyspace, "keyspace")?,
        range: range(a.range.as_ref())?,
        filters: filters(&a.filters)?,
        function,
        field: non_empty(&a.field),
        group_by: non_empty(&a.group_by),
        top_k: a.top_k as usize,
        window: a.window.as_ref().map(|w| TimeWindow {
            element: w.element.clone(),
            from: w.from_micros,
            to: w.to_micros,
            last: w.last_micros,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().expect("ascii"));
        let d = deadline(&m).expect("parsed");
        let left = d.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_millis(250) && left > Duration::from_millis(100));
        m.insert("grpc-timeout", "5x".parse().expect("ascii"));
        assert!(deadline(&m).is_none());
    }

    #[test]
    fn missing_value_and_bad_filter_json_name_their_field() {
        let err = value(None, "value").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("value:"));
        let f = v1::Filter {
            target: Some(v1::filter::Target::Field("available".into())),
            op: 0,
            element_value: None,
            json_value: "tru".into(),
        };
        let err = filters(&[f]).unwrap_err();
        assert!(
            err.message().starts_with("filters[0].json_value"),
            "{}",
            err.message()
        );
    }
}
