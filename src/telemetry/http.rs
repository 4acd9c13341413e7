//! A small HTTP/1.1 endpoint on `[metrics] listen`: `/metrics` (Prometheus text format),
//! `/healthz` (200 while the process runs), `/readyz` (200 while streaming, else 503) and
//! `/status` (JSON). One request per connection; requests over 8 kB are refused.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{State, Telemetry};

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
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Serves until `shutdown` becomes true.
async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    let handle = super::install();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let telemetry = telemetry.clone();
                    tokio::spawn(async move {
                        let _ = respond(stream, &telemetry, handle).await;
                    });
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn respond(
    mut stream: TcpStream,
    telemetry: &Telemetry,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 8192 {
            return write(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
            )
            .await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return write(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            telemetry.refresh();
            handle.run_upkeep();
            write(&mut stream, "200 OK", "text/plain; version=0.0.4", &handle.render()).await
        }
        "/healthz" => write(&mut stream, "200 OK", "text/plain", "ok\n").await,
        "/readyz" => match telemetry.state() {
            State::Streaming => write(&mut stream, "200 OK", "text/plain", "streaming\n").await,
            other => {
                write(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    &format!("{}\n", other.as_str()),
                )
                .await
            }
        },
        "/status" => {
            telemetry.refresh();
            let body = serde_json::to_string_pretty(&telemetry.status()).unwrap_or_else(|_| "{}".into());
            write(&mut stream, "200 OK", "application/json", &(body + "\n")).await
        }
        _ => {
            write(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /metrics, /healthz, /readyz or /status\n",
            )
            .await
        }
    }
}

async fn write(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
