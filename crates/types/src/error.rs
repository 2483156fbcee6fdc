//! The crate's one error type.

use crate::element::ElementType;

/// Everything that can go wrong in `notadb-types`.
///
/// All variants are deterministic: the same input always gives the same error, so a replica that
/// meets one on the apply path can treat it as a valid outcome. None is retryable; the caller's
/// input (a key, a schema, a JSON value) or stored bytes must change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TypesError {
    /// A key element has the wrong type for its schema position.
    #[error("key element `{field}`: expected {expected}, found {found}")]
    ElementType {
        /// The key element's name in the schema.
        field: String,
        /// The type the schema declares.
        expected: ElementType,
        /// The type of the value given.
        found: ElementType,
    },
    /// A key or prefix has the wrong number of elements.
    #[error("expected {expected} key elements, found {found}")]
    ElementCount {
        /// The accepted count, in words: "exactly 4", "at most 4", "at least 2".
        expected: String,
        /// The number of elements given.
        found: usize,
    },
    /// An f64 key element is NaN, which has no place in the key order.
    #[error("key element `{field}`: expected a number, found nan (nan is not a valid key)")]
    NaN {
        /// The key element's name in the schema.
        field: String,
    },
    /// A JSON value cannot be read as the element type it should have.
    #[error("key element `{field}`: {message}")]
    Json {
        /// The name of the field the value was given for.
        field: String,
        /// What was expected and what was found.
        message: String,
    },
    /// A schema (or other definition, such as a partition count) is invalid; the message names
    /// the field.
    #[error("{0}")]
    Schema(String),
    /// Encoded key bytes are malformed: truncated, non-canonical, or longer than the schema.
    #[error("malformed encoded key: {0}")]
    Decode(String),
}
