//! notadb's pure core: identifiers, typed keys and their order-preserving codec, keyspace
//! schemas and partitioning. No I/O, no clock, no randomness: every function here is
//! deterministic, so every replica computes the same keys and partitions.
//!
//! - [`element`]: key element types and orders ([`ElementType`], [`Order`], [`KeyElement`]),
//!   values ([`Element`]) with their JSON form, and the reference tuple order
//!   ([`compare_tuples`]).
//! - [`codec`]: the byte encoding of key tuples, whose bytewise order is the tuple order and
//!   whose prefixes are the encodings of tuple prefixes.
//! - [`schema`]: keyspace definitions ([`KeyspaceSchema`]) and full-key encoding
//!   ([`EncodedKey`]).
//! - [`partition`]: which partition a partition key belongs to ([`Partitioner`]).
//! - [`ids`]: identifier newtypes ([`PartitionId`], [`Seq`], [`KeyspaceId`], [`CacheId`],
//!   [`GroupId`], [`Token`]).
//! - [`wire`]: the big-endian, length-prefixed layout of log entries ([`WireReader`]).
//! - [`error`]: the crate's one error type ([`TypesError`]).

#![warn(missing_docs)]

pub mod codec;
pub mod element;
pub mod error;
pub mod ids;
pub mod partition;
pub mod schema;
pub mod wire;

pub use codec::{
    decode_element, decode_element_ref, decode_tuple, encode_element, encode_element_ref,
    encode_tuple, encode_tuple_refs, prefix_successor, skip_elements, visit_tuple,
    visit_tuple_from, ElementRef,
};
pub use element::{compare_elements, compare_tuples, Element, ElementType, KeyElement, Order};
pub use error::TypesError;
pub use ids::{CacheId, GroupId, KeyspaceId, PartitionId, Seq, Token, CACHE_ID_BASE};
pub use partition::{Partitioner, DEFAULT_PARTITIONS};
pub use schema::{
    EncodedKey, KeyspaceSchema, TtlSpec, ValueFormat, MAX_KEY_ELEMENTS, MAX_NAME_LEN,
};
pub use wire::{put_bytes, WireError, WireReader};
