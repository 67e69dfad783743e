//! The receiving end of the Raft transport: frames from a stream are handed to the
//! node's store (or driver replica) as they arrive.

use std::sync::Arc;

use tessera_engine::proto::frame::StoreFrame;
use tessera_engine::store::BatchSink;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use prost::Message;

use super::MAX_FRAME_BYTES;
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{FrameChunk, TransportAck};

pub struct RaftTransportService {
    node_id: u64,
    sink: Arc<dyn BatchSink>,
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
        RaftTransportService { node_id, sink, stopping }
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
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            if bytes.len() + chunk.data.len() > MAX_FRAME_BYTES {
                return Err(Status::resource_exhausted(format!("a frame over {MAX_FRAME_BYTES} bytes")));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let frame = StoreFrame::decode(bytes.as_slice())
            .map_err(|e| Status::invalid_argument(format!("a chunked frame does not decode: {e}")))?;
        if frame.to_store == self.node_id {
            self.sink.deliver(frame);
        }
        Ok(Response::new(TransportAck {}))
    }
}
