//! Counts and times every gRPC request a node serves, by method and status code.
//!
//! A tower layer on the node's server, so that no service can forget it. Every call but
//! the Raft transport's (all the others are unary): its streams live as long as the link
//! between two nodes, and their duration says nothing (the engine counts their messages
//! instead). The method label comes from the request path, which any client can make
//! up: a path the server does not implement is labelled `unknown`, so the label set
//! stays bounded. Each request looks its two series up in the recorder's registry (a
//! hash of a short key), small next to the request itself.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use metrics::Unit;
use tonic::Code;
use tower::{Layer, Service};

const REQUESTS: &str = "tessera_grpc_requests_total";
const DURATION: &str = "tessera_grpc_request_duration_seconds";

pub(super) fn describe() {
    metrics::describe_counter!(REQUESTS, Unit::Count, "gRPC requests served, by method and status code.");
    metrics::describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time from a gRPC request's arrival to its answer, by method."
    );
}

/// The layer to put on a node's gRPC server.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// `Kv/Get` for `/tessera.service.Kv/Get`; none for the transport's streams.
fn method_of(path: &str) -> Option<String> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let service = service.rsplit('.').next().unwrap_or(service);
    (service != "RaftTransport").then(|| format!("{service}/{method}"))
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A failed unary call's status travels in the response headers (a trailers-only
/// response); a successful one's in the trailers, after the body.
fn code_of<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = method_of(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            if let Some(method) = method {
                let code = match &response {
                    Ok(response) => code_of(response),
                    Err(_) => Code::Internal,
                };
                let method = if code == Code::Unimplemented { "unknown".to_string() } else { method };
                metrics::histogram!(DURATION, "method" => method.clone()).record(started.elapsed());
                metrics::counter!(REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_by_service_and_method() {
        assert_eq!(method_of("/tessera.service.Kv/Get").as_deref(), Some("Kv/Get"));
        assert_eq!(method_of("/tessera.service.Pd/RegionHeartbeats").as_deref(), Some("Pd/RegionHeartbeats"));
        assert_eq!(method_of("/tessera.service.RaftTransport/Stream"), None);
        assert_eq!(method_of("garbage"), None);
    }

    #[test]
    fn the_status_code_is_read_from_a_trailers_only_answer() {
        let failed = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
        assert_eq!(code_of(&failed), Code::Unavailable);
        let succeeded = http::Response::builder().body(()).unwrap();
        assert_eq!(code_of(&succeeded), Code::Ok);
    }
}
