//! What this host can do for the verbs transport (the data behind `seaweed-rdma doctor`):
//! the library, devices, ports and GIDs, the locked-memory limit, soft-RoCE, FUSE, and in
//! plain sentences why RDMA cannot be used here when it cannot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Serialize;

use super::attrs::GidEntry;
use super::device::{device_names, Context, DeviceAttr, PortAttr, SYSFS_ROOT};
use super::error::VerbsError;
use super::gid::LinkLayer;
use super::loader::{Loader, LIBIBVERBS};
use super::slots::{check_memlock, has_cap_ipc_lock, MemlockLimit};

/// Registered memory the probe checks the memlock limit against: one client connection's
/// receive pool or a sidecar's staging pool at their default sizes, about 64 MiB. A client
/// registers one pool per verbs connection, so it needs a multiple of this; the engine (at
/// each connect) and the sidecar check their real sizes with [`check_memlock`].
pub const PROBE_PINNED_BYTES: u64 = 64 << 20;

/// Everything [`probe`] found.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// libibverbs.
    pub libibverbs: LibraryReport,
    /// Devices libibverbs lists, with their ports.
    pub devices: Vec<DeviceReport>,
    /// What the kernel side offers.
    pub kernel: KernelReport,
    /// The locked-memory limit.
    pub memlock: MemlockReport,
    /// FUSE, for the mount.
    pub fuse: FuseReport,
    /// Whether the verbs transport can run here.
    pub usable: bool,
    /// Why not, one sentence each (empty when usable).
    pub reasons: Vec<String>,
}

/// The userspace library.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryReport {
    /// The name loaded (`libibverbs.so.1`).
    pub name: String,
    /// Whether it loaded.
    pub present: bool,
    /// The file it came from.
    pub path: Option<String>,
    /// Its version, from the file name.
    pub version: Option<String>,
    /// Why it did not load, or why listing devices failed.
    pub error: Option<String>,
}

/// One device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// `mlx5_0`, `rxe0`, ...
    pub name: String,
    /// `ibv_query_device`, when the device could be opened and queried.
    pub attr: Option<DeviceAttr>,
    /// Its ports.
    pub ports: Vec<PortReport>,
    /// What failed while looking at it.
    pub error: Option<String>,
}

/// One port of a device.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// `ibv_query_port`.
    #[serde(flatten)]
    pub attr: PortAttr,
    /// Its non-empty GIDs with their RoCE types.
    pub gids: Vec<GidEntry>,
}

/// The kernel's side of RDMA.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    /// Devices under /sys/class/infiniband (seen even without libibverbs).
    pub sysfs_devices: Vec<String>,
    /// Whether /dev/infiniband (the uverbs character devices) exists.
    pub dev_infiniband: bool,
    /// Whether the soft-RoCE module is loaded (/sys/module/rdma_rxe).
    pub rdma_rxe_loaded: bool,
    /// Whether `modprobe -n rdma_rxe` succeeds; `None` when modprobe is not installed.
    pub rdma_rxe_loadable: Option<bool>,
}

/// `RLIMIT_MEMLOCK` against what the pools need.
#[derive(Debug, Clone, Serialize)]
pub struct MemlockReport {
    /// Soft limit in bytes (`None`: unlimited).
    pub soft: Option<u64>,
    /// Hard limit in bytes (`None`: unlimited).
    pub hard: Option<u64>,
    /// Whether the process has CAP_IPC_LOCK (the kernel then ignores the limit).
    pub cap_ipc_lock: bool,
    /// Bytes checked against ([`PROBE_PINNED_BYTES`]).
    pub needed: u64,
    /// Whether that much can be registered.
    pub enough: bool,
}

/// What the FUSE mount needs.
#[derive(Debug, Clone, Serialize)]
pub struct FuseReport {
    /// Whether /dev/fuse exists.
    pub dev_fuse: bool,
    /// Where fusermount3 is, if on PATH.
    pub fusermount3: Option<String>,
}

/// Looks at this host with the process-wide libibverbs. Never fails: what cannot be found
/// out is reported as such.
pub fn probe() -> HostReport {
    probe_with(LIBIBVERBS, PROBE_PINNED_BYTES)
}

/// [`probe`] with another library name (tests use a missing one) and memlock need.
pub fn probe_with(library: &str, needed: u64) -> HostReport {
    let loaded = if library == LIBIBVERBS {
        Loader::global()
    } else {
        Loader::open_named(library).map(Arc::new)
    };
    let (mut libibverbs, devices) = match &loaded {
        Ok(lib) => {
            let report = LibraryReport {
                name: library.to_owned(),
                present: true,
                path: lib.path().map(|p| p.display().to_string()),
                version: lib.version(),
                error: None,
            };
            (report, list_devices(lib))
        }
        Err(e) => {
            let report = LibraryReport {
                name: library.to_owned(),
                present: false,
                path: None,
                version: None,
                error: Some(e.to_string()),
            };
            (report, Ok(Vec::new()))
        }
    };
    let devices = devices.unwrap_or_else(|e| {
        libibverbs.error = Some(e.to_string());
        Vec::new()
    });
    let limit = MemlockLimit::current();
    let cap_ipc_lock = has_cap_ipc_lock();
    let memlock_error = check_memlock(needed, limit, cap_ipc_lock).err();
    let memlock = MemlockReport {
        soft: limit.soft,
        hard: limit.hard,
        cap_ipc_lock,
        needed,
        enough: memlock_error.is_none(),
    };
    let reasons = assess(&libibverbs, &devices, memlock_error.as_ref());
    HostReport {
        libibverbs,
        devices,
        kernel: kernel_report(Path::new(SYSFS_ROOT)),
        memlock,
        fuse: FuseReport {
            dev_fuse: Path::new("/dev/fuse").exists(),
            fusermount3: which("fusermount3").map(|p| p.display().to_string()),
        },
        usable: reasons.is_empty(),
        reasons,
    }
}

fn list_devices(lib: &Arc<Loader>) -> Result<Vec<DeviceReport>, VerbsError> {
    Ok(device_names(lib)?.into_iter().map(|name| device_report(lib, name)).collect())
}

fn device_report(lib: &Arc<Loader>, name: String) -> DeviceReport {
    let mut report = DeviceReport { name, attr: None, ports: Vec::new(), error: None };
    let ctx = match Context::open(Arc::clone(lib), Some(&report.name)) {
        Ok(ctx) => ctx,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let attr = match ctx.query_device() {
        Ok(attr) => attr,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    for port in 1..=attr.phys_port_cnt {
        match ctx.query_port(port) {
            Ok(p) => report.ports.push(PortReport { gids: ctx.gid_table(&p), attr: p }),
            Err(e) => report.error = Some(e.to_string()),
        }
    }
    report.attr = Some(attr);
    report
}

/// The sentences that say why RDMA cannot be used (none when it can).
fn assess(
    lib: &LibraryReport,
    devices: &[DeviceReport],
    memlock: Option<&VerbsError>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if !lib.present {
        reasons.push(lib.error.clone().unwrap_or_else(|| format!("{} not found", lib.name)));
    } else if devices.is_empty() {
        let why = match &lib.error {
            Some(e) => format!("the kernel offers no RDMA support here ({e})"),
            None => "ibv_get_device_list returned none".to_owned(),
        };
        reasons.push(format!(
            "no RDMA devices: {why}; add a soft-RoCE device with `sudo ci/rxe-setup.sh` \
             (needs the rdma_rxe kernel module) or install an RDMA NIC"
        ));
    } else if !devices.iter().any(|d| d.ports.iter().any(port_usable)) {
        let mut why = Vec::new();
        for d in devices {
            if let Some(e) = &d.error {
                why.push(format!("{}: {e}", d.name));
            }
            for p in &d.ports {
                if !p.attr.is_active() {
                    why.push(format!("{} port {} is {}", d.name, p.attr.port, p.attr.state));
                } else if !port_usable(p) {
                    why.push(format!("{} port {} has no GID (no IP address)", d.name, p.attr.port));
                }
            }
        }
        reasons.push(format!("no RDMA port is ACTIVE with an address: {}", why.join("; ")));
    }
    if let Some(e) = memlock {
        reasons.push(e.to_string());
    }
    reasons
}

/// ACTIVE, and on Ethernet with at least one GID (RoCE addresses by GID).
fn port_usable(p: &PortReport) -> bool {
    p.attr.is_active() && (p.attr.link_layer != LinkLayer::Ethernet || !p.gids.is_empty())
}

fn kernel_report(sysfs: &Path) -> KernelReport {
    let mut sysfs_devices: Vec<String> = std::fs::read_dir(sysfs)
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    sysfs_devices.sort();
    let loadable = Command::new("modprobe")
        .args(["-n", "rdma_rxe"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .map(|s| s.success());
    KernelReport {
        sysfs_devices,
        dev_infiniband: Path::new("/dev/infiniband").is_dir(),
        rdma_rxe_loaded: Path::new("/sys/module/rdma_rxe").exists(),
        rdma_rxe_loadable: loadable,
    }
}

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
