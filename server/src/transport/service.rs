//! The receiving end of the Raft transport: frames from a stream are handed to the
//! node's store (or driver replica) as they arrive.
//!
//! A large frame (a snapshot) is reassembled in memory from its chunks, so what those
//! frames may hold is bounded: each one by [`MAX_FRAME_BYTES`], all of them at once by
//! [`LARGE_FRAMES_TOTAL_BYTES`] (a chunk past the budget fails its stream with
//! `RESOURCE_EXHAUSTED`, and Raft sends the snapshot again later), and a stream whose
//! next chunk does not come within [`LARGE_FRAME_IDLE_TIMEOUT`] is dropped with what it
//! held. The budget counts what is allocated, not only what arrived: the buffer's
//! capacity as it grows, and the decoded copy of the frame while both exist.

use std::sync::Arc;
use std::time::Duration;

use tessera_engine::proto::frame::StoreFrame;
use tessera_engine::store::BatchSink;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use prost::Message;

use super::MAX_FRAME_BYTES;
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{FrameChunk, TransportAck};

/// What every large frame being reassembled may hold together.
pub(crate) const LARGE_FRAMES_TOTAL_BYTES: usize = 2 * MAX_FRAME_BYTES;

/// How long a large frame's stream may go without a chunk.
pub(crate) const LARGE_FRAME_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RaftTransportService {
    node_id: u64,
    sink: Arc<dyn BatchSink>,
    /// Bytes of large frames being reassembled, one permit a byte.
    large_frame_budget: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the node stops: streams from other nodes never end on their own,
    /// and a graceful shutdown waits for every stream in flight.
    stopping: CancellationToken,
}

impl RaftTransportService {
    pub(crate) fn new(
        node_id: u64,
        sink: Arc<dyn BatchSink>,
        stopping: CancellationToken,
    ) -> RaftTransportService {
        let large_frame_budget = Arc::new(tokio::sync::Semaphore::new(LARGE_FRAMES_TOTAL_BYTES));
        RaftTransportService { node_id, sink, large_frame_budget, stopping }
    }
}

impl RaftTransportService {
    /// `count` bytes of the large frames' budget, or a refusal when they are not free.
    fn charge(&self, count: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        u32::try_from(count)
            .ok()
            .and_then(|count| self.large_frame_budget.clone().try_acquire_many_owned(count).ok())
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "large frames being received hold {LARGE_FRAMES_TOTAL_BYTES} bytes already; send again later"
                ))
            })
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn stream(
        &self,
        request: Request<Streaming<StoreFrame>>,
    ) -> Result<Response<TransportAck>, Status> {
        let mut frames = request.into_inner();
        loop {
            let frame = tokio::select! {
                biased;
                () = self.stopping.cancelled() => return Err(Status::unavailable("this node is stopping")),
                frame = frames.message() => frame?,
            };
            let Some(frame) = frame else { break };
            // A frame for another node (a stale address) is not ours to deliver.
            if frame.to_store == self.node_id {
                self.sink.deliver(frame);
            }
        }
        Ok(Response::new(TransportAck {}))
    }

    async fn large(&self, request: Request<Streaming<FrameChunk>>) -> Result<Response<TransportAck>, Status> {
        let mut chunks = request.into_inner();
        let mut bytes: Vec<u8> = Vec::new();
        // Returned to the budget when the frame is delivered or the stream fails.
        let mut held = Vec::new();
        loop {
            let chunk = tokio::select! {
                biased;
                () = self.stopping.cancelled() => return Err(Status::unavailable("this node is stopping")),
                chunk = tokio::time::timeout(LARGE_FRAME_IDLE_TIMEOUT, chunks.message()) => chunk,
            };
            let chunk = chunk.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no chunk of a large frame for {LARGE_FRAME_IDLE_TIMEOUT:?}"
                ))
            })??;
            let Some(chunk) = chunk else { break };
            if bytes.len() + chunk.data.len() > MAX_FRAME_BYTES {
                return Err(Status::resource_exhausted(format!("a frame over {MAX_FRAME_BYTES} bytes")));
            }
            let needed = bytes.len() + chunk.data.len();
            if needed > bytes.capacity() {
                // Doubling, as a Vec grows, but charged before it is allocated.
                let capacity = needed.max(bytes.capacity() * 2).min(MAX_FRAME_BYTES);
                held.push(self.charge(capacity - bytes.capacity())?);
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(&chunk.data);
        }
        // The decoded frame copies the bytes: charged while both are held.
        held.push(self.charge(bytes.len())?);
        let frame = StoreFrame::decode(bytes.as_slice())
            .map_err(|e| Status::invalid_argument(format!("a chunked frame does not decode: {e}")))?;
        drop(bytes);
        if frame.to_store == self.node_id {
            self.sink.deliver(frame);
        }
        Ok(Response::new(TransportAck {}))
    }
}
