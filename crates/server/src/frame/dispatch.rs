//! One frame-protocol request: its message decoded, the gRPC service method it mirrors
//! called (the same code, so both APIs validate, route and answer alike), its answer kept
//! typed until the connection encodes it into its output buffer.

use crate::grpc::{CacheService, DataService};
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
    Scan(ScanResponse),
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
        Ok(Answer::Scan(m)) => frame::encode_response(id, &m, out),
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
        Status::invalid_argument(format!(
            "{} request: expected a protobuf {} message: {e}",
            method.name(),
            std::any::type_name::<M>()
                .rsplit("::")
                .next()
                .unwrap_or("request")
        ))
    })?;
    let mut metadata = MetadataMap::new();
    if head.timeout_ms > 0 {
        let value = MetadataValue::try_from(format!("{}m", head.timeout_ms))
            .expect("digits and a unit are a valid header value");
        metadata.insert("grpc-timeout", value);
    }
    Ok(Request::from_parts(
        metadata,
        tonic::Extensions::default(),
        message,
    ))
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
            Err(Status::unimplemented(format!(
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
            Method::MultiGet => answer(
                data.multi_get(request(head, body, method)?).await,
                Answer::MultiGet,
            ),
            Method::Scan => answer(data.scan(request(head, body, method)?).await, Answer::Scan),
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
