//! Typed requests and results of the node API (the gRPC layer converts to and from these).

use notadb_types::{Element, Token, ValueFormat};
use std::time::Instant;

/// A value as a client sends it.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueInput {
    Bytes(Vec<u8>),
    Json(String),
}

/// One end of a range: elements that follow the range's prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub key: Vec<Element>,
    pub inclusive: bool,
}

/// Keys starting with `prefix`, optionally bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyRange {
    pub prefix: Vec<Element>,
    pub start: Option<Bound>,
    pub end: Option<Bound>,
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: Vec<Element>) -> KeyRange {
        KeyRange {
            prefix,
            start: None,
            end: None,
        }
    }
}

/// One change in a write.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    Put {
        keyspace: String,
        key: Vec<Element>,
        value: ValueInput,
    },
    Delete {
        keyspace: String,
        key: Vec<Element>,
    },
    DeleteRange {
        keyspace: String,
        range: KeyRange,
    },
}

/// Comparison of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition rows must meet.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// A key element compared with a typed value.
    Element {
        name: String,
        op: FilterOp,
        value: Element,
    },
    /// A field of a JSON value (dot-separated path) compared with a JSON scalar. A row whose
    /// value lacks the field, or holds another JSON type, does not match.
    Field {
        path: String,
        op: FilterOp,
        value: serde_json::Value,
    },
}

/// A range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanRequest {
    pub keyspace: String,
    pub range: KeyRange,
    /// 0: the node's default limit.
    pub limit: usize,
    pub reverse: bool,
    pub filters: Vec<Filter>,
}

/// Aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AggregateFunction {
    #[default]
    Count,
    Sum,
    Min,
    Max,
}

/// Rows whose timestamp element lies in `[from, to)`; `last` means `[now - last, ∞)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeWindow {
    pub element: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub last: Option<i64>,
}

/// An aggregate over a range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregateRequest {
    pub keyspace: String,
    pub range: KeyRange,
    pub filters: Vec<Filter>,
    pub function: AggregateFunction,
    /// JSON field for sum, min and max.
    pub field: Option<String>,
    /// Key element to group by; `None` makes one group.
    pub group_by: Option<String>,
    /// Keep the k groups with the largest aggregate; 0 keeps all.
    pub top_k: usize,
    pub window: Option<TimeWindow>,
}

/// What a read must see before it runs.
#[derive(Clone, Debug, Default)]
pub struct Consistency {
    /// Writes the read must see.
    pub tokens: Vec<Token>,
    /// When to give up waiting; `None` uses the node's `max_read_wait`.
    pub deadline: Option<Instant>,
}

impl Consistency {
    /// No tokens, no deadline.
    pub fn none() -> Consistency {
        Consistency::default()
    }

    /// Waits for these tokens.
    pub fn tokens(tokens: Vec<Token>) -> Consistency {
        Consistency {
            tokens,
            deadline: None,
        }
    }
}

/// A stored row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: Vec<Element>,
    pub value: Vec<u8>,
}

impl Row {
    /// The value parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }
}

/// Result of a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanResult {
    pub format: ValueFormat,
    pub rows: Vec<Row>,
    /// The limit stopped the scan before the end of the range.
    pub more: bool,
}

/// One group of an aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: Option<Element>,
    pub value: f64,
    pub rows: u64,
}

/// Result of an aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateResult {
    pub groups: Vec<Group>,
    pub rows_scanned: u64,
}
