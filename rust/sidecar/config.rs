//! The sidecar's command line. [`Config`] is both the clap parser and the settings the
//! server runs with, so the binary, the Python entry point and tests share one definition.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, ValueEnum};

use crate::error::{Error, Result};

/// Which transport serves the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    /// verbs for clients that ask for it where a usable RDMA device exists (logged once at
    /// start-up when there is none, and why), tcp for everyone else.
    Auto,
    /// The protocol over TCP only, with the needle bytes in the response frames.
    Tcp,
    /// verbs for clients that ask for it, tcp for the others; the sidecar does not start
    /// without a usable RDMA device and enough locked memory for its staging.
    Verbs,
}

/// How much the sidecar logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Also protocol errors from peers and fallbacks.
    Warn,
    /// Also start-up and shutdown.
    Info,
    /// Also each connection.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Settings of one sidecar process (`seaweed-rdma sidecar --help` lists them).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "seaweed-rdma sidecar",
    about = "Serves needle reads from a volume server's volume files over the seaweed-rdma protocol",
    group(ArgGroup::new("upstream").required(true).args(["volume_server", "master"]))
)]
pub struct Config {
    /// A volume server's -dir to read volumes from (repeat for several).
    #[arg(long = "dir", value_name = "VOLUME_DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Address the protocol listener binds, exactly as given (port 0: any free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// The co-located volume server, for needles that cannot be read locally.
    #[arg(long, value_name = "URL")]
    pub volume_server: Option<String>,
    /// A master to look volume servers up with, instead of --volume-server.
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// Transport for the protocol.
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto)]
    pub transport: TransportChoice,
    /// RDMA device for the verbs transport (`rxe0`, `mlx5_0`...); default: the first one
    /// with an ACTIVE port.
    #[arg(long, value_name = "NAME")]
    pub rdma_device: Option<String>,
    /// Address of the HTTP listener (/health, /stats, /metrics, /read); none when omitted.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Read-JWT signing key (security.toml [jwt.signing.read] key): READs must carry a token.
    #[arg(long, value_name = "KEY")]
    pub jwt_key: Option<String>,
    /// Largest request frame body accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_frame: u32,
    /// Largest single read served, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub max_read: u32,
    /// READs in flight per connection; more are answered BUSY.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_inflight: u32,
    /// Open protocol connections; more are closed on accept.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Close a connection with nothing in flight after this many idle seconds (0: never).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub idle_timeout_secs: u64,
    /// Close a connection (protocol or HTTP) whose client has taken no bytes of its answers
    /// for this many seconds while answers wait (0: never), releasing the staging they hold.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub write_timeout_secs: u64,
    /// Staging one protocol connection may hold at once, in MiB (0: a quarter of
    /// --staging-mib; raised to fit one --max-read). Its reads beyond it wait, then BUSY.
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub conn_staging_mib: usize,
    /// After answering on a protocol connection, keep checking it for the client's next
    /// request for up to this many microseconds before sleeping (0: never). A request that
    /// follows its answer closely then costs no wake-up of an idle CPU (tens of microseconds
    /// on a virtual machine); the price is at most this much CPU per request.
    #[arg(long, default_value_t = 50, value_name = "US")]
    pub busy_poll_us: u64,
    /// Close an HTTP connection that has not sent a whole request header within this many
    /// seconds (also how long an idle keep-alive connection stays open).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub http_header_timeout_secs: u64,
    /// Open HTTP connections; more are closed on accept.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub http_max_connections: usize,
    /// Size of one staging slab in KiB (reads up to this size use one slab).
    #[arg(long, default_value_t = 1024, value_name = "KIB")]
    pub staging_slab_kib: usize,
    /// Total staging memory in MiB (raised to fit one --max-read if smaller).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub staging_mib: usize,
    /// Seconds between re-scans of the volume dirs and refreshes of each volume's index.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub rescan_secs: f64,
    /// Log level (to stderr).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

impl Config {
    /// Parses arguments given without the program name (`["--dir", "/v", ...]`).
    ///
    /// # Errors
    /// clap's error (print it with [`clap::Error::print`]); `--help` comes back this way too.
    pub fn from_args<I, T>(args: I) -> std::result::Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let program = std::iter::once(std::ffi::OsString::from("seaweed-rdma sidecar"));
        Config::try_parse_from(program.chain(args.into_iter().map(Into::into)))
    }

    /// Checks what clap cannot: directories exist, limits are sane. (Whether verbs can be
    /// used is found out when the device is opened, at start-up.)
    ///
    /// # Errors
    /// [`Error::Config`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        for dir in &self.dirs {
            if !dir.is_dir() {
                return Err(Error::Config(format!(
                    "volume directory {} does not exist",
                    dir.display()
                )));
            }
        }
        if self.max_frame < crate::proto::READ_FIXED_LEN as u32 {
            return Err(Error::Config(format!(
                "--max-frame {} is smaller than a READ ({} bytes)",
                self.max_frame,
                crate::proto::READ_FIXED_LEN
            )));
        }
        if self.max_read == 0
            || self.max_inflight == 0
            || self.max_connections == 0
            || self.staging_slab_kib == 0
        {
            return Err(Error::Config(
                "--max-read, --max-inflight, --max-connections and --staging-slab-kib must be positive".into(),
            ));
        }
        if self.http_header_timeout_secs == 0 || self.http_max_connections == 0 {
            return Err(Error::Config(
                "--http-header-timeout-secs and --http-max-connections must be positive".into(),
            ));
        }
        if !(self.rescan_secs.is_finite() && self.rescan_secs > 0.0) {
            return Err(Error::Config("--rescan-secs must be a positive number".into()));
        }
        Ok(())
    }

    /// `(slab size, slab count)` of the staging pool: enough slabs for `--staging-mib`,
    /// and at least enough for one read of `--max-read`.
    pub fn staging_layout(&self) -> (usize, usize) {
        let slab = self.staging_slab_kib.saturating_mul(1024).max(1);
        let wanted = self.staging_mib.saturating_mul(1024 * 1024) / slab;
        let for_one_read = (self.max_read as usize).div_ceil(slab);
        (slab, wanted.max(for_one_read).max(1))
    }

    /// Slabs one protocol connection may hold at once: `--conn-staging-mib` (default a
    /// quarter of the pool), at least one `--max-read`, at most the pool.
    pub fn conn_staging_slabs(&self) -> usize {
        let (slab, count) = self.staging_layout();
        let for_one_read = (self.max_read as usize).div_ceil(slab);
        let wanted = match self.conn_staging_mib {
            0 => count / 4,
            mib => mib.saturating_mul(1024 * 1024) / slab,
        };
        wanted.max(for_one_read).clamp(1, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_requires_an_upstream() {
        let c = Config::from_args([
            "--dir",
            "/tmp",
            "--listen",
            "127.0.0.1:0",
            "--volume-server",
            "http://x:8080",
        ])
        .expect("parses");
        assert_eq!(
            (c.max_frame, c.max_read, c.max_inflight, c.max_connections),
            (65536, 64 << 20, 256, 1024)
        );
        assert_eq!(c.transport, TransportChoice::Auto);
        assert_eq!(c.staging_layout(), (1 << 20, 256));
        assert_eq!(c.conn_staging_slabs(), 64, "a quarter of the pool, one --max-read");
        assert_eq!(
            (c.write_timeout_secs, c.http_header_timeout_secs, c.http_max_connections),
            (30, 10, 256)
        );
        let missing = Config::from_args(["--dir", "/tmp", "--listen", "127.0.0.1:0"])
            .expect_err("no upstream");
        assert_eq!(missing.exit_code(), 2);
        assert!(Config::from_args(["--listen", "x:1", "--master", "m:1"]).is_err(), "no --dir");
    }

    #[test]
    fn validation_names_the_problem() {
        let base = ["--listen", "127.0.0.1:0", "--master", "127.0.0.1:9333"];
        let verbs = ["--dir", "/tmp", "--transport", "verbs", "--rdma-device", "rxe0"];
        let verbs = Config::from_args(verbs.iter().chain(&base)).expect("parses");
        assert!(verbs.validate().is_ok(), "the device is looked at when starting");
        assert_eq!(
            (verbs.transport, verbs.rdma_device.as_deref()),
            (TransportChoice::Verbs, Some("rxe0"))
        );
        let missing =
            Config::from_args(["--dir", "/no/such/dir"].iter().chain(&base)).expect("parses");
        assert!(missing.validate().expect_err("missing dir").to_string().contains("/no/such/dir"));
        let big = Config::from_args(
            ["--dir", "/tmp", "--max-read", "1000000000", "--staging-mib", "1"].iter().chain(&base),
        )
        .expect("parses");
        assert_eq!(big.staging_layout(), (1 << 20, 954));
        assert_eq!(big.conn_staging_slabs(), 954, "one --max-read fills the pool");
        let capped = Config::from_args(
            ["--dir", "/tmp", "--max-read", "1048576", "--conn-staging-mib", "8"]
                .iter()
                .chain(&base),
        )
        .expect("parses");
        assert_eq!(capped.conn_staging_slabs(), 8);
        let zero =
            Config::from_args(["--dir", "/tmp", "--http-max-connections", "0"].iter().chain(&base))
                .expect("parses");
        assert!(zero.validate().expect_err("no HTTP connections").to_string().contains("http"));
    }
}
