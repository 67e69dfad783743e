//! The Raft transport over gRPC: the engine's [`Transport`] for real networks.
//!
//! One long-lived client stream per destination node carries its frames in order. The
//! engine's `send` never blocks: a frame goes into the destination's bounded queue and
//! is dropped if the queue is full or the node unreachable (Raft tolerates loss; the
//! peers' own timers retry). Each link reconnects with exponential backoff, asking the
//! [`AddressBook`] again each time, so a node that moved or restarted is found.
//!
//! A frame larger than [`CHUNK_BYTES`] (one carrying a region snapshot) goes on a
//! stream of its own, in chunks: HTTP/2 flow control paces it to the receiver, and the
//! main stream's heartbeats and appends are not held up behind it.

mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use tessera_engine::proto::frame::StoreFrame;
use tessera_engine::store::Transport;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use service::RaftTransportService;

use crate::proto::FrameChunk;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::security::Dialer;

/// Frames waiting for one destination; more are dropped.
const QUEUE_FRAMES: usize = 4096;

/// Largest gRPC message accepted or sent (a value may be up to 4 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Frames above this size are sent in chunks of this size.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;

/// Largest frame reassembled from chunks: past this the sender is not a Tessera node.
pub(crate) const MAX_FRAME_BYTES: usize = 1024 * 1024 * 1024;

/// Room for everything in a request besides one write's key and value: the region
/// context, field tags and lengths.
const REQUEST_ENVELOPE_BYTES: usize = 64 * 1024;

// A request carrying the largest key and value a store accepts must fit in one gRPC
// message, or a write the store would take could never reach it; and a chunk must fit
// in one message of the transport's own stream.
const _: () = assert!(
    tessera_engine::kv::MAX_KEY_BYTES + tessera_engine::kv::MAX_VALUE_BYTES + REQUEST_ENVELOPE_BYTES
        <= MAX_MESSAGE_BYTES
);
const _: () = assert!(CHUNK_BYTES + REQUEST_ENVELOPE_BYTES <= MAX_MESSAGE_BYTES);
const _: () = assert!(MAX_MESSAGE_BYTES <= MAX_FRAME_BYTES);

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where a node listens, by id.
pub(crate) trait AddressBook: Send + Sync + 'static {
    /// The node's address, asking whoever knows if needed (may block briefly).
    fn resolve(&self, node_id: u64) -> Option<String>;

    /// The address given for the node did not answer: ask again next time.
    fn forget(&self, _node_id: u64) {}
}

pub(crate) struct GrpcTransport {
    runtime: Handle,
    addresses: Arc<dyn AddressBook>,
    dialer: Dialer,
    links: Mutex<HashMap<u64, mpsc::Sender<StoreFrame>>>,
}

impl GrpcTransport {
    pub(crate) fn new(runtime: Handle, addresses: Arc<dyn AddressBook>, dialer: Dialer) -> GrpcTransport {
        GrpcTransport { runtime, addresses, dialer, links: Mutex::new(HashMap::new()) }
    }

    fn link(&self, node_id: u64) -> mpsc::Sender<StoreFrame> {
        let mut links = self.links.lock();
        if let Some(link) = links.get(&node_id).filter(|link| !link.is_closed()) {
            return link.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE_FRAMES);
        let link = Link { node_id, addresses: self.addresses.clone(), dialer: self.dialer.clone() };
        self.runtime.spawn(run_link(link, receiver));
        links.insert(node_id, sender.clone());
        sender
    }
}

impl Transport for GrpcTransport {
    fn send(&self, batch: StoreFrame) {
        // Full queue: the frame is lost, as on a congested network.
        let _ = self.link(batch.to_store).try_send(batch);
    }
}

/// A channel to a node, with keepalives so that a silent peer (a partition, a paused
/// process) breaks the stream and the link reconnects.
async fn connect(dialer: &Dialer, address: &str) -> Option<RaftTransportClient<tonic::transport::Channel>> {
    let endpoint = dialer
        .endpoint(address)
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Some(RaftTransportClient::new(dialer.connect(&endpoint).await.ok()?))
}

/// Sends one large frame in chunks on a stream of its own. A failure loses the frame,
/// as a lost message: Raft's snapshot timeout retries it.
fn send_large(mut client: RaftTransportClient<tonic::transport::Channel>, frame: StoreFrame) {
    let bytes = frame.encode_to_vec();
    let chunks: Vec<FrameChunk> =
        bytes.chunks(CHUNK_BYTES).map(|data| FrameChunk { data: data.to_vec() }).collect();
    tokio::spawn(async move {
        let _ = client.large(tokio_stream::iter(chunks)).await;
    });
}

/// Where one link goes and how it gets there.
struct Link {
    node_id: u64,
    addresses: Arc<dyn AddressBook>,
    dialer: Dialer,
}

/// Keeps one stream to a node open while frames come, reconnecting with backoff.
async fn run_link(link: Link, mut frames: mpsc::Receiver<StoreFrame>) {
    let Link { node_id, addresses, dialer } = link;
    let mut backoff = BACKOFF_MIN;
    // Logged on a change only: a node that is down would otherwise log every retry.
    let mut was_reachable = None;
    loop {
        let book = addresses.clone();
        let address = tokio::task::spawn_blocking(move || book.resolve(node_id)).await.ok().flatten();
        let connected = match &address {
            Some(address) => connect(&dialer, address).await,
            None => None,
        };
        let reachable = connected.is_some();
        if was_reachable != Some(reachable) {
            let address = address.as_deref().unwrap_or("(unknown address)");
            if reachable {
                tracing::info!(node_id, address, "raft link connected");
            } else {
                tracing::warn!(node_id, address, "raft link cannot connect; retrying with backoff");
            }
            was_reachable = Some(reachable);
        }
        let Some(client) = connected else {
            addresses.forget(node_id);
            // Unreachable: drop what waits (it is stale by the time we connect).
            while frames.try_recv().is_ok() {}
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if frames.is_closed() {
                return;
            }
            continue;
        };
        backoff = BACKOFF_MIN;
        let mut client =
            client.max_encoding_message_size(MAX_MESSAGE_BYTES).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let client_for_large = client.clone();
        let (sender, receiver) = mpsc::channel(QUEUE_FRAMES);
        let stream = tokio::spawn(async move { client.stream(ReceiverStream::new(receiver)).await });
        // Forward until the stream breaks or the transport is dropped.
        loop {
            let Some(frame) = frames.recv().await else { return };
            if frame.encoded_len() > CHUNK_BYTES {
                send_large(client_for_large.clone(), frame);
                continue;
            }
            if sender.send(frame).await.is_err() {
                break;
            }
        }
        let _ = stream.await;
    }
}
