//! The key-value API of a store: each request goes to the store's replica of the region
//! named in its context, which checks epoch and range and answers once the write is
//! applied or the read is linearizable. The raft workers answer through callbacks that
//! complete a oneshot channel: a request waiting costs a parked future, not a thread.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tessera_engine::proto::{frame::KeyValue, metadata::RegionEpoch};
use tessera_engine::store::{ReadRequest, ReadResponse, Responder, Store, StoreError};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::failure::kv_status;
use crate::proto::kv_server::Kv;
use crate::proto::{
    BatchGetRequest, BatchGetResponse, GetRequest, GetResponse, RegionContext, ScanRequest, ScanResponse,
    WriteRequest, WriteResponse,
};
use crate::transport::AddressBook;

pub(crate) struct KvService {
    /// Weak: the node closes the store when it stops, whatever connections linger.
    store: Weak<Store>,
    addresses: Arc<dyn AddressBook>,
    timeout: Duration,
}

fn context(context: Option<RegionContext>) -> Result<(u64, RegionEpoch), Status> {
    let context = context.ok_or_else(|| Status::invalid_argument("the request names no region"))?;
    let epoch = context.epoch.ok_or_else(|| Status::invalid_argument("the request names no region epoch"))?;
    Ok((context.region_id, epoch))
}

/// A responder that completes a oneshot channel.
fn responder<T: Send + 'static>() -> (Responder<T>, oneshot::Receiver<Result<T, StoreError>>) {
    let (sender, receiver) = oneshot::channel();
    // The request may have been abandoned (the client went away): nobody to tell.
    (Responder::new(move |result| drop(sender.send(result))), receiver)
}

impl KvService {
    pub(crate) fn new(store: &Arc<Store>, addresses: Arc<dyn AddressBook>, timeout: Duration) -> KvService {
        KvService { store: Arc::downgrade(store), addresses, timeout }
    }

    fn store(&self) -> Result<Arc<Store>, Status> {
        self.store.upgrade().ok_or_else(|| kv_status(StoreError::ShuttingDown, |_| None))
    }

    /// Waits for the store's answers, all within one deadline. An answer that never
    /// comes (the deadline passed, or the store stopped without answering) is an
    /// unknown outcome: a write may still apply.
    async fn wait<T: Send + 'static>(
        &self,
        answers: Vec<oneshot::Receiver<Result<T, StoreError>>>,
    ) -> Result<Vec<T>, Status> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Ok(value))) => results.push(value),
                Ok(Ok(Err(error))) => return Err(self.status(error).await),
                _ => return Err(self.status(StoreError::OutcomeUnknown).await),
            }
        }
        Ok(results)
    }

    /// The status for a refusal; the leader's address it names may take a question to
    /// the driver, so it is looked up off the async workers.
    async fn status(&self, error: StoreError) -> Status {
        let addresses = self.addresses.clone();
        tokio::task::spawn_blocking(move || kv_status(error, |store| addresses.resolve(store)))
            .await
            .unwrap_or_else(|e| Status::internal(format!("request task failed: {e}")))
    }

    async fn read(
        &self,
        region_id: u64,
        epoch: RegionEpoch,
        requests: Vec<ReadRequest>,
    ) -> Result<Vec<ReadResponse>, Status> {
        let store = self.store()?;
        let answers = requests
            .into_iter()
            .map(|request| {
                let (respond, answer) = responder();
                store.read_with(region_id, epoch, request, respond);
                answer
            })
            .collect();
        self.wait(answers).await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        let (region_id, epoch) = context(request.context)?;
        let answers = self.read(region_id, epoch, vec![ReadRequest::Get { key: request.key }]).await?;
        let value = match answers.into_iter().next() {
            Some(ReadResponse::Value(value)) => value,
            _ => return Err(Status::internal("a get answered with pairs")),
        };
        Ok(Response::new(GetResponse { found: value.is_some(), value: value.unwrap_or_default() }))
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let request = request.into_inner();
        let (region_id, epoch) = context(request.context)?;
        let keys = request.keys;
        let reads = keys.iter().map(|key| ReadRequest::Get { key: key.clone() }).collect();
        // Issued together, the reads share one ReadIndex round.
        let answers = self.read(region_id, epoch, reads).await?;
        let pairs = keys
            .into_iter()
            .zip(answers)
            .filter_map(|(key, answer)| match answer {
                ReadResponse::Value(Some(value)) => Some(KeyValue { key, value }),
                _ => None,
            })
            .collect();
        Ok(Response::new(BatchGetResponse { pairs }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let request = request.into_inner();
        let (region_id, epoch) = context(request.context)?;
        let scan = ReadRequest::Scan {
            start: request.start_key,
            end: request.end_key,
            limit: request.limit as usize,
            reverse: request.reverse,
        };
        let answers = self.read(region_id, epoch, vec![scan]).await?;
        let pairs = match answers.into_iter().next() {
            Some(ReadResponse::Pairs(pairs)) => pairs,
            _ => return Err(Status::internal("a scan answered with a single value")),
        };
        Ok(Response::new(ScanResponse {
            pairs: pairs.into_iter().map(|(key, value)| KeyValue { key, value }).collect(),
        }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let request = request.into_inner();
        let (region_id, epoch) = context(request.context)?;
        if request.writes.is_empty() {
            return Err(Status::invalid_argument("a write request with no writes"));
        }
        let (respond, answer) = responder();
        self.store()?.write_with(region_id, epoch, request.writes, respond);
        let answers = self.wait(vec![answer]).await?;
        Ok(Response::new(WriteResponse { results: answers.into_iter().next().unwrap_or_default() }))
    }
}
