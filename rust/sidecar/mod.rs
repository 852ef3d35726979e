//! The sidecar: runs beside a volume server, reads that server's volume files itself
//! (read-only) and serves needle reads over the seaweed-rdma protocol
//! (`docs/protocol.md`), plus an optional HTTP listener for health, stats, metrics and
//! SeaweedFS's `/read` contract.
//!
//! # Quick start
//! ```no_run
//! // What `seaweed-rdma-sidecar --dir /data/vol --listen 0.0.0.0:18515 ...` does:
//! let code = seaweed_rdma::sidecar::run(vec![
//!     "--dir".into(), "/data/vol".into(),
//!     "--listen".into(), "0.0.0.0:18515".into(),
//!     "--volume-server".into(), "http://127.0.0.1:8080".into(),
//! ]);
//! std::process::exit(code);
//! ```
//! Embedders that want the bound addresses use [`Sidecar::start`] on their own runtime.
//!
//! # How a read is served
//! A READ names a needle and a range of its data. The volume is looked up among the local
//! ones (the directories are re-scanned every `--rescan-secs`, and at once for an unknown
//! volume id); the needle is located in its `.idx` map (refreshed once on a miss, so a
//! needle written a moment ago is found) and its bytes are read from `.dat` into slabs of
//! the [`StagingPool`] on a blocking thread, then written to the socket from there.
//! Anything the sidecar cannot read itself (volume not here, EC volume, a file it does not
//! understand) is fetched from the volume server over HTTP into the same slabs.
//!
//! # Transports
//! With `--transport verbs` (or `auto` where a device is usable) the RDMA device is opened
//! and the staging slabs are registered with it once at start-up. A client whose `HELLO`
//! asks for verbs then gets a queue pair of its own, and the bytes of each OK answer are
//! RDMA-written from the slabs into the slot its READ names (after checking that they fit
//! there) before a DATA frame without payload reports the status. Clients that do not ask
//! for verbs are served over tcp either way.
//!
//! A deletion shows at once: the volume server appends it to `.idx` before it answers the
//! delete, and every local read first looks whether `.idx` has grown since the map was
//! last brought up to date (one `stat`), refreshing the map if it has. The periodic
//! refresh keeps idle volumes current, so reads rarely find work to do.
//!
//! # Clients that hold on
//! Every answer waits in staging slabs until the client's socket takes it, so each
//! protocol connection draws its slabs through its own capped view of the pool
//! (`--conn-staging-mib`, default a quarter of it), and a connection whose client has taken
//! no bytes for `--write-timeout-secs` while answers wait is closed, releasing them
//! (`stall.rs`; counted as `connections.stalled`). The HTTP listener has the same write
//! deadline, a connection cap (`--http-max-connections`) and a header-read timeout
//! (`--http-header-timeout-secs`) against slowloris clients and idle keep-alives.
//!
//! # Shutdown
//! [`run`] returns after SIGINT or SIGTERM: listeners close, open connections get up to
//! two seconds to send the answers they owe, then the runtime stops.

mod accept;
mod busy;
mod config;
mod handshake;
mod http;
mod jwt;
mod limits;
mod rdma;
mod read;
mod service;
mod staging;
mod stall;
mod stats;
mod store;
mod tcp;
mod transport;
mod upstream;

#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{Config, LogLevel, TransportChoice};
pub use jwt::{mint as mint_jwt, JwtCheck};
pub use staging::{Lease, StagingPool};

use crate::error::{Error, Result};
use service::Service;
use stats::Stats;
use store::Store;
use transport::VerbsBackend;
use upstream::Upstream;

/// How long a read waits for free staging slabs before it is answered BUSY.
pub(crate) const STAGING_WAIT: Duration = Duration::from_secs(2);
/// A client must complete its HELLO within this time.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// A running sidecar: its listeners and background tasks.
#[derive(Debug)]
pub struct Sidecar {
    listen_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    rdma_device: Option<String>,
    volumes: usize,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sidecar {
    /// Validates `config`, scans the volume directories, binds the listeners and starts
    /// serving on the current tokio runtime (which must be multi-threaded).
    ///
    /// With `--transport verbs` or `auto` the RDMA device is opened and the staging memory
    /// registered first (on a blocking thread: pinning it takes a while).
    ///
    /// # Errors
    /// [`Error::Config`] for settings that cannot work (among them `--transport verbs`
    /// without a usable device or with too little locked memory), [`Error::Io`] for a
    /// directory that cannot be listed, [`Error::Network`] for an address that cannot be
    /// bound.
    pub async fn start(config: Config) -> Result<Sidecar> {
        config.validate()?;
        let (slab_size, slab_count) = config.staging_layout();
        let (choice, device) = (config.transport, config.rdma_device.clone());
        let opened = tokio::task::spawn_blocking(move || {
            rdma::setup(choice, device.as_deref(), slab_size, slab_count)
        })
        .await
        .map_err(|e| Error::Config(format!("opening the RDMA device failed: {e}")))?
        .map_err(|e| Error::Config(format!("--transport verbs cannot start: {e}")))?;
        match opened {
            Some(setup) => {
                Sidecar::launch(config, StagingPool::registered(setup.slots), Some(setup.backend))
                    .await
            }
            None => Sidecar::launch(config, StagingPool::new(slab_size, slab_count), None).await,
        }
    }

    /// Starts with `backend` standing in for the RDMA device, over plain staging slabs.
    #[cfg(test)]
    pub(crate) async fn start_with_verbs(
        config: Config,
        backend: Arc<dyn VerbsBackend>,
    ) -> Result<Sidecar> {
        config.validate()?;
        let (slab_size, slab_count) = config.staging_layout();
        Sidecar::launch(config, StagingPool::new(slab_size, slab_count), Some(backend)).await
    }

    async fn launch(
        config: Config,
        pool: StagingPool,
        verbs: Option<Arc<dyn VerbsBackend>>,
    ) -> Result<Sidecar> {
        let stats = Arc::new(Stats::new());
        let store = Arc::new(Store::open(config.dirs.clone(), Arc::clone(&stats))?);
        let bind = |addr: String| async move {
            TcpListener::bind(&addr).await.map_err(|source| Error::Network { addr, source })
        };
        let listener = bind(config.listen.clone()).await?;
        let http_listener = match &config.http {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        let local = |l: &TcpListener, addr: &str| {
            l.local_addr().map_err(|source| Error::Network { addr: addr.to_owned(), source })
        };
        let listen_addr = local(&listener, &config.listen)?;
        let http_addr = match (&http_listener, &config.http) {
            (Some(l), Some(addr)) => Some(local(l, addr)?),
            _ => None,
        };

        let rdma_device = verbs.as_ref().map(|v| v.device().to_owned());
        let upstream = Upstream::new(
            config.volume_server.as_deref(),
            config.master.as_deref(),
            &config.listen,
        );
        let service = Arc::new(Service {
            store: Arc::clone(&store),
            upstream: Arc::new(upstream),
            pool,
            jwt: config.jwt_key.as_deref().map(JwtCheck::new),
            stats,
            max_read: config.max_read,
            conn_staging_slabs: config.conn_staging_slabs(),
            rdma_device: rdma_device.clone(),
        });
        let write_timeout =
            (config.write_timeout_secs > 0).then(|| Duration::from_secs(config.write_timeout_secs));
        let limits = Arc::new(limits::Limits {
            max_frame: config.max_frame,
            max_read: config.max_read,
            max_inflight: config.max_inflight,
            max_connections: config.max_connections,
            idle: (config.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(config.idle_timeout_secs)),
            write_timeout,
            conn_staging_slabs: config.conn_staging_slabs(),
            busy_poll: Duration::from_micros(config.busy_poll_us),
            server_id: random_id(),
            verbs,
        });

        let (shutdown, watcher) = watch::channel(false);
        let mut tasks =
            vec![tokio::spawn(tcp::serve(listener, Arc::clone(&service), limits, watcher.clone()))];
        if let Some(l) = http_listener {
            let http_limits = http::Limits {
                header_timeout: Duration::from_secs(config.http_header_timeout_secs),
                max_connections: config.http_max_connections,
                write_timeout,
            };
            let serving = http::serve(l, Arc::clone(&service), http_limits, watcher.clone());
            tasks.push(tokio::spawn(serving));
        }
        let every = Duration::from_secs_f64(config.rescan_secs);
        tasks.push(tokio::spawn(maintain(store, every, watcher)));
        let volumes = service.store.volume_count();
        info!(%listen_addr, ?http_addr, volumes, ?rdma_device, "sidecar started");
        Ok(Sidecar { listen_addr, http_addr, rdma_device, volumes, shutdown, tasks })
    }

    /// Where the protocol listener is bound (the real port when 0 was asked for).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Where the HTTP listener is bound, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The RDMA device serving verbs clients; `None` when the sidecar serves tcp only.
    pub fn rdma_device(&self) -> Option<&str> {
        self.rdma_device.as_deref()
    }

    /// Local volumes found at start-up.
    pub fn volumes_at_start(&self) -> usize {
        self.volumes
    }

    /// Stops accepting, lets open connections finish briefly, and waits for the tasks.
    pub async fn shutdown(self) {
        // An error means every receiver is gone already, which is the goal.
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Re-scans the directories and refreshes every volume's map, until shutdown.
async fn maintain(store: Arc<Store>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let store = Arc::clone(&store);
        let done = tokio::task::spawn_blocking(move || {
            if let Err(e) = store.scan() {
                warn!("re-scanning the volume directories failed: {e}");
            }
            store.refresh_all();
        });
        let _ = done.await;
    }
}

/// A process-unique id for HELLO_ACK (lets clients notice a restarted sidecar).
fn random_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// Runs a sidecar from command-line arguments (without the program name) until SIGINT or
/// SIGTERM, and returns the process exit code: 0 after a clean shutdown, 2 for bad
/// arguments (clap's message is printed; `--help` prints help and returns 0), 1 when the
/// sidecar cannot start.
///
/// Logs go to stderr; so does one start-up line naming what is served:
/// `seaweed-rdma sidecar: listening on HOST:PORT (tcp), http on HOST:PORT, N volumes from DIRS`
/// (`(verbs on DEVICE, tcp)` when an RDMA device serves verbs clients).
pub fn run(args: Vec<String>) -> i32 {
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    // A second call in one process (tests, the Python entry point) keeps the first logger.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(config.log_level.as_tracing())
        .with_target(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sidecar")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("seaweed-rdma sidecar: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(serve_until_signal(config));
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn serve_until_signal(config: Config) -> i32 {
    // Handlers go in before anything is served, so an early SIGTERM still shuts down cleanly.
    let (mut term, mut int) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("seaweed-rdma sidecar: cannot install signal handlers: {e}");
                return 1;
            }
        };
    let dirs: Vec<String> = config.dirs.iter().map(|d| d.display().to_string()).collect();
    let sidecar = match Sidecar::start(config).await {
        Ok(sidecar) => sidecar,
        Err(e) => {
            eprintln!("seaweed-rdma sidecar: {e}");
            return 1;
        }
    };
    let http = sidecar.http_addr().map(|a| format!(", http on {a}")).unwrap_or_default();
    let transports = match sidecar.rdma_device() {
        Some(device) => format!("verbs on {device}, tcp"),
        None => "tcp".to_owned(),
    };
    eprintln!(
        "seaweed-rdma sidecar: listening on {} ({transports}){http}, {} volumes from {}",
        sidecar.listen_addr(),
        sidecar.volumes_at_start(),
        dirs.join(", ")
    );
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!("{name} received, shutting down");
    sidecar.shutdown().await;
    info!("sidecar stopped");
    0
}
