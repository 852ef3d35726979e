//! Counters for `/stats` (JSON) and `/metrics` (Prometheus text). Plain relaxed atomics:
//! each counter is read on its own, and a scrape that sees them a few reads apart is fine.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::proto::Status;

/// Where a needle's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the volume files by the sidecar itself.
    Local,
    /// Fetched from a volume server over HTTP.
    Upstream,
}

impl Source {
    /// Lower-case name, as in stats and the `X-Source` header.
    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Upstream => "upstream",
        }
    }
}

/// How a connection's needle bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In the DATA frames on the TCP stream.
    Tcp,
    /// RDMA-written into the client's registered slot; DATA carries only the status.
    Verbs,
}

impl Transport {
    /// Lower-case name, as in stats and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Verbs => "verbs",
        }
    }
}

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Verbs];

const STATUSES: [Status; 7] = [
    Status::Ok,
    Status::NotFound,
    Status::Deleted,
    Status::BadRequest,
    Status::Unauthorized,
    Status::Busy,
    Status::Internal,
];

#[derive(Debug, Default)]
struct PerSource {
    reads: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct PerTransport {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    /// READs answered OK with data on connections of this transport.
    reads: AtomicU64,
    bytes: AtomicU64,
}

/// The sidecar's counters.
#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    /// Protocol connections closed because the client stopped taking its answers.
    pub(crate) connections_stalled: AtomicU64,
    /// Protocol connections closed after `--idle-timeout-secs` with nothing asked.
    pub(crate) connections_idle_closed: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    pub(crate) http_connections_open: AtomicU64,
    pub(crate) http_connections_total: AtomicU64,
    /// HTTP connections closed on accept at `--http-max-connections`.
    pub(crate) http_connections_refused: AtomicU64,
    /// HTTP connections closed for not sending a whole request header in time.
    pub(crate) http_header_timeouts: AtomicU64,
    /// HTTP connections closed because the client stopped taking the response.
    pub(crate) http_connections_stalled: AtomicU64,
    pub(crate) volumes: AtomicU64,
    by_status: [AtomicU64; 7],
    local: PerSource,
    upstream: PerSource,
    /// Indexed by `Transport as usize`.
    transports: [PerTransport; 2],
    /// Verbs connections closed because their queue pair could not be connected (a client
    /// without tcp) or an RDMA write failed or did not complete.
    pub(crate) verbs_failures: AtomicU64,
}

/// Values that live elsewhere (the staging pool), passed in when rendering.
pub(crate) struct Gauges {
    pub(crate) staging_slabs: usize,
    pub(crate) staging_slab_size: usize,
    pub(crate) staging_in_use: usize,
    /// Slabs one protocol connection may hold at once.
    pub(crate) staging_per_connection: usize,
    /// The RDMA device serving verbs connections; `None` when serving tcp only.
    pub(crate) rdma_device: Option<String>,
}

impl Gauges {
    /// Staging bytes pinned: the whole pool, registered once at start, when serving verbs.
    pub(crate) fn pinned_bytes(&self) -> u64 {
        if self.rdma_device.is_some() {
            (self.staging_slabs as u64).saturating_mul(self.staging_slab_size as u64)
        } else {
            0
        }
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            started: Instant::now(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_stalled: AtomicU64::new(0),
            connections_idle_closed: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            http_requests: AtomicU64::new(0),
            http_connections_open: AtomicU64::new(0),
            http_connections_total: AtomicU64::new(0),
            http_connections_refused: AtomicU64::new(0),
            http_header_timeouts: AtomicU64::new(0),
            http_connections_stalled: AtomicU64::new(0),
            volumes: AtomicU64::new(0),
            by_status: Default::default(),
            local: PerSource::default(),
            upstream: PerSource::default(),
            transports: Default::default(),
            verbs_failures: AtomicU64::new(0),
        }
    }

    /// Counts a connection that completed its handshake on `t`; [`Stats::closed`] undoes the
    /// open count.
    pub(crate) fn opened(&self, t: Transport) {
        let per = &self.transports[t as usize];
        per.connections_total.fetch_add(1, Ordering::Relaxed);
        per.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`Stats::opened`] has closed.
    pub(crate) fn closed(&self, t: Transport) {
        self.transports[t as usize].connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts `bytes` delivered by an OK answer on a `t` connection.
    pub(crate) fn delivered(&self, t: Transport, bytes: usize) {
        let per = &self.transports[t as usize];
        per.reads.fetch_add(1, Ordering::Relaxed);
        per.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one answered READ (any status) and, for data, where it came from.
    pub(crate) fn record(&self, status: Status, source: Option<Source>, bytes: usize) {
        self.by_status[status as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(source) = source {
            let per = self.per_source(source);
            per.reads.fetch_add(1, Ordering::Relaxed);
            per.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn per_source(&self, source: Source) -> &PerSource {
        match source {
            Source::Local => &self.local,
            Source::Upstream => &self.upstream,
        }
    }

    fn reads(&self) -> u64 {
        self.by_status.iter().map(get).sum()
    }

    fn bytes(&self) -> u64 {
        get(&self.local.bytes) + get(&self.upstream.bytes)
    }

    pub(crate) fn json(&self, g: &Gauges) -> serde_json::Value {
        let status: serde_json::Map<String, serde_json::Value> = STATUSES
            .iter()
            .map(|s| (s.name().to_owned(), get(&self.by_status[*s as usize]).into()))
            .collect();
        let source = |s: Source| {
            let per = self.per_source(s);
            serde_json::json!({ "reads": get(&per.reads), "bytes": get(&per.bytes) })
        };
        let transports: serde_json::Map<String, serde_json::Value> = TRANSPORTS
            .iter()
            .map(|&t| {
                let per = &self.transports[t as usize];
                let counts = serde_json::json!({
                    "connections_open": get(&per.connections_open),
                    "connections_total": get(&per.connections_total),
                    "reads": get(&per.reads),
                    "bytes": get(&per.bytes),
                });
                (t.name().to_owned(), counts)
            })
            .collect();
        // The best transport on offer; clients that do not ask for verbs still get tcp.
        let offered = if g.rdma_device.is_some() { Transport::Verbs } else { Transport::Tcp };
        serde_json::json!({
            "transport": offered.name(),
            "rdma_device": g.rdma_device,
            "transports": transports,
            "verbs_failures": get(&self.verbs_failures),
            "uptime_secs": self.started.elapsed().as_secs_f64(),
            "volumes": get(&self.volumes),
            "connections": {
                "open": get(&self.connections_open),
                "total": get(&self.connections_total),
                "refused": get(&self.connections_refused),
                "stalled": get(&self.connections_stalled),
                "idle_closed": get(&self.connections_idle_closed),
            },
            "protocol_errors": get(&self.protocol_errors),
            "http_requests": get(&self.http_requests),
            "http_connections": {
                "open": get(&self.http_connections_open),
                "total": get(&self.http_connections_total),
                "refused": get(&self.http_connections_refused),
                "header_timeouts": get(&self.http_header_timeouts),
                "stalled": get(&self.http_connections_stalled),
            },
            "reads": self.reads(),
            "bytes": self.bytes(),
            "sources": { "local": source(Source::Local), "upstream": source(Source::Upstream) },
            "status": status,
            "staging": {
                "slabs": g.staging_slabs,
                "slab_size": g.staging_slab_size,
                "in_use": g.staging_in_use,
                "pinned_bytes": g.pinned_bytes(),
                "per_connection": g.staging_per_connection,
            },
        })
    }

    pub(crate) fn prometheus(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let name = format!("seaweed_rdma_sidecar_{name}");
            // Writing into a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value)];
        let label = |key: &str, value: &str| format!("{{{key}=\"{value}\"}}");
        let sources = [Source::Local, Source::Upstream];
        let status =
            STATUSES.iter().map(|s| (label("status", s.name()), get(&self.by_status[*s as usize])));
        metric("reads_total", "counter", "READs answered, by status.", status.collect());
        let reads =
            sources.iter().map(|s| (label("source", s.name()), get(&self.per_source(*s).reads)));
        metric(
            "source_reads_total",
            "counter",
            "Reads that returned data, by where it came from.",
            reads.collect(),
        );
        let bytes =
            sources.iter().map(|s| (label("source", s.name()), get(&self.per_source(*s).bytes)));
        metric(
            "bytes_total",
            "counter",
            "Needle bytes sent, by where they came from.",
            bytes.collect(),
        );
        metric(
            "connections_open",
            "gauge",
            "Open protocol connections.",
            one(get(&self.connections_open)),
        );
        metric(
            "connections_total",
            "counter",
            "Protocol connections accepted.",
            one(get(&self.connections_total)),
        );
        let refused = one(get(&self.connections_refused));
        metric(
            "connections_refused_total",
            "counter",
            "Connections closed on accept at the limit.",
            refused,
        );
        metric(
            "connections_stalled_total",
            "counter",
            "Protocol connections closed because the client took no answer bytes for --write-timeout-secs.",
            one(get(&self.connections_stalled)),
        );
        metric(
            "connections_idle_closed_total",
            "counter",
            "Protocol connections closed after --idle-timeout-secs with nothing asked.",
            one(get(&self.connections_idle_closed)),
        );
        metric(
            "staging_pinned_bytes",
            "gauge",
            "Bytes of staging registered (pinned) for verbs; 0 when serving tcp only.",
            one(g.pinned_bytes()),
        );
        let errors = one(get(&self.protocol_errors));
        metric(
            "protocol_errors_total",
            "counter",
            "Connections closed for breaking the protocol.",
            errors,
        );
        let by_transport = |f: fn(&PerTransport) -> &AtomicU64| {
            TRANSPORTS
                .iter()
                .map(|&t| (label("transport", t.name()), get(f(&self.transports[t as usize]))))
                .collect()
        };
        metric(
            "transport_connections_open",
            "gauge",
            "Open protocol connections, by the transport their handshake chose.",
            by_transport(|p| &p.connections_open),
        );
        metric(
            "transport_connections_total",
            "counter",
            "Protocol connections that completed a handshake, by transport.",
            by_transport(|p| &p.connections_total),
        );
        metric(
            "transport_bytes_total",
            "counter",
            "Needle bytes delivered to protocol clients, by transport.",
            by_transport(|p| &p.bytes),
        );
        metric(
            "verbs_failures_total",
            "counter",
            "Verbs connections closed: queue pair not connected, or an RDMA write failed.",
            one(get(&self.verbs_failures)),
        );
        metric(
            "verbs_available",
            "gauge",
            "1 when an RDMA device serves verbs connections, else 0.",
            one(u64::from(g.rdma_device.is_some())),
        );
        metric(
            "http_requests_total",
            "counter",
            "HTTP requests served.",
            one(get(&self.http_requests)),
        );
        metric(
            "http_connections_open",
            "gauge",
            "Open HTTP connections.",
            one(get(&self.http_connections_open)),
        );
        metric(
            "http_connections_total",
            "counter",
            "HTTP connections accepted.",
            one(get(&self.http_connections_total)),
        );
        metric(
            "http_connections_refused_total",
            "counter",
            "HTTP connections closed on accept at --http-max-connections.",
            one(get(&self.http_connections_refused)),
        );
        metric(
            "http_header_timeouts_total",
            "counter",
            "HTTP connections closed without a whole request header within --http-header-timeout-secs.",
            one(get(&self.http_header_timeouts)),
        );
        metric(
            "http_connections_stalled_total",
            "counter",
            "HTTP connections closed because the client took no response bytes for --write-timeout-secs.",
            one(get(&self.http_connections_stalled)),
        );
        metric("volumes", "gauge", "Volumes readable locally.", one(get(&self.volumes)));
        metric("staging_slabs", "gauge", "Slabs in the staging pool.", one(g.staging_slabs as u64));
        metric(
            "staging_slabs_in_use",
            "gauge",
            "Staging slabs lent to reads.",
            one(g.staging_in_use as u64),
        );
        let uptime = one(self.started.elapsed().as_secs());
        metric("uptime_seconds", "gauge", "Seconds since the sidecar started.", uptime);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let stats = Stats::new();
        stats.record(Status::Ok, Some(Source::Local), 10);
        stats.record(Status::Ok, Some(Source::Upstream), 5);
        stats.record(Status::NotFound, None, 0);
        stats.opened(Transport::Tcp);
        stats.opened(Transport::Verbs);
        stats.opened(Transport::Verbs);
        stats.closed(Transport::Verbs);
        stats.delivered(Transport::Verbs, 10);
        let g = Gauges {
            staging_slabs: 4,
            staging_slab_size: 1024,
            staging_in_use: 1,
            staging_per_connection: 2,
            rdma_device: Some("rxe0".into()),
        };
        let json = stats.json(&g);
        assert_eq!(json["staging"]["pinned_bytes"], 4096);
        assert_eq!(json["connections"]["idle_closed"], 0);
        assert_eq!(json["reads"], 3);
        assert_eq!(json["bytes"], 15);
        assert_eq!(json["sources"]["upstream"]["bytes"], 5);
        assert_eq!(json["status"]["not_found"], 1);
        assert_eq!(
            (json["transport"].as_str(), json["rdma_device"].as_str()),
            (Some("verbs"), Some("rxe0"))
        );
        assert_eq!(json["transports"]["verbs"]["connections_total"], 2);
        assert_eq!(json["transports"]["verbs"]["connections_open"], 1);
        assert_eq!(json["transports"]["verbs"]["bytes"], 10);
        assert_eq!(json["transports"]["tcp"]["connections_open"], 1);
        let text = stats.prometheus(&g);
        assert!(text.contains("seaweed_rdma_sidecar_reads_total{status=\"ok\"} 2\n"), "{text}");
        assert!(text.contains("seaweed_rdma_sidecar_bytes_total{source=\"local\"} 10\n"), "{text}");
        assert!(
            text.contains("# TYPE seaweed_rdma_sidecar_staging_slabs_in_use gauge\n"),
            "{text}"
        );
        let verbs_conns =
            "seaweed_rdma_sidecar_transport_connections_total{transport=\"verbs\"} 2\n";
        assert!(text.contains(verbs_conns), "{text}");
        let tcp_bytes = "seaweed_rdma_sidecar_transport_bytes_total{transport=\"tcp\"} 0\n";
        assert!(text.contains(tcp_bytes), "{text}");
        assert!(text.contains("seaweed_rdma_sidecar_verbs_available 1\n"), "{text}");
    }
}
