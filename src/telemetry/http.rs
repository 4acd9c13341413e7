//! The HTTP endpoint on `[metrics] listen`: `/metrics` (Prometheus text format), `/healthz`
//! (200 while the process runs), `/readyz` (200 while streaming, else 503) and `/status`
//! (JSON), served by axum on hyper: HTTP/1.1 with keep-alive, request heads over 8 kB refused,
//! and a client that does not send its request head within 5 s is dropped, so a slow or stuck
//! scraper cannot hold a connection (or the bridge) up.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Shared;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{State, Telemetry};

/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 8192;

/// Binds `listen` and serves until `shutdown`. Replication matters more than its metrics: if
/// the address is taken, this says so and tries again every 5 s rather than stopping the bridge.
pub async fn run(listen: String, telemetry: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match TcpListener::bind(&listen).await {
            Ok(listener) => {
                tracing::info!(listen = %listen, "serving /metrics, /healthz, /readyz and /status");
                return serve(listener, telemetry, shutdown).await;
            }
            Err(e) => {
                tracing::error!(listen = %listen, error = %e, "cannot listen for /metrics; retrying in 5 s (change [metrics] listen or free the port)");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// What every handler shares: the bridge's state and the Prometheus recorder.
#[derive(Clone)]
struct Endpoint {
    telemetry: Arc<Telemetry>,
    handle: &'static metrics_exporter_prometheus::PrometheusHandle,
}

/// The routes. Anything but GET (and HEAD, which axum answers from GET) is 405, "GET only".
fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n".into()) }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .fallback(fallback)
        .method_not_allowed_fallback(|| async { text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()) })
        .with_state(endpoint)
}

/// Serves until `shutdown` becomes true; each connection is its own task.
async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    let service = router(Endpoint {
        telemetry,
        handle: super::install(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stop.changed() => connection.as_mut().graceful_shutdown(),
                    }
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn metrics(Shared(endpoint): Shared<Endpoint>) -> Response {
    endpoint.telemetry.refresh();
    endpoint.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        endpoint.handle.render(),
    )
        .into_response()
}

async fn readyz(Shared(endpoint): Shared<Endpoint>) -> Response {
    match endpoint.telemetry.state() {
        State::Streaming => text(StatusCode::OK, "streaming\n".into()),
        other => text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", other.as_str())),
    }
}

async fn status(Shared(endpoint): Shared<Endpoint>) -> Response {
    endpoint.telemetry.refresh();
    let body = serde_json::to_string_pretty(&endpoint.telemetry.status()).unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
}

async fn fallback(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    text(
        StatusCode::NOT_FOUND,
        "try /metrics, /healthz, /readyz or /status\n".into(),
    )
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn start() -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, Telemetry::new(), stopped));
        (addr, stop)
    }

    /// Reads one response with a Content-Length body: (status, body).
    async fn response(stream: &mut TcpStream) -> (u16, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a whole response");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if body.len() >= length {
                    let code = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .expect("status");
                    return (code, body[..length].to_string());
                }
            }
        }
    }

    #[tokio::test]
    async fn answers_several_requests_on_one_connection() {
        let (addr, _stop) = start().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for (path, code, body) in [
            ("/healthz", 200, "ok\n"),
            ("/readyz", 503, "starting\n"),
            ("/nope", 404, "try /metrics, /healthz, /readyz or /status\n"),
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            assert_eq!(response(&mut stream).await, (code, body.to_string()), "{path}");
        }
    }

    #[tokio::test]
    async fn refuses_other_methods_and_huge_heads() {
        let (addr, _stop) = start().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /nope HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(response(&mut stream).await, (405, "GET only\n".to_string()));
        stream
            .write_all(b"DELETE /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(response(&mut stream).await, (405, "GET only\n".to_string()));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let huge = format!("GET /healthz HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(20_000));
        let _ = stream.write_all(huge.as_bytes()).await;
        let mut head = [0u8; 12];
        let n = stream.read(&mut head).await.unwrap_or(0);
        assert!(
            n == 0 || head.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&head[..n])
        );
    }

    #[tokio::test]
    async fn drops_a_client_that_never_finishes_its_request() {
        let (addr, _stop) = start().await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEAD_TIMEOUT * 4, stream.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "the connection was still open after {:?}",
            HEAD_TIMEOUT * 4
        );
    }
}
