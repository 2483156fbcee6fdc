//! One frame-protocol request: its message decoded, the gRPC service method it mirrors
//! called (the same code, so both APIs validate, route and answer alike), its answer kept
//! typed until the connection encodes it into its output buffer. A `MultiGet` of valid keys
//! served here is read from its bytes instead (`multi_get`), and it and a `Scan` answered
//! here keep their answers as stored bytes for the connection to encode.

use crate::grpc::{CacheService, DataService, ScanAnswer};
use crate::status::{invalid_argument, to_status, unimplemented};
use bytes::{Bytes, BytesMut};
use notadb_proto::frame::{self, Method, RequestHead};
use notadb_proto::v1::cache_server::Cache;
use notadb_proto::v1::data_server::Data;
use notadb_proto::v1::*;
use std::sync::Arc;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

/// The services a frame connection calls.
pub struct Services {
    pub data: Arc<DataService>,
    pub cache: Arc<CacheService>,
}

/// A method's response, encoded only when its frame is written.
pub enum Answer {
    Write(WriteResponse),
    Get(GetResponse),
    MultiGet(MultiGetResponse),
    /// Values read here, written into the frame straight from the read's buffer.
    MultiGetHere(notadb_node::MultiGetValues),
    Scan(ScanResponse),
    /// Rows read here, written into the frame straight from their stored bytes.
    ScanHere(notadb_node::RawScan),
    Aggregate(AggregateResponse),
    Query(QueryResponse),
    CacheGet(CacheGetResponse),
    CacheWrite(CacheWriteResponse),
}

/// Appends the response frame of request `id`.
pub fn encode(id: u32, answer: Result<Answer, Status>, out: &mut BytesMut) {
    match answer {
        Ok(Answer::Write(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::Get(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::MultiGet(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::MultiGetHere(values)) => {
            frame::encode_response_with(id, out, |out| {
                crate::encode::multi_get_response(&values, out);
                Ok::<_, std::convert::Infallible>(())
            })
            .unwrap_or_else(|never| match never {});
        }
        Ok(Answer::Scan(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::ScanHere(scan)) => {
            let written = frame::encode_response_with(id, out, |out| {
                crate::encode::scan_response(&scan, out)
            });
            if let Err(e) = written {
                let status = to_status(notadb_node::NodeError::Internal(format!(
                    "stored key does not decode: {e}"
                )));
                frame::encode_error(id, status.code() as u16, status.message(), out);
            }
        }
        Ok(Answer::Aggregate(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::Query(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::CacheGet(m)) => frame::encode_response(id, &m, out),
        Ok(Answer::CacheWrite(m)) => frame::encode_response(id, &m, out),
        Err(status) => frame::encode_error(id, status.code() as u16, status.message(), out),
    }
}

/// The request message of a frame, as the gRPC method receives it; a deadline travels as
/// gRPC's `grpc-timeout`, so the method reads it the same way.
fn request<M: prost::Message + Default>(
    head: RequestHead,
    body: Bytes,
    method: Method,
) -> Result<Request<M>, Status> {
    let message = M::decode(body).map_err(|e| {
        invalid_argument(format!(
            "{} request: expected a protobuf {} message: {e}",
            method.name(),
            std::any::type_name::<M>()
                .rsplit("::")
                .next()
                .unwrap_or("request")
        ))
    })?;
    Ok(Request::from_parts(
        metadata(&head),
        tonic::Extensions::default(),
        message,
    ))
}

/// The request's gRPC metadata: its deadline, as `grpc-timeout`.
fn metadata(head: &RequestHead) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if head.timeout_ms > 0 {
        let value = MetadataValue::try_from(format!("{}m", head.timeout_ms))
            .expect("digits and a unit are a valid header value");
        metadata.insert("grpc-timeout", value);
    }
    metadata
}

fn answer<M>(
    response: Result<Response<M>, Status>,
    wrap: fn(M) -> Answer,
) -> Result<Answer, Status> {
    response.map(|r| wrap(r.into_inner()))
}

/// Runs one request.
pub async fn call(
    services: Arc<Services>,
    head: RequestHead,
    body: Bytes,
) -> (u32, Result<Answer, Status>) {
    let Some(method) = Method::from_u16(head.method) else {
        return (
            head.id,
            Err(unimplemented(format!(
                "frame method {} is unknown to this server (known: 1-9 and 20-22)",
                head.method
            ))),
        );
    };
    let (data, cache) = (&services.data, &services.cache);
    let result = async {
        match method {
            Method::Put => answer(data.put(request(head, body, method)?).await, Answer::Write),
            Method::Delete => answer(
                data.delete(request(head, body, method)?).await,
                Answer::Write,
            ),
            Method::DeleteRange => answer(
                data.delete_range(request(head, body, method)?).await,
                Answer::Write,
            ),
            Method::Write => answer(
                data.write(request(head, body, method)?).await,
                Answer::Write,
            ),
            Method::Get => answer(data.get(request(head, body, method)?).await, Answer::Get),
            Method::MultiGet => match data.multi_get_direct(&metadata(&head), &body) {
                Some(direct) => direct.await.map(Answer::MultiGetHere),
                None => answer(
                    data.multi_get(request(head, body, method)?).await,
                    Answer::MultiGet,
                ),
            },
            Method::Scan => data
                .scan_answer(request(head, body, method)?)
                .await
                .map(|scan| match scan {
                    ScanAnswer::Here(raw) => Answer::ScanHere(raw),
                    ScanAnswer::Message(m) => Answer::Scan(m),
                }),
            Method::Aggregate => answer(
                data.aggregate(request(head, body, method)?).await,
                Answer::Aggregate,
            ),
            Method::Query => answer(
                data.query(request(head, body, method)?).await,
                Answer::Query,
            ),
            Method::CacheGet => answer(
                cache.cache_get(request(head, body, method)?).await,
                Answer::CacheGet,
            ),
            Method::CacheSet => answer(
                cache.cache_set(request(head, body, method)?).await,
                Answer::CacheWrite,
            ),
            Method::CacheDel => answer(
                cache.cache_del(request(head, body, method)?).await,
                Answer::CacheWrite,
            ),
        }
    };
    (head.id, result.await)
}
