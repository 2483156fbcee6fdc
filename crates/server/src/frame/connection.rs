//! One frame-protocol connection, served by one task: it reads whatever requests have
//! arrived, runs each at once on this thread (a read served from memory finishes in its
//! first poll), keeps the ones that must wait (tokens, the log, a loader) in flight, and
//! writes every answer that is ready with one write.

use super::dispatch::{self, Answer, Services};
use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use notadb_proto::frame::{self, FrameError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::{Code, Status};

/// Bytes a connection reads at once (more when a frame is larger).
const READ_CHUNK: usize = 64 << 10;
/// How long a new connection may take to send its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on one connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest frame a client may send.
    pub max_frame_bytes: usize,
    /// Requests of one connection in flight at once; beyond it the connection stops reading.
    pub max_in_flight: usize,
}

type InFlight = Pin<Box<dyn Future<Output = (u32, Result<Answer, Status>)> + Send>>;

/// How long a refused connection's unread input is drained before it closes.
const LINGER: Duration = Duration::from_secs(1);

/// Writes a last answer and closes: the write side first, then what the client still sends
/// is read and dropped (briefly), so closing with unread input does not reset the
/// connection before the client has read the answer.
async fn refuse(mut stream: TcpStream, last: &[u8]) -> std::io::Result<()> {
    stream.write_all(last).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let drain = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(())
}

/// Serves `stream` until the client closes it, it breaks the protocol, or `stop` is set (then
/// the requests in flight finish and are answered first).
pub async fn serve(
    mut stream: TcpStream,
    services: Arc<Services>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut preamble = [0u8; frame::PREAMBLE.len()];
    match tokio::time::timeout(PREAMBLE_TIMEOUT, stream.read_exact(&mut preamble)).await {
        Ok(read) => {
            read?;
        }
        Err(_) => return Ok(()),
    }
    if &preamble != frame::PREAMBLE {
        let mut out = BytesMut::new();
        frame::encode_error(
            0,
            Code::InvalidArgument as u16,
            "expected the notadb frame protocol preamble (this port does not speak gRPC or HTTP)",
            &mut out,
        );
        return refuse(stream, &out).await;
    }
    stream.write_all(frame::PREAMBLE).await?;

    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut stopping = false;
    loop {
        // Every whole request that has arrived, each run at once.
        while in_flight.len() < limits.max_in_flight && !stopping {
            match frame::decode_request(&mut input, limits.max_frame_bytes) {
                Ok(Some((head, body))) => {
                    let mut call: InFlight = Box::pin(dispatch::call(services.clone(), head, body));
                    match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                        Poll::Ready((id, answer)) => dispatch::encode(id, answer, &mut output),
                        Poll::Pending => in_flight.push(call),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLong { .. } => Code::ResourceExhausted,
                        FrameError::TooShort { .. } => Code::InvalidArgument,
                    };
                    frame::encode_error(0, code as u16, &e.to_string(), &mut output);
                    // Answer what is in flight, then close: the stream cannot be read on.
                    while let Some((id, answer)) = in_flight.next().await {
                        dispatch::encode(id, answer, &mut output);
                    }
                    return refuse(stream, &output).await;
                }
            }
        }
        // Whatever else finished meanwhile.
        std::future::poll_fn(|cx| {
            while let Poll::Ready(Some((id, answer))) = in_flight.poll_next_unpin(cx) {
                dispatch::encode(id, answer, &mut output);
            }
            Poll::Ready(())
        })
        .await;
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if stopping && in_flight.is_empty() {
            // Requests read but never started (the connection was at its in-flight limit
            // when it began stopping) are answered with an error, not dropped.
            while let Ok(Some((head, _))) =
                frame::decode_request(&mut input, limits.max_frame_bytes)
            {
                frame::encode_error(
                    head.id,
                    Code::Unavailable as u16,
                    "the server is stopping: this request did not run; send it again",
                    &mut output,
                );
            }
            if !output.is_empty() {
                stream.write_all(&output).await?;
            }
            return Ok(());
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let reading = in_flight.len() < limits.max_in_flight && !stopping;
        tokio::select! {
            biased;
            _ = super::until_stopped(&mut stop), if !stopping => stopping = true,
            Some((id, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                dispatch::encode(id, answer, &mut output);
            }
            read = stream.read_buf(&mut input), if reading => {
                if read? == 0 {
                    // The client closed its side: answer what is in flight, then close.
                    stopping = true;
                }
            }
        }
    }
}
