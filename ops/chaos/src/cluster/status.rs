//! A store's status address as the nemesis uses it: arming and releasing the engine's
//! fail points in a running process (`PUT` / `DELETE /fail/NAME`). The chaos cluster's
//! stores enable these routes in their configuration file; nothing else should.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// How long one request to a status address may take (a paused store never answers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Arms `point` with `action` (`trigger`, `pause` or `panic`) on the store whose status
/// address is `address`.
pub async fn arm(address: &str, point: &str, action: &str) -> anyhow::Result<()> {
    request(address, Method::PUT, &format!("/fail/{point}"), action).await
}

/// Disarms `point` on the store at `address`.
pub async fn release(address: &str, point: &str) -> anyhow::Result<()> {
    request(address, Method::DELETE, &format!("/fail/{point}"), "").await
}

async fn request(address: &str, method: Method, path: &str, body: &str) -> anyhow::Result<()> {
    let what = format!("{method} http://{address}{path}");
    tokio::time::timeout(REQUEST_TIMEOUT, send(address, method, path, body))
        .await
        .with_context(|| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| what)
}

async fn send(address: &str, method: Method, path: &str, body: &str) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven beside the request, and ends with it.
    let driver = tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, address)
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let text = response.into_body().collect().await?.to_bytes();
    driver.abort();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&text).trim());
    }
    Ok(())
}
