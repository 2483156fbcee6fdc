//! The one place where errors become gRPC status codes. Services return what went wrong as a
//! [`NodeError`] (or another crate's error) and convert it here, so one kind of failure has
//! one code wherever it happens, and no internal detail reaches a client: an internal error
//! is logged in full and answered with a reference to that log line.

use notadb_node::NodeError;
use notadb_proto::ConvertError;
use notadb_transmitter::TransmitterError;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Code, Status};

/// Numbers the internal errors this process answered, to find their log lines.
static INTERNAL_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The gRPC status of a node error.
pub fn to_status(e: NodeError) -> Status {
    let code = match &e {
        NodeError::InvalidArgument(_) => Code::InvalidArgument,
        NodeError::NotFound(_) => Code::NotFound,
        NodeError::AlreadyExists(_) => Code::AlreadyExists,
        NodeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        NodeError::Unavailable(_) => Code::Unavailable,
        NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
        NodeError::ResourceExhausted(_) => Code::ResourceExhausted,
        NodeError::Internal(detail) => {
            let reference = INTERNAL_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(reference, %detail, "internal error answered to a client");
            return Status::internal(format!(
                "internal error (reference {reference} in the node's log)"
            ));
        }
    };
    Status::new(code, e.to_string())
}

/// A request message that does not convert is an invalid argument.
pub fn convert_status(e: ConvertError) -> Status {
    to_status(NodeError::InvalidArgument(e.0))
}

/// A request that is wrong and will stay wrong.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    to_status(NodeError::InvalidArgument(message.into()))
}

/// A method this server does not know.
pub fn unimplemented(message: impl Into<String>) -> Status {
    Status::unimplemented(message.into())
}

/// The status of a transmitter's failure to flush: a timeout is the request's deadline; the
/// rest (the database, the log, this replica) is retryable.
pub fn transmitter_status(e: TransmitterError) -> Status {
    match e {
        TransmitterError::Timeout(m) => to_status(NodeError::DeadlineExceeded(m)),
        TransmitterError::Invalid(m) => to_status(NodeError::InvalidArgument(m)),
        other => to_status(NodeError::Unavailable(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = to_status(NodeError::Internal(
            "rocksdb: corruption in 000042.sst".into(),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("000042"), "{}", status.message());
        assert!(
            status.message().contains("reference"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (
                NodeError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (NodeError::NotFound("x".into()), Code::NotFound),
            (NodeError::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                NodeError::DeadlineExceeded("x".into()),
                Code::DeadlineExceeded,
            ),
            (NodeError::Unavailable("x".into()), Code::Unavailable),
            (
                NodeError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (
                NodeError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            let status = to_status(e);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), "x");
        }
        assert_eq!(
            transmitter_status(TransmitterError::Timeout("t".into())).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(
            transmitter_status(TransmitterError::Fenced).code(),
            Code::Unavailable
        );
    }
}
