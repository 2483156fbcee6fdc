//! The client side of the frame protocol (`notadb_proto::frame`): one TCP connection per
//! node, shared by every clone of a client, with any number of calls in flight matched by
//! request id.
//!
//! A call encodes its frame into the connection's output buffer and, when nothing is
//! waiting to be written, writes it at once from the calling task; a writer task only takes
//! over when the socket is full. One reader task reads the answers and completes the calls.

use bytes::{Buf, Bytes, BytesMut};
use notadb_proto::frame::{self, Method, RequestHead};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;
use tonic::{Code, Status};

/// How long connecting (and the preamble exchange) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, calls go over gRPC this long before the next try.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// Bytes the reader reads at once.
const READ_CHUNK: usize = 64 << 10;

type Reply = Result<Bytes, Status>;

/// The frame protocol endpoint of one node; connects on first use and again after the
/// connection breaks.
pub(crate) struct FrameClient {
    addr: String,
    max_message_bytes: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<Arc<Connection>>,
    /// When connecting last failed.
    failed_at: Option<Instant>,
}

/// Why a call did not go over the frame protocol.
pub(crate) enum FrameError {
    /// No connection could be made: the request was not sent (another transport may take it).
    NotConnected,
    /// The call was sent, and failed or was answered with an error.
    Call(Status),
}

impl FrameClient {
    pub(crate) fn new(addr: String, max_message_bytes: usize) -> FrameClient {
        FrameClient {
            addr,
            max_message_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// The node's frame address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    async fn connection(&self) -> Option<Arc<Connection>> {
        {
            let state = self.state.lock().expect("frame client lock");
            if let Some(c) = state.connection.as_ref().filter(|c| !c.closed()) {
                return Some(c.clone());
            }
            if state
                .failed_at
                .is_some_and(|at| at.elapsed() < RECONNECT_AFTER)
            {
                return None;
            }
        }
        let connected = Connection::open(&self.addr, self.max_message_bytes).await;
        let mut state = self.state.lock().expect("frame client lock");
        match connected {
            Ok(c) => {
                let c = Arc::new(c);
                state.connection = Some(c.clone());
                state.failed_at = None;
                Some(c)
            }
            Err(e) => {
                tracing::debug!(addr = %self.addr, error = %e, "frame protocol connect failed");
                state.failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// Sends `request` as `method` and decodes the answer.
    pub(crate) async fn call<Req, Resp>(
        &self,
        method: Method,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, FrameError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let connection = self.connection().await.ok_or(FrameError::NotConnected)?;
        let body = connection
            .call(method, request, timeout)
            .await
            .map_err(FrameError::Call)?;
        Resp::decode(body).map_err(|e| {
            FrameError::Call(Status::internal(format!(
                "{} response from {}: {e}",
                method.name(),
                self.addr
            )))
        })
    }
}

/// What the calling tasks and the reader and writer tasks share.
struct Shared {
    socket: OwnedWriteHalf,
    /// Frames not yet written; written by a caller when it was empty, else by the writer task.
    output: Mutex<BytesMut>,
    wake_writer: Notify,
    calls: Mutex<HashMap<u32, oneshot::Sender<Reply>>>,
    closed: AtomicBool,
    /// Why the connection closed, for the calls that find it closed.
    reason: Mutex<String>,
}

impl Shared {
    /// Marks the connection closed and fails every call waiting on it.
    fn close(&self, reason: String) {
        *self.reason.lock().expect("reason lock") = reason.clone();
        self.closed.store(true, Ordering::Release);
        let waiting: Vec<_> = self
            .calls
            .lock()
            .expect("calls lock")
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        for tx in waiting {
            let _ = tx.send(Err(Status::unavailable(reason.clone())));
        }
    }
}

/// One open connection and its two tasks (stopped when it is dropped).
struct Connection {
    shared: Arc<Shared>,
    next_id: AtomicU32,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    async fn open(addr: &str, max_message_bytes: usize) -> std::io::Result<Connection> {
        let handshake = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(frame::PREAMBLE).await?;
            let mut answer = [0u8; frame::PREAMBLE.len()];
            stream.read_exact(&mut answer).await?;
            if &answer != frame::PREAMBLE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{addr} did not answer with the notadb frame protocol preamble"),
                ));
            }
            Ok(stream)
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{addr}: no frame protocol answer within {CONNECT_TIMEOUT:?}"),
                )
            })??;
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared {
            socket: write_half,
            output: Mutex::new(BytesMut::with_capacity(READ_CHUNK)),
            wake_writer: Notify::new(),
            calls: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        });
        let reader = tokio::spawn(read_loop(
            read_half,
            shared.clone(),
            max_message_bytes,
            addr.to_string(),
        ))
        .abort_handle();
        let writer = tokio::spawn(write_loop(shared.clone())).abort_handle();
        Ok(Connection {
            shared,
            next_id: AtomicU32::new(1),
            reader,
            writer,
        })
    }

    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    async fn call(
        &self,
        method: Method,
        request: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Status> {
        // Id 0 is the server's answer to a frame it could not read.
        let id = match self.next_id.fetch_add(1, Ordering::Relaxed) {
            0 => self.next_id.fetch_add(1, Ordering::Relaxed),
            id => id,
        };
        let (tx, rx) = oneshot::channel();
        self.shared.calls.lock().expect("calls lock").insert(id, tx);
        if self.closed() {
            self.shared.calls.lock().expect("calls lock").remove(&id);
            let reason = self.shared.reason.lock().expect("reason lock").clone();
            return Err(Status::unavailable(reason));
        }
        let head = RequestHead {
            id,
            method: method as u16,
            timeout_ms: timeout.map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32),
        };
        self.send(head, request);
        let reply = match timeout {
            None => rx.await,
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(reply) => reply,
                Err(_) => {
                    self.shared.calls.lock().expect("calls lock").remove(&id);
                    return Err(Status::deadline_exceeded(format!(
                        "{} was not answered within {t:?}",
                        method.name()
                    )));
                }
            },
        };
        reply.unwrap_or_else(|_| Err(Status::unavailable("the frame connection closed")))
    }

    /// Queues a request frame and writes it now when nothing else is waiting to be written.
    fn send(&self, head: RequestHead, request: &impl prost::Message) {
        let mut output = self.shared.output.lock().expect("output lock");
        let idle = output.is_empty();
        frame::encode_request(head, request, &mut output);
        if !idle {
            // The writer task is already on it.
            return;
        }
        while !output.is_empty() {
            match self.shared.socket.try_write(&output) {
                Ok(n) => output.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    output.clear();
                    drop(output);
                    self.shared
                        .close(format!("writing to the frame connection: {e}"));
                    return;
                }
            }
        }
        if output.is_empty() {
            output.clear();
        } else {
            self.shared.wake_writer.notify_one();
        }
    }
}

/// Writes what callers could not write at once.
async fn write_loop(shared: Arc<Shared>) {
    loop {
        shared.wake_writer.notified().await;
        loop {
            if let Err(e) = shared.socket.writable().await {
                shared.close(format!("writing to the frame connection: {e}"));
                return;
            }
            let mut output = shared.output.lock().expect("output lock");
            if output.is_empty() {
                break;
            }
            match shared.socket.try_write(&output) {
                Ok(n) => output.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    output.clear();
                    drop(output);
                    shared.close(format!("writing to the frame connection: {e}"));
                    return;
                }
            }
            if output.is_empty() {
                output.clear();
                break;
            }
        }
    }
}

/// Reads answers and completes their calls until the connection ends.
async fn read_loop(
    mut socket: OwnedReadHalf,
    shared: Arc<Shared>,
    max_message_bytes: usize,
    addr: String,
) {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let reason = loop {
        match socket.read_buf(&mut input).await {
            Ok(0) => break format!("{addr} closed the frame connection"),
            Ok(_) => {}
            Err(e) => break format!("reading from {addr}: {e}"),
        }
        let mut broken = None;
        loop {
            match frame::decode_response(&mut input, max_message_bytes) {
                Ok(Some((head, body))) => {
                    let reply = if head.code == 0 {
                        Ok(body)
                    } else {
                        let message = String::from_utf8_lossy(&body).into_owned();
                        if head.id == 0 {
                            broken = Some(format!("{addr} refused a frame: {message}"));
                            break;
                        }
                        Err(Status::new(Code::from(i32::from(head.code)), message))
                    };
                    let waiting = shared.calls.lock().expect("calls lock").remove(&head.id);
                    if let Some(tx) = waiting {
                        let _ = tx.send(reply);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(format!("reading from {addr}: {e}"));
                    break;
                }
            }
        }
        if let Some(reason) = broken {
            break reason;
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
    };
    shared.close(reason);
}
