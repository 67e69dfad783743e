//! The receiving end of the Raft transport: frames from a stream are handed to the
//! node's store (or driver replica) as they arrive.

use std::sync::Arc;

use tessera_engine::storage::proto::StoreBatch;
use tessera_engine::store::BatchSink;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::TransportAck;
use crate::proto::raft_transport_server::RaftTransport;

pub struct RaftTransportService {
    node_id: u64,
    sink: Arc<dyn BatchSink>,
}

impl RaftTransportService {
    pub fn new(node_id: u64, sink: Arc<dyn BatchSink>) -> RaftTransportService {
        RaftTransportService { node_id, sink }
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn stream(
        &self,
        request: Request<Streaming<StoreBatch>>,
    ) -> Result<Response<TransportAck>, Status> {
        let mut frames = request.into_inner();
        while let Some(frame) = frames.message().await? {
            // A frame for another node (a stale address) is not ours to deliver.
            if frame.to_store == self.node_id {
                self.sink.deliver(frame);
            }
        }
        Ok(Response::new(TransportAck {}))
    }
}
