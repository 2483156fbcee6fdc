//! Maps NATS client errors to [`LogError`]: transport trouble is retryable
//! ([`LogError::Unavailable`]), a JetStream API refusal is not ([`LogError::Rejected`]) unless
//! the server says it is temporarily unable (5xx).

use std::fmt::{Debug, Display};

use async_nats::jetstream::{self, consumer, context, stream};

use notadb_log::LogError;

/// The kinds of client errors that may carry a JetStream API error.
pub(crate) trait ApiErrorKind: Clone + Debug + Display + PartialEq {
    /// The JetStream API error this kind carries, if any.
    fn into_jetstream(self) -> Option<jetstream::Error>;
}

impl ApiErrorKind for context::CreateStreamErrorKind {
    fn into_jetstream(self) -> Option<jetstream::Error> {
        match self {
            context::CreateStreamErrorKind::JetStream(error) => Some(error),
            _ => None,
        }
    }
}

impl ApiErrorKind for stream::PurgeErrorKind {
    fn into_jetstream(self) -> Option<jetstream::Error> {
        match self {
            stream::PurgeErrorKind::JetStream(error) => Some(error),
            _ => None,
        }
    }
}

impl ApiErrorKind for stream::ConsumerErrorKind {
    fn into_jetstream(self) -> Option<jetstream::Error> {
        match self {
            stream::ConsumerErrorKind::JetStream(error) => Some(error),
            _ => None,
        }
    }
}

impl ApiErrorKind for consumer::StreamErrorKind {
    fn into_jetstream(self) -> Option<jetstream::Error> {
        None
    }
}

/// `error` of the request described by `what`, classified.
pub(crate) fn api_error<K: ApiErrorKind>(
    what: &str,
    error: &async_nats::error::Error<K>,
) -> LogError {
    match error.kind().into_jetstream() {
        Some(api) => jetstream_error(what, &api),
        None => LogError::Unavailable(format!("{what}: {error}")),
    }
}

/// A JetStream API error of the request described by `what`, classified by its status code.
pub(crate) fn jetstream_error(what: &str, error: &jetstream::Error) -> LogError {
    if error.code() >= 500 {
        LogError::Unavailable(format!("{what}: {error}"))
    } else {
        LogError::Rejected(format!("{what}: {error}"))
    }
}
