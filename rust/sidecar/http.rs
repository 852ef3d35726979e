//! The HTTP listener: `/health`, `/stats` (JSON), `/metrics` (Prometheus text) and
//! `/read`, the endpoint SeaweedFS's own mount-side RDMA client calls on a sidecar.
//!
//! `/read?volume=V&needle=N&cookie=C[&offset=O][&size=S]` (numbers in decimal, or hex with
//! `0x`) or `/read?file_id=V,KEYCOOKIE[&offset=O][&size=S]` answers with the bytes of
//! `[offset, offset+size)` of the needle's data as stored (compressed needles stay
//! compressed); `size` 0 or omitted means to the end. The token goes in
//! `Authorization: Bearer` or `?jwt=`.
//!
//! Like the protocol port, the listener keeps what one client can hold bounded: at most
//! `--http-max-connections` are open (more are closed on accept), a connection that has
//! not sent a whole request header within `--http-header-timeout-secs` is closed (a
//! slowloris client, or a keep-alive connection left idle), and one whose client stops
//! taking the response for `--write-timeout-secs` is closed with its staging released.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::accept::next_connection;
use super::read::ReadAsk;
use super::read::Span;
use super::service::Service;
use super::stall::{caused_by_stall, WriteDeadline};
use super::stats::Source;
use crate::fid::FileId;
use crate::proto::Status;

type Reply = Response<Full<Bytes>>;

/// At most one "too many HTTP connections" warning per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What one HTTP client may hold.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// A whole request header must arrive within this (from when the connection is ready
    /// for the next request, so it also closes idle keep-alive connections).
    pub(crate) header_timeout: Duration,
    /// Open connections; more are closed on accept.
    pub(crate) max_connections: usize,
    /// Close a connection whose client takes no response bytes for this long.
    pub(crate) write_timeout: Option<Duration>,
}

/// Serves HTTP until `shutdown` flips.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    while let Some((stream, peer)) =
        next_connection(&listener, &mut shutdown, &mut conns, "an HTTP connection").await
    {
        let stats = &service.stats;
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            stats.http_connections_refused.fetch_add(1, Ordering::Relaxed);
            refused += 1;
            if last_warning.map_or(true, |t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                let max = limits.max_connections;
                warn!(%peer, refused, "at --http-max-connections {max}: closing new HTTP connections");
                last_warning = Some(Instant::now());
                refused = 0;
            }
            drop(stream);
            continue;
        };
        stats.http_connections_total.fetch_add(1, Ordering::Relaxed);
        stats.http_connections_open.fetch_add(1, Ordering::Relaxed);
        let service = Arc::clone(&service);
        let limits = limits.clone();
        conns.spawn(async move {
            connection(stream, peer, &service, &limits).await;
            service.stats.http_connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    conns.abort_all();
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    service: &Arc<Service>,
    limits: &Limits,
) {
    let handler = {
        let service = Arc::clone(service);
        hyper::service::service_fn(move |req| {
            let service = Arc::clone(&service);
            async move { Ok::<_, Infallible>(handle(&service, req).await) }
        })
    };
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, handler);
    let Err(e) = conn.await else { return };
    let stats = &service.stats;
    if e.is_timeout() {
        stats.http_header_timeouts.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, "HTTP connection closed: no whole request header within {:?}", limits.header_timeout);
    } else if caused_by_stall(&e) {
        stats.http_connections_stalled.fetch_add(1, Ordering::Relaxed);
        warn!(%peer, "closing HTTP connection: {e}; releasing its staging");
    } else {
        debug!(%peer, "HTTP connection ended: {e}");
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: impl Into<String>) -> Reply {
    let mut message = message.into();
    message.push('\n');
    reply(status, "text/plain; charset=utf-8", message)
}

fn json(value: &serde_json::Value) -> Reply {
    reply(StatusCode::OK, "application/json", value.to_string())
}

async fn handle(service: &Arc<Service>, req: Request<Incoming>) -> Reply {
    service.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    match req.uri().path() {
        "/health" => {
            json(&serde_json::json!({ "status": "ok", "volumes": service.store.volume_count() }))
        }
        "/stats" => json(&service.stats.json(&service.gauges())),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            service.stats.prometheus(&service.gauges()),
        ),
        "/read" => read(service, &req).await,
        other => text(StatusCode::NOT_FOUND, format!("no such endpoint {other}")),
    }
}

async fn read(service: &Arc<Service>, req: &Request<Incoming>) -> Reply {
    let params = parse_query(req.uri().query().unwrap_or(""));
    let mut ask = match read_params(&params) {
        Ok(ask) => ask,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    ask.jwt = bearer
        .map(str::to_owned)
        .or_else(|| param(&params, "jwt").map(str::to_owned))
        .unwrap_or_default();
    let fid = ask.fid;
    let answer = service.read(ask).await;
    let (status, message) = match answer.header.status {
        Status::Ok => (StatusCode::OK, ""),
        Status::NotFound => (StatusCode::NOT_FOUND, "needle not found"),
        Status::Deleted => (StatusCode::NOT_FOUND, "needle deleted"),
        Status::BadRequest => {
            (StatusCode::BAD_REQUEST, "read larger than this sidecar's --max-read")
        }
        Status::Unauthorized => {
            (StatusCode::UNAUTHORIZED, "missing or invalid JWT for this file id")
        }
        Status::Busy => (StatusCode::SERVICE_UNAVAILABLE, "sidecar busy; retry later"),
        Status::Internal => (StatusCode::BAD_GATEWAY, "the volume server could not be read"),
    };
    let (Some(lease), Some(source)) = (answer.payload, answer.source) else {
        return text(status, format!("{fid}: {message}"));
    };
    let body = match lease.as_single() {
        // A single slab goes out without a copy; it returns to the pool once sent.
        Some(_) => Bytes::from_owner(lease),
        None => Bytes::from(lease.to_vec()),
    };
    let mut response = reply(StatusCode::OK, "application/octet-stream", body);
    let headers = response.headers_mut();
    let source = match source {
        Source::Local => "rdma-sidecar-local",
        Source::Upstream => "rdma-sidecar-upstream",
    };
    headers.insert("x-source", HeaderValue::from_static(source));
    let h = answer.header;
    for (name, value) in [
        ("x-needle-flags", h.needle_flags.to_string()),
        ("x-needle-size", h.needle_size.to_string()),
        ("etag", format!("\"{:08x}\"", h.crc)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `key=value` pairs of a query string, percent-decoded.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A decimal number, or hex after `0x`.
fn number<T: TryFrom<u64>>(params: &[(String, String)], name: &str) -> Result<Option<T>, String> {
    let Some(text) = param(params, name) else { return Ok(None) };
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    let bad = || format!("{name}={text:?} is not a number (decimal, or hex with 0x) in range");
    parsed.ok().and_then(|n| T::try_from(n).ok()).map(Some).ok_or_else(bad)
}

fn read_params(params: &[(String, String)]) -> Result<ReadAsk, String> {
    let fid = match param(params, "file_id").or_else(|| param(params, "fid")) {
        Some(text) => FileId::parse(text).map_err(|e| e.to_string())?,
        None => {
            let missing = |what: &str| {
                format!("missing {what}: give file_id=V,KEYCOOKIE or volume=, needle= and cookie=")
            };
            let volume = number(params, "volume")?.ok_or_else(|| missing("volume"))?;
            let key = number(params, "needle")?.ok_or_else(|| missing("needle"))?;
            let cookie = number(params, "cookie")?.ok_or_else(|| missing("cookie"))?;
            FileId::new(volume, key, cookie)
        }
    };
    let offset = number::<u64>(params, "offset")?.unwrap_or(0);
    let len = match number::<u64>(params, "size")?.unwrap_or(0) {
        0 => u64::MAX,
        size => size,
    };
    Ok(ReadAsk { fid, span: Span { offset, len }, jwt: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(query: &str) -> Result<ReadAsk, String> {
        read_params(&parse_query(query))
    }

    #[test]
    fn read_parameters() {
        let a = ask("volume=3&needle=1&cookie=1668298710&offset=10&size=5").expect("decimal");
        assert_eq!(a.fid, FileId::new(3, 1, 0x637037d6));
        assert_eq!(a.span, Span { offset: 10, len: 5 });
        let b = ask("volume=0x3&needle=0x1&cookie=0x637037d6").expect("hex");
        assert_eq!((b.fid, b.span), (FileId::new(3, 1, 0x637037d6), Span::WHOLE));
        let c = ask("file_id=3%2C01637037d6&offset=4").expect("file id");
        assert_eq!(
            (c.fid, c.span),
            (FileId::new(3, 1, 0x637037d6), Span { offset: 4, len: u64::MAX })
        );
        assert!(ask("volume=3&needle=1").expect_err("no cookie").contains("missing cookie"));
        assert!(ask("volume=x&needle=1&cookie=2").expect_err("bad number").contains("volume"));
        assert!(ask("volume=4294967296&needle=1&cookie=2").is_err(), "volume is u32");
        assert!(ask("file_id=nonsense").is_err());
        assert_eq!(percent_decode("a%2cb+c%zz"), "a,b c%zz");
    }
}
