//! One JetStream stream per partition: names, configuration, creation and state.

use std::collections::HashMap;

use async_nats::jetstream::{self, stream};
use notadb_types::{PartitionId, Seq};

use super::errors::{api_error, jetstream_error};
use super::{JetStreamOptions, JetStreamStorage};
use notadb_log::{LogBounds, LogError};

/// Stream metadata key that records the partition count of the log a stream belongs to.
pub(crate) const PARTITIONS_METADATA: &str = "notadb.partitions";

/// Stream metadata key that records which partition a stream holds.
pub(crate) const PARTITION_METADATA: &str = "notadb.partition";

/// Name of the stream that holds `partition` of the log `name`.
pub(crate) fn stream_name(name: &str, partition: u16) -> String {
    format!("{name}_p{partition}")
}

/// The one subject of the stream that holds `partition` of the log `name`.
pub(crate) fn subject(name: &str, partition: u16) -> String {
    format!("{name}.p.{partition}")
}

/// The configuration a partition's stream is created with.
pub(crate) fn config(
    options: &JetStreamOptions,
    partitions: u16,
    partition: u16,
) -> stream::Config {
    stream::Config {
        name: stream_name(&options.name, partition),
        description: Some(format!(
            "notadb log {:?}, partition {partition} of {partitions}",
            options.name
        )),
        subjects: vec![subject(&options.name, partition)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: options.max_age.unwrap_or_default(),
        max_bytes: options.max_bytes.unwrap_or(-1),
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        storage: match options.storage {
            JetStreamStorage::File => stream::StorageType::File,
            JetStreamStorage::Memory => stream::StorageType::Memory,
        },
        num_replicas: options.replicas,
        duplicate_window: options.duplicate_window,
        deny_delete: true,
        metadata: HashMap::from([
            (PARTITIONS_METADATA.to_string(), partitions.to_string()),
            (PARTITION_METADATA.to_string(), partition.to_string()),
        ]),
        ..stream::Config::default()
    }
}

/// Opens the stream of `partition`, creating it with `options` if it does not exist.
///
/// Fails with [`LogError::PartitionCount`] if the stream belongs to a log with another
/// partition count, and [`LogError::Rejected`] if it does not look like one of notadb's.
pub(crate) async fn open(
    context: &jetstream::Context,
    options: &JetStreamOptions,
    partitions: u16,
    partition: u16,
) -> Result<stream::Stream, LogError> {
    let config = config(options, partitions, partition);
    let name = config.name.clone();
    let stream = match get(context, &name).await? {
        Some(stream) => stream,
        None => match context.create_stream(config.clone()).await {
            Ok(stream) => {
                tracing::info!(stream = %name, "created a partition stream");
                stream
            }
            // Another process created it first.
            Err(e) if is_name_in_use(&e) => get(context, &name).await?.ok_or_else(|| {
                LogError::Unavailable(format!("stream {name} was created and deleted meanwhile"))
            })?,
            Err(e) => return Err(api_error(&format!("create stream {name}"), &e)),
        },
    };
    check(stream.cached_info(), &config, partitions)?;
    Ok(stream)
}

/// The stream `name`, or `None` if it does not exist.
async fn get(context: &jetstream::Context, name: &str) -> Result<Option<stream::Stream>, LogError> {
    match context.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            jetstream::context::GetStreamErrorKind::JetStream(error) => {
                Err(jetstream_error(&format!("get stream {name}"), &error))
            }
            _ => Err(LogError::Unavailable(format!("get stream {name}: {e}"))),
        },
    }
}

fn is_name_in_use(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// Checks that an existing stream is the one `expected` describes: same subject and partition
/// count. Warns about other differences (the stream keeps its own configuration).
fn check(info: &stream::Info, expected: &stream::Config, partitions: u16) -> Result<(), LogError> {
    let found = &info.config;
    let name = &expected.name;
    let found_partitions = found.metadata.get(PARTITIONS_METADATA).ok_or_else(|| {
        LogError::Rejected(format!(
            "stream {name} exists but has no {PARTITIONS_METADATA:?} metadata: expected a stream \
             created by notadb (nats-server 2.10 or newer)"
        ))
    })?;
    let found_partitions: u16 = found_partitions.parse().map_err(|_| {
        LogError::Rejected(format!(
            "stream {name}: expected a partition count in its {PARTITIONS_METADATA:?} metadata, \
             found {found_partitions:?}"
        ))
    })?;
    if found_partitions != partitions {
        return Err(LogError::PartitionCount {
            expected: partitions,
            found: found_partitions,
        });
    }
    if found.subjects != expected.subjects {
        return Err(LogError::Rejected(format!(
            "stream {name}: expected subjects {:?}, found {:?}",
            expected.subjects, found.subjects
        )));
    }
    let differs = found.num_replicas != expected.num_replicas
        || found.max_age != expected.max_age
        || found.max_bytes != expected.max_bytes
        || found.storage != expected.storage
        || found.duplicate_window != expected.duplicate_window;
    if differs {
        tracing::warn!(
            stream = %name,
            "the existing stream's configuration differs from the log options; it keeps its own \
             (replicas {}, max_age {:?}, max_bytes {}, storage {:?}, duplicate_window {:?})",
            found.num_replicas,
            found.max_age,
            found.max_bytes,
            found.storage,
            found.duplicate_window,
        );
    }
    Ok(())
}

/// The seqs a stream currently holds.
pub(crate) async fn bounds(stream: &stream::Stream) -> Result<LogBounds, LogError> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| LogError::Unavailable(format!("stream info of {}: {e}", stream_of(stream))))?;
    Ok(bounds_of(&info.state))
}

/// A stream's bounds from its state. An empty stream's `first_seq` is 0 when it was never
/// written and `last + 1` after a purge: both read as `first = last + 1`.
pub(crate) fn bounds_of(state: &stream::State) -> LogBounds {
    let last = Seq(state.last_sequence);
    if state.messages == 0 {
        LogBounds {
            first: last.next(),
            last,
        }
    } else {
        LogBounds {
            first: Seq(state.first_sequence),
            last,
        }
    }
}

/// The name of a stream handle, for messages.
pub(crate) fn stream_of(stream: &stream::Stream) -> &str {
    &stream.cached_info().config.name
}

/// Drops every entry with seq < `before` (clamped to `last + 1`, so that later appends keep
/// their numbering).
pub(crate) async fn truncate_before(
    stream: &stream::Stream,
    partition: PartitionId,
    before: Seq,
) -> Result<(), LogError> {
    let bounds = bounds(stream).await?;
    let before = before.min(bounds.last.next());
    if before <= bounds.first {
        return Ok(());
    }
    stream.purge().sequence(before.0).await.map_err(|e| {
        api_error(
            &format!("purge partition {} before {before}", partition.0),
            &e,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(messages: u64, first: u64, last: u64) -> stream::State {
        serde_json_state(messages, first, last)
    }

    /// `stream::State` has a private field: build it the way the client does, from JSON.
    fn serde_json_state(messages: u64, first: u64, last: u64) -> stream::State {
        let json = format!(
            r#"{{"messages":{messages},"bytes":0,"first_seq":{first},
                "first_ts":"0001-01-01T00:00:00Z","last_seq":{last},
                "last_ts":"0001-01-01T00:00:00Z","consumer_count":0}}"#
        );
        serde_json::from_str(&json).expect("a valid stream state")
    }

    #[test]
    fn empty_streams_read_as_first_after_last() {
        let cases = [
            ((0, 0, 0), (1, 0)),
            ((0, 1, 0), (1, 0)),
            ((0, 102, 101), (102, 101)),
            ((3, 1, 3), (1, 3)),
            ((50, 51, 100), (51, 100)),
        ];
        for ((messages, first, last), (expected_first, expected_last)) in cases {
            assert_eq!(
                bounds_of(&state(messages, first, last)),
                LogBounds {
                    first: Seq(expected_first),
                    last: Seq(expected_last)
                },
                "state with {messages} messages, first {first}, last {last}"
            );
        }
    }

    #[test]
    fn names_and_metadata() {
        let options = JetStreamOptions {
            name: "orders".into(),
            ..JetStreamOptions::default()
        };
        let config = config(&options, 64, 7);
        assert_eq!(config.name, "orders_p7");
        assert_eq!(config.subjects, ["orders.p.7"]);
        assert_eq!(config.metadata[PARTITIONS_METADATA], "64");
        assert_eq!(config.max_bytes, -1);
        assert!(config.max_age.is_zero());
    }
}
