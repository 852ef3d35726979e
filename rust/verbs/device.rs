//! Devices: listing them, opening one (`Context`), querying its ports and GID tables, and
//! allocating a protection domain.

use std::ffi::CStr;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use serde::Serialize;

use super::attrs::{choose_gid, GidEntry, LocalPort};
use super::error::{from_ret, last_os_error, VerbsError, VerbsResult};
use super::ffi::{self, IbvContext, IbvDevice, IbvDeviceAttr, IbvGid, IbvPd, IbvPortAttr};
use super::gid::{GidKind, LinkLayer};
use super::loader::Loader;

/// Where the kernel describes RDMA devices (GID types and netdevs live here).
pub const SYSFS_ROOT: &str = "/sys/class/infiniband";

/// The result of `ibv_get_device_list`, freed on drop.
struct DeviceList<'l> {
    lib: &'l Loader,
    list: NonNull<*mut IbvDevice>,
    len: usize,
}

impl<'l> DeviceList<'l> {
    fn get(lib: &'l Loader) -> VerbsResult<DeviceList<'l>> {
        let mut n: std::os::raw::c_int = 0;
        // SAFETY: ibv_get_device_list writes the count to `n` and returns a NULL-terminated
        // array it owns until ibv_free_device_list, or NULL with errno set.
        let list = unsafe { (lib.fns().get_device_list)(&mut n) };
        let list = NonNull::new(list).ok_or_else(|| VerbsError::GetDeviceList(last_os_error()))?;
        Ok(DeviceList { lib, list, len: usize::try_from(n).unwrap_or(0) })
    }

    fn devices(&self) -> impl Iterator<Item = *mut IbvDevice> + '_ {
        // SAFETY: the array holds `len` device pointers (then a NULL) while `self` lives.
        (0..self.len).map(move |i| unsafe { *self.list.as_ptr().add(i) })
    }

    fn name(&self, dev: *mut IbvDevice) -> String {
        // SAFETY: `dev` comes from this list, which is still allocated; the name is a
        // NUL-terminated string inside the device struct, copied at once.
        let name = unsafe { (self.lib.fns().get_device_name)(dev) };
        if name.is_null() {
            return String::from("?");
        }
        // SAFETY: non-null and NUL-terminated (see above).
        unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
    }
}

impl Drop for DeviceList<'_> {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed exactly once; opened
        // contexts stay valid after it is freed (only unopened device pointers do not).
        unsafe { (self.lib.fns().free_device_list)(self.list.as_ptr()) }
    }
}

/// Names of the RDMA devices libibverbs sees (`mlx5_0`, `rxe0`, ...).
///
/// # Errors
/// [`VerbsError::GetDeviceList`]: with ENOSYS when the kernel has no RDMA support.
pub fn device_names(lib: &Loader) -> VerbsResult<Vec<String>> {
    let list = DeviceList::get(lib)?;
    Ok(list.devices().map(|d| list.name(d)).collect())
}

pub(crate) struct ContextInner {
    pub(crate) lib: Arc<Loader>,
    pub(crate) ptr: NonNull<IbvContext>,
    name: String,
}

// SAFETY: libibverbs objects may be used from any thread (the library and its providers
// lock what they share); the pointer is only freed in Drop, when no clone is left.
unsafe impl Send for ContextInner {}
// SAFETY: as above; every method takes `&self` and calls thread-safe verbs.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // SAFETY: opened by ibv_open_device, closed once; every PD, CQ and QP made from it
        // holds an Arc of this inner, so all of them are gone already.
        unsafe { (self.lib.fns().close_device)(self.ptr.as_ptr()) };
    }
}

/// An open RDMA device (`struct ibv_context`). Cheap to clone; closed when the last clone
/// and the last resource made from it are dropped.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("name", &self.inner.name).finish()
    }
}

/// What `ibv_query_device` says, in the units this crate uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceAttr {
    /// Firmware version.
    pub fw_ver: String,
    /// Node GUID (as the device reports it, big-endian in memory).
    pub node_guid: String,
    /// PCI vendor id.
    pub vendor_id: u32,
    /// Vendor part id.
    pub vendor_part_id: u32,
    /// Most queue pairs.
    pub max_qp: i32,
    /// Most work requests per queue.
    pub max_qp_wr: i32,
    /// Most scatter/gather entries per work request.
    pub max_sge: i32,
    /// Most entries per completion queue.
    pub max_cqe: i32,
    /// Largest memory region.
    pub max_mr_size: u64,
    /// Physical ports (numbered from 1).
    pub phys_port_cnt: u8,
}

/// What `ibv_query_port` says about one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortAttr {
    /// Port number.
    pub port: u8,
    /// `DOWN`, `INIT`, `ARMED`, `ACTIVE`, ...
    pub state: &'static str,
    /// InfiniBand or Ethernet (RoCE).
    pub link_layer: LinkLayer,
    /// Active MTU code (1 = 256 .. 5 = 4096).
    pub active_mtu: u8,
    /// Largest MTU code the port supports.
    pub max_mtu: u8,
    /// LID (InfiniBand).
    pub lid: u16,
    /// GID table length.
    pub gid_tbl_len: u32,
}

impl PortAttr {
    /// Whether the port can carry traffic.
    pub fn is_active(&self) -> bool {
        self.state == "ACTIVE"
    }
}

fn port_state(state: u32) -> &'static str {
    match state {
        ffi::IBV_PORT_DOWN => "DOWN",
        ffi::IBV_PORT_INIT => "INIT",
        ffi::IBV_PORT_ARMED => "ARMED",
        ffi::IBV_PORT_ACTIVE => "ACTIVE",
        ffi::IBV_PORT_ACTIVE_DEFER => "ACTIVE_DEFER",
        _ => "NOP",
    }
}

impl Context {
    /// Opens the device called `name`, or the first one when `name` is `None`.
    ///
    /// # Errors
    /// [`VerbsError::GetDeviceList`], [`VerbsError::NoDevices`],
    /// [`VerbsError::NoSuchDevice`] or [`VerbsError::OpenDevice`].
    pub fn open(lib: Arc<Loader>, name: Option<&str>) -> VerbsResult<Context> {
        let list = DeviceList::get(&lib)?;
        let named: Vec<(String, *mut IbvDevice)> =
            list.devices().map(|d| (list.name(d), d)).collect();
        let found = match name {
            None => named.first().ok_or(VerbsError::NoDevices)?,
            Some(want) => named.iter().find(|(n, _)| n == want).ok_or_else(|| {
                let found: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
                VerbsError::NoSuchDevice { wanted: want.to_owned(), found: found.join(", ") }
            })?,
        };
        // SAFETY: the device pointer comes from the list, which is still allocated.
        let ctx = unsafe { (lib.fns().open_device)(found.1) };
        let ptr = NonNull::new(ctx).ok_or_else(|| VerbsError::OpenDevice {
            device: found.0.clone(),
            source: last_os_error(),
        })?;
        let name = found.0.clone();
        drop(list);
        Ok(Context { inner: Arc::new(ContextInner { lib, ptr, name }) })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn raw(&self) -> *mut IbvContext {
        self.inner.ptr.as_ptr()
    }

    /// `ibv_query_device`.
    ///
    /// # Errors
    /// [`VerbsError::QueryDevice`].
    pub fn query_device(&self) -> VerbsResult<DeviceAttr> {
        // SAFETY: IbvDeviceAttr is plain integers, for which all-zero is a valid value.
        let mut a: IbvDeviceAttr = unsafe { std::mem::zeroed() };
        // SAFETY: an open context and a complete, writable ibv_device_attr.
        let rc = unsafe { (self.inner.lib.fns().query_device)(self.raw(), &mut a) };
        if rc != 0 {
            return Err(VerbsError::QueryDevice(from_ret(rc)));
        }
        let fw: Vec<u8> = a.fw_ver.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        Ok(DeviceAttr {
            fw_ver: String::from_utf8_lossy(&fw).into_owned(),
            node_guid: format!("{:016x}", u64::from_be(a.node_guid)),
            vendor_id: a.vendor_id,
            vendor_part_id: a.vendor_part_id,
            max_qp: a.max_qp,
            max_qp_wr: a.max_qp_wr,
            max_sge: a.max_sge,
            max_cqe: a.max_cqe,
            max_mr_size: a.max_mr_size,
            phys_port_cnt: a.phys_port_cnt,
        })
    }

    /// `ibv_query_port` for port `port` (from 1).
    ///
    /// # Errors
    /// [`VerbsError::QueryPort`].
    pub fn query_port(&self, port: u8) -> VerbsResult<PortAttr> {
        // Zeroed and full-sized: the export fills the older prefix (see loader.rs).
        let mut a = IbvPortAttr::default();
        // SAFETY: an open context and a complete, writable ibv_port_attr.
        let rc = unsafe { (self.inner.lib.fns().query_port)(self.raw(), port, &mut a) };
        if rc != 0 {
            return Err(VerbsError::QueryPort { port, source: from_ret(rc) });
        }
        let code = |m: u32| u8::try_from(m).unwrap_or(0);
        Ok(PortAttr {
            port,
            state: port_state(a.state),
            link_layer: LinkLayer::from_raw(a.link_layer),
            active_mtu: code(a.active_mtu),
            max_mtu: code(a.max_mtu),
            lid: a.lid,
            gid_tbl_len: u32::try_from(a.gid_tbl_len).unwrap_or(0),
        })
    }

    /// `ibv_query_gid`: the GID at `index` of port `port`'s table.
    ///
    /// # Errors
    /// [`VerbsError::QueryGid`].
    pub fn query_gid(&self, port: u8, index: u32) -> VerbsResult<[u8; 16]> {
        let err = |source| VerbsError::QueryGid { port, index, source };
        let idx = i32::try_from(index).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
        let mut gid = IbvGid::default();
        // SAFETY: an open context and a writable 16-byte, 8-aligned union ibv_gid.
        let rc = unsafe { (self.inner.lib.fns().query_gid)(self.raw(), port, idx, &mut gid) };
        if rc != 0 {
            return Err(err(from_ret(rc)));
        }
        Ok(gid.raw)
    }

    /// The port's non-empty GIDs, each with its kind and netdev from sysfs.
    pub fn gid_table(&self, port: &PortAttr) -> Vec<GidEntry> {
        // Tables can be long (hardware reports 128..256 entries, mostly empty); an entry
        // that cannot be read is skipped like an empty one.
        (0..port.gid_tbl_len)
            .filter_map(|index| {
                let gid = self.query_gid(port.port, index).ok()?;
                (gid != [0; 16]).then(|| {
                    let attr =
                        |what| gid_attr(Path::new(SYSFS_ROOT), self.name(), port.port, what, index);
                    GidEntry {
                        index,
                        gid,
                        kind: GidKind::from_sysfs(port.link_layer, attr("types").as_deref()),
                        netdev: attr("ndevs"),
                    }
                })
            })
            .collect()
    }

    /// The port and GID to connect through: `port` if given, else the first ACTIVE port;
    /// on Ethernet the GID chosen by [`choose_gid`] (of kind `prefer` when the peer's is known).
    ///
    /// # Errors
    /// [`VerbsError::NoUsablePort`] naming why each port was passed over, or a query error.
    pub fn local_port(&self, port: Option<u8>, prefer: Option<GidKind>) -> VerbsResult<LocalPort> {
        let ports: Vec<u8> = match port {
            Some(p) => vec![p],
            None => (1..=self.query_device()?.phys_port_cnt).collect(),
        };
        let mut why = Vec::new();
        for p in ports {
            let attr = self.query_port(p)?;
            if !attr.is_active() {
                why.push(format!("port {p} is {}", attr.state));
                continue;
            }
            let gids = self.gid_table(&attr);
            let gid = choose_gid(&gids, prefer).cloned();
            if attr.link_layer == LinkLayer::Ethernet && gid.is_none() {
                why.push(format!("port {p} (Ethernet) has no GID: give its netdev an IP address"));
                continue;
            }
            return Ok(LocalPort {
                port_num: p,
                link_layer: attr.link_layer,
                active_mtu: attr.active_mtu,
                lid: attr.lid,
                gid,
            });
        }
        let reason = if why.is_empty() { "it has no ports".to_owned() } else { why.join("; ") };
        Err(VerbsError::NoUsablePort { device: self.name().to_owned(), reason })
    }

    /// `ibv_alloc_pd`.
    ///
    /// # Errors
    /// [`VerbsError::AllocPd`].
    pub fn alloc_pd(&self) -> VerbsResult<ProtectionDomain> {
        // SAFETY: an open context.
        let pd = unsafe { (self.inner.lib.fns().alloc_pd)(self.raw()) };
        let ptr = NonNull::new(pd).ok_or_else(|| VerbsError::AllocPd(last_os_error()))?;
        Ok(ProtectionDomain { inner: Arc::new(PdInner { ctx: Arc::clone(&self.inner), ptr }) })
    }
}

/// One line of sysfs `gid_attrs/<what>/<index>`, trimmed; `None` when absent or empty.
pub(crate) fn gid_attr(root: &Path, dev: &str, port: u8, what: &str, index: u32) -> Option<String> {
    let path = root.join(dev).join("ports").join(port.to_string()).join("gid_attrs");
    let text = std::fs::read_to_string(path.join(what).join(index.to_string())).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

pub(crate) struct PdInner {
    pub(crate) ctx: Arc<ContextInner>,
    pub(crate) ptr: NonNull<IbvPd>,
}

// SAFETY: see ContextInner; a PD is only read by the library, which locks as needed.
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: allocated by ibv_alloc_pd, freed once; MRs and QPs made in it hold an Arc
        // of this inner, so they are gone already (dealloc would fail with EBUSY otherwise).
        unsafe { (self.ctx.lib.fns().dealloc_pd)(self.ptr.as_ptr()) };
    }
}

/// A protection domain (`struct ibv_pd`): memory regions and queue pairs in one PD may be
/// used together. Cheap to clone; keeps its device open.
#[derive(Clone)]
pub struct ProtectionDomain {
    pub(crate) inner: Arc<PdInner>,
}

impl std::fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectionDomain").field("device", &self.inner.ctx.name).finish()
    }
}

impl ProtectionDomain {
    /// The device it belongs to.
    pub fn context(&self) -> Context {
        Context { inner: Arc::clone(&self.inner.ctx) }
    }
}
