//! The one place where errors become gRPC status codes.

use notadb_node::NodeError;
use notadb_proto::ConvertError;
use tonic::{Code, Status};

/// The gRPC status of a node error.
pub fn to_status(e: NodeError) -> Status {
    let code = match &e {
        NodeError::InvalidArgument(_) => Code::InvalidArgument,
        NodeError::NotFound(_) => Code::NotFound,
        NodeError::AlreadyExists(_) => Code::AlreadyExists,
        NodeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        NodeError::Unavailable(_) => Code::Unavailable,
        NodeError::ResourceExhausted(_) => Code::ResourceExhausted,
        NodeError::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A request message that does not convert is an invalid argument.
pub fn convert_status(e: ConvertError) -> Status {
    Status::invalid_argument(e.0)
}
