//! notadb's gRPC API, generated from `proto/notadb/v1/*.proto`, and the conversions between its
//! messages and the typed values of `notadb-types`. Keys travel typed, never as encoded bytes.

mod convert;
pub mod frame;
mod member;

/// The generated `notadb.v1` package.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("notadb.v1");
}

/// The encoded descriptor set of every notadb proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/notadb_descriptor.bin"));

pub use convert::{
    element_from_proto, element_into_proto, element_to_proto, schema_from_proto, schema_to_proto,
    token_from_proto, token_to_proto, tuple_from_proto, tuple_into_proto, tuple_to_proto,
    ConvertError,
};
