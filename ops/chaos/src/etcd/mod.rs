//! The clients of the etcd API: the register workload's operations (read, write,
//! compare-and-swap, scan) on keys of their own (`e0`, `e1`, ...), sent with etcd's
//! Rust client to the etcd address of one store at a time, as an application would
//! (and to the next store once a request fails), and a watcher of those keys checked
//! against what the clients wrote (`watch.rs`).
//!
//! The operations as etcd's API runs them: a read is a linearizable Range, a write a
//! Put, a compare-and-swap a Txn (`value == expected`, or `create_revision == 0` for an
//! absent key, then a Put with the previous value, else a Range), a scan a Range over
//! every client key. Every acknowledged write's revision is kept for the watch checker.
//!
//! A failure is classified by what etcd's API promises: a read that failed changed
//! nothing; a write refused as invalid did not apply; any other failed write (etcd's
//! `request timed out`, a broken connection) may have applied, and is unknown.

pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use parking_lot::Mutex;
use tokio::sync::Mutex as AsyncMutex;

use crate::history::{EventKind, Operation, Output};
use crate::workload::{Executor, KeySpace, text};

/// The keys of the etcd API's clients.
pub const KEYS: KeySpace = KeySpace { prefix: "e", scan_end: "f" };

/// Where each node's store serves etcd's API.
pub const ETCD_PORT: u16 = 2381;

/// How long a client waits to connect to a store before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A write the etcd API acknowledged: the key, the value, and the revision it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub key: String,
    pub value: String,
    pub revision: i64,
}

/// The writes acknowledged to every etcd client of a round.
pub type AcknowledgedWrites = Arc<Mutex<Vec<Acknowledged>>>;

/// One client's view of the etcd API: the stores' etcd addresses, the one it talks to
/// now, and its connection there.
pub struct EtcdApi {
    endpoints: EtcdEndpoints,
    deadline: Duration,
    current: AsyncMutex<(usize, Option<Client>)>,
    acknowledged: AcknowledgedWrites,
}

/// Why an operation through etcd's client failed, and whether it may have applied.
struct Failure {
    error: String,
    may_have_applied: bool,
}

impl From<etcd_client::Error> for Failure {
    fn from(error: etcd_client::Error) -> Failure {
        let refused = matches!(
            &error,
            etcd_client::Error::GRpcStatus(status) if matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound | tonic::Code::Unimplemented
            )
        );
        Failure { error: error.to_string(), may_have_applied: !refused }
    }
}

impl EtcdApi {
    /// A client of the stores at `endpoints` starting with the `first`'s (modulo).
    pub fn new(
        endpoints: EtcdEndpoints,
        first: usize,
        deadline: Duration,
        acknowledged: AcknowledgedWrites,
    ) -> EtcdApi {
        assert!(!endpoints.addresses.is_empty(), "invariant: a cluster has at least one store");
        let first = first % endpoints.addresses.len();
        EtcdApi { endpoints, deadline, current: AsyncMutex::new((first, None)), acknowledged }
    }

    /// The connection to the current store, made if there is none.
    async fn client(&self) -> Result<Client, Failure> {
        let mut current = self.current.lock().await;
        if let Some(client) = &current.1 {
            return Ok(client.clone());
        }
        match connect(&self.endpoints, current.0, self.deadline).await {
            Ok(client) => {
                current.1 = Some(client.clone());
                Ok(client)
            }
            Err(error) => {
                *current = ((current.0 + 1) % self.endpoints.addresses.len(), None);
                Err(Failure { error, may_have_applied: false })
            }
        }
    }

    /// After a failure: the next request goes to the next store.
    async fn move_on(&self) {
        let mut current = self.current.lock().await;
        *current = ((current.0 + 1) % self.endpoints.addresses.len(), None);
    }

    async fn run(&self, operation: &Operation) -> Result<Output, Failure> {
        let mut client = self.client().await?;
        match operation {
            Operation::Read { key } => {
                let answer = client.get(key.as_str(), None).await?;
                Ok(Output::Read { value: answer.kvs().first().map(|kv| text(kv.value())) })
            }
            Operation::Scan { start, end } => {
                let answer =
                    client.get(start.as_str(), Some(GetOptions::new().with_range(end.as_str()))).await?;
                let pairs = answer.kvs().iter().map(|kv| (text(kv.key()), text(kv.value()))).collect();
                Ok(Output::Scan { pairs })
            }
            Operation::Write { key, value } => {
                let answer = client.put(key.as_str(), value.as_str(), None).await?;
                let revision = answer.header().map_or(0, |header| header.revision());
                self.acknowledge(key, value, revision);
                Ok(Output::Written)
            }
            Operation::Cas { key, expected, new } => {
                self.compare_and_swap(&mut client, key, expected.as_deref(), new).await
            }
        }
    }

    async fn compare_and_swap(
        &self,
        client: &mut Client,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<Output, Failure> {
        let compare = match expected {
            Some(expected) => Compare::value(key, CompareOp::Equal, expected),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let swap = TxnOp::put(key, new, Some(PutOptions::new().with_prev_key()));
        let transaction = Txn::new().when([compare]).and_then([swap]).or_else([TxnOp::get(key, None)]);
        let answer = client.txn(transaction).await?;
        let revision = answer.header().map_or(0, |header| header.revision());
        let previous = match answer.op_responses().first() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|kv| text(kv.value())),
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| text(kv.value())),
            other => {
                let error = format!("a compare-and-swap was answered {other:?}");
                return Err(Failure { error, may_have_applied: true });
            }
        };
        if answer.succeeded() {
            self.acknowledge(key, new, revision);
        }
        Ok(Output::Cas { swapped: answer.succeeded(), previous })
    }

    fn acknowledge(&self, key: &str, value: &str, revision: i64) {
        let acknowledged = Acknowledged { key: key.to_string(), value: value.to_string(), revision };
        self.acknowledged.lock().push(acknowledged);
    }
}

impl Executor for EtcdApi {
    async fn execute(&self, operation: &Operation) -> EventKind {
        match self.run(operation).await {
            Ok(output) => EventKind::Ok { output },
            Err(failure) => {
                self.move_on().await;
                if operation.is_mutation() && failure.may_have_applied {
                    EventKind::Unknown { error: failure.error }
                } else {
                    EventKind::Fail { error: failure.error }
                }
            }
        }
    }
}

/// Where the stores serve the etcd API, and how to connect to it.
#[derive(Debug, Clone)]
pub struct EtcdEndpoints {
    pub addresses: Vec<String>,
    /// Set when the cluster runs mutual TLS.
    pub tls: Option<etcd_client::TlsOptions>,
}

/// A connection to the etcd API at the `index`th address (modulo), each request of it
/// bounded by `deadline`.
async fn connect(endpoints: &EtcdEndpoints, index: usize, deadline: Duration) -> Result<Client, String> {
    let endpoint = &endpoints.addresses[index % endpoints.addresses.len()];
    let mut options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(deadline);
    if let Some(tls) = &endpoints.tls {
        options = options.with_tls(tls.clone());
    }
    Client::connect([endpoint], Some(options))
        .await
        .map_err(|error| format!("connecting to {endpoint}: {error}"))
}
