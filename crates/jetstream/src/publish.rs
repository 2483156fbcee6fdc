//! Appending: publish with a message id, await the ack, retry the same id on trouble.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use notadb_types::Seq;

use super::errors::jetstream_error;
use super::options::MAX_PUBLISH_BACKOFF;
use notadb_log::LogError;

/// Pause before the second publish attempt of an append; it doubles per attempt up to
/// [`MAX_PUBLISH_BACKOFF`].
const FIRST_PUBLISH_BACKOFF: Duration = Duration::from_millis(50);

/// Unique message ids: a random prefix per handle and a counter.
#[derive(Debug)]
pub(crate) struct MessageIds {
    prefix: String,
    next: AtomicU64,
}

impl MessageIds {
    /// Ids starting with `prefix`, which must be unique among every writer of the log.
    pub(crate) fn new(prefix: String) -> MessageIds {
        MessageIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// A message id never returned before by this generator.
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

/// One entry to publish: where, under which id, and how often to try.
pub(crate) struct Publication<'a> {
    /// The partition's subject.
    pub(crate) subject: &'a str,
    /// The partition's stream; the server refuses the publish if the subject belongs to another.
    pub(crate) stream: &'a str,
    /// The message id every attempt carries.
    pub(crate) id: String,
    /// The entry.
    pub(crate) payload: Bytes,
    /// Attempts before giving up.
    pub(crate) attempts: u32,
}

/// Why one publish attempt failed.
enum Failure {
    /// Worth another attempt with the same message id.
    Retry(String),
    /// Will fail again.
    Fatal(LogError),
}

/// Publishes `publication`, retrying with backoff; returns the seq from the ack (the original
/// seq when a retry was recognised as a duplicate).
pub(crate) async fn publish(
    context: &jetstream::Context,
    publication: Publication<'_>,
) -> Result<Seq, LogError> {
    let attempts = publication.attempts.max(1);
    let mut backoff = FIRST_PUBLISH_BACKOFF;
    let mut last_failure = String::new();
    for attempt in 1..=attempts {
        match publish_once(context, &publication).await {
            Ok(seq) => return Ok(seq),
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Retry(reason)) => {
                tracing::debug!(
                    subject = publication.subject,
                    id = %publication.id,
                    attempt,
                    %reason,
                    "publish attempt failed"
                );
                last_failure = reason;
            }
        }
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_PUBLISH_BACKOFF);
        }
    }
    Err(LogError::Unavailable(format!(
        "append to {} failed after {attempts} attempts (message id {}), the entry may still \
         have been written: {last_failure}",
        publication.subject, publication.id
    )))
}

async fn publish_once(
    context: &jetstream::Context,
    publication: &Publication<'_>,
) -> Result<Seq, Failure> {
    let message = PublishMessage::build()
        .payload(publication.payload.clone())
        .message_id(&publication.id)
        .expected_stream(publication.stream);
    let ack = context
        .send_publish(publication.subject.to_string(), message)
        .await
        .map_err(|e| classify(e, publication))?
        .await
        .map_err(|e| classify(e, publication))?;
    if ack.stream != publication.stream {
        return Err(Failure::Fatal(LogError::Rejected(format!(
            "append to {}: expected an ack from stream {}, found one from {}",
            publication.subject, publication.stream, ack.stream
        ))));
    }
    Ok(Seq(ack.sequence))
}

fn classify(error: jetstream::context::PublishError, publication: &Publication<'_>) -> Failure {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Fatal(LogError::Rejected(format!(
            "append to {}: {error}",
            publication.subject
        ))),
        PublishErrorKind::Other => match api_error_of(&error) {
            Some(api) => {
                match jetstream_error(&format!("append to {}", publication.subject), api) {
                    LogError::Unavailable(reason) => Failure::Retry(reason),
                    fatal => Failure::Fatal(fatal),
                }
            }
            None => Failure::Retry(error.to_string()),
        },
        // Timeouts, a lost connection, no stream listening yet (a restarting server).
        _ => Failure::Retry(error.to_string()),
    }
}

/// The JetStream API error a publish error carries, if any.
fn api_error_of(error: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_carry_the_prefix() {
        let ids = MessageIds::new("abc".into());
        let first = ids.next();
        let second = ids.next();
        assert_eq!(first, "abc-1");
        assert_eq!(second, "abc-2");
    }
}
