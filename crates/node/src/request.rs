//! Typed requests and results of the node API (the gRPC layer converts to and from these).

use notadb_types::{Element, Token, ValueFormat};
use std::time::Instant;

/// A value as a client sends it.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueInput {
    /// Raw bytes, stored as they are.
    Bytes(Vec<u8>),
    /// JSON text; only a JSON keyspace accepts it.
    Json(String),
}

/// One end of a range: elements that follow the range's prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// The key elements after the prefix.
    pub key: Vec<Element>,
    /// Whether keys that start with `prefix` and `key` are in the range.
    pub inclusive: bool,
}

/// Keys starting with `prefix`, optionally bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyRange {
    /// Leading key elements every key in the range has; empty matches the whole keyspace.
    pub prefix: Vec<Element>,
    /// Where the range starts; `None` starts at the prefix.
    pub start: Option<Bound>,
    /// Where the range ends; `None` runs to the end of the prefix.
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
    /// Sets the value of one key.
    Put {
        /// The keyspace's name.
        keyspace: String,
        /// The full key.
        key: Vec<Element>,
        /// The new value.
        value: ValueInput,
    },
    /// Removes one key.
    Delete {
        /// The keyspace's name.
        keyspace: String,
        /// The full key.
        key: Vec<Element>,
    },
    /// Removes every key in a range; the range's prefix must include the partition key.
    DeleteRange {
        /// The keyspace's name.
        keyspace: String,
        /// The keys to remove.
        range: KeyRange,
    },
}

/// Comparison of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
}

/// A condition rows must meet.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// A key element compared with a typed value.
    Element {
        /// The key element's name.
        name: String,
        /// How the element compares with `value`.
        op: FilterOp,
        /// The value to compare with.
        value: Element,
    },
    /// A field of a JSON value (dot-separated path) compared with a JSON scalar. A row whose
    /// value lacks the field, or holds another JSON type, does not match.
    Field {
        /// Dot-separated path of the field.
        path: String,
        /// How the field compares with `value`.
        op: FilterOp,
        /// The JSON scalar to compare with.
        value: serde_json::Value,
    },
}

/// A range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanRequest {
    /// The keyspace's name.
    pub keyspace: String,
    /// The keys to read.
    pub range: KeyRange,
    /// Most rows to return.
    /// 0: the node's default limit.
    pub limit: usize,
    /// Read from the end of the range backwards.
    pub reverse: bool,
    /// Conditions every returned row meets.
    pub filters: Vec<Filter>,
}

/// Aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AggregateFunction {
    /// Number of rows.
    #[default]
    Count,
    /// Sum of a JSON field.
    Sum,
    /// Smallest value of a JSON field.
    Min,
    /// Largest value of a JSON field.
    Max,
}

/// Rows whose timestamp element lies in `[from, to)`; `last` means `[now - last, ∞)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeWindow {
    /// Name of the timestamp key element.
    pub element: String,
    /// Start of the window, in microseconds since the Unix epoch; `None`: no lower bound.
    pub from: Option<i64>,
    /// End of the window (excluded), in microseconds since the Unix epoch; `None`: no upper
    /// bound.
    pub to: Option<i64>,
    /// Length of a window that ends now, in microseconds; positive, and not set with `from`.
    pub last: Option<i64>,
}

/// An aggregate over a range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregateRequest {
    /// The keyspace's name.
    pub keyspace: String,
    /// The keys to aggregate over.
    pub range: KeyRange,
    /// Conditions every counted row meets.
    pub filters: Vec<Filter>,
    /// What to compute.
    pub function: AggregateFunction,
    /// JSON field for sum, min and max.
    pub field: Option<String>,
    /// Key element to group by; `None` makes one group.
    pub group_by: Option<String>,
    /// Keep the k groups with the largest aggregate; 0 keeps all.
    pub top_k: usize,
    /// Rows outside this time window do not count; `None`: no window.
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
    /// The decoded key.
    pub key: Vec<Element>,
    /// The value's bytes.
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
    /// The keyspace's value format.
    pub format: ValueFormat,
    /// The rows, in key order (reversed for a reverse scan).
    pub rows: Vec<Row>,
    /// The limit stopped the scan before the end of the range.
    pub more: bool,
}

/// One group of an aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The group's value of the `group_by` element; `None` when there is no `group_by`.
    pub key: Option<Element>,
    /// The aggregate over the group's rows.
    pub value: f64,
    /// Rows that counted towards the group.
    pub rows: u64,
}

/// Result of an aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateResult {
    /// The groups, largest aggregate first (ties in group key order).
    pub groups: Vec<Group>,
    /// Rows visited in the range, counted or not.
    pub rows_scanned: u64,
}
