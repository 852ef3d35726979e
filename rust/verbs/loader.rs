//! Opens libibverbs at run time and resolves the exported verbs this crate calls.
//!
//! The extension must import and serve tcp on hosts without rdma-core, so it has no
//! link-time dependency on libibverbs: the library is `dlopen`ed on first use of the verbs
//! transport, and every function is looked up by name. The three hot-path verbs
//! (`ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq`) are inline functions in the header,
//! not exports; they are called through the context's `ops` table (see `qp.rs`, `cq.rs`).
//!
//! Symbols are looked up without a version, which gives each one's default version: the
//! `IBVERBS_1.1` ABI for every function used here (checked with `nm -D`). Two of them differ
//! from what the header's names suggest:
//! - `ibv_query_port` is a macro over an inline wrapper; the export of that name takes the
//!   older `_compat_ibv_port_attr`, a prefix of `ibv_port_attr`. We pass a zeroed full struct,
//!   as the wrapper itself does when the provider has no extended query.
//! - `ibv_reg_mr` is a macro that calls the exported `ibv_reg_mr` for constant access flags
//!   without `IBV_ACCESS_OPTIONAL_RANGE`, which is the only way it is used here.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libloading::Library;

use super::error::{VerbsError, VerbsResult};
use super::ffi::{
    IbvCompChannel, IbvContext, IbvCq, IbvDevice, IbvDeviceAttr, IbvGid, IbvMr, IbvPd, IbvPortAttr,
    IbvQp, IbvQpAttr, IbvQpInitAttr,
};

/// The soname the verbs transport loads (rdma-core's `libibverbs1` package).
pub const LIBIBVERBS: &str = "libibverbs.so.1";

/// The exported functions, resolved once per [`Loader`].
pub(crate) struct Fns {
    pub get_device_list: unsafe extern "C" fn(*mut c_int) -> *mut *mut IbvDevice,
    pub free_device_list: unsafe extern "C" fn(*mut *mut IbvDevice),
    pub get_device_name: unsafe extern "C" fn(*mut IbvDevice) -> *const c_char,
    pub open_device: unsafe extern "C" fn(*mut IbvDevice) -> *mut IbvContext,
    pub close_device: unsafe extern "C" fn(*mut IbvContext) -> c_int,
    pub query_device: unsafe extern "C" fn(*mut IbvContext, *mut IbvDeviceAttr) -> c_int,
    pub query_port: unsafe extern "C" fn(*mut IbvContext, u8, *mut IbvPortAttr) -> c_int,
    pub query_gid: unsafe extern "C" fn(*mut IbvContext, u8, c_int, *mut IbvGid) -> c_int,
    pub alloc_pd: unsafe extern "C" fn(*mut IbvContext) -> *mut IbvPd,
    pub dealloc_pd: unsafe extern "C" fn(*mut IbvPd) -> c_int,
    pub reg_mr: unsafe extern "C" fn(*mut IbvPd, *mut c_void, usize, c_int) -> *mut IbvMr,
    pub dereg_mr: unsafe extern "C" fn(*mut IbvMr) -> c_int,
    pub create_cq: unsafe extern "C" fn(
        *mut IbvContext,
        c_int,
        *mut c_void,
        *mut IbvCompChannel,
        c_int,
    ) -> *mut IbvCq,
    pub destroy_cq: unsafe extern "C" fn(*mut IbvCq) -> c_int,
    pub create_qp: unsafe extern "C" fn(*mut IbvPd, *mut IbvQpInitAttr) -> *mut IbvQp,
    pub modify_qp: unsafe extern "C" fn(*mut IbvQp, *mut IbvQpAttr, c_int) -> c_int,
    pub destroy_qp: unsafe extern "C" fn(*mut IbvQp) -> c_int,
    pub wc_status_str: unsafe extern "C" fn(c_uint) -> *const c_char,
}

/// A loaded libibverbs. Handles keep an `Arc` of it, so the library stays mapped for as
/// long as any resource made through it exists.
pub struct Loader {
    name: String,
    path: Option<PathBuf>,
    fns: Fns,
    // Last field: the function pointers above point into this mapping. It is never unloaded
    // before them (they are plain copies owned by the same struct).
    _lib: Library,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("name", &self.name).field("path", &self.path).finish()
    }
}

static GLOBAL: OnceLock<Arc<Loader>> = OnceLock::new();

impl Loader {
    /// The process-wide libibverbs, loaded on first success. A failure is not remembered,
    /// so installing rdma-core later works without restarting the process.
    ///
    /// # Errors
    /// [`VerbsError::LibraryMissing`] or [`VerbsError::MissingSymbol`], as [`Loader::open_named`].
    pub fn global() -> VerbsResult<Arc<Loader>> {
        if let Some(loader) = GLOBAL.get() {
            return Ok(Arc::clone(loader));
        }
        let loaded = Arc::new(Loader::open_named(LIBIBVERBS)?);
        // Two threads may both load it; the loser's copy is dropped (dlopen is refcounted).
        Ok(Arc::clone(GLOBAL.get_or_init(|| loaded)))
    }

    /// Loads the library `name` (a soname or a path) and resolves every function used.
    ///
    /// # Errors
    /// [`VerbsError::LibraryMissing`] when it cannot be loaded, [`VerbsError::MissingSymbol`]
    /// when it lacks one of the functions.
    pub fn open_named(name: &str) -> VerbsResult<Loader> {
        // SAFETY: loading libibverbs runs its ELF constructors, which only set up internal
        // tables (no threads, no signal handlers); any other library named here is the
        // caller's (tests name only missing ones).
        let lib = unsafe { Library::new(name) }.map_err(|e| VerbsError::LibraryMissing {
            name: name.to_owned(),
            detail: e.to_string(),
        })?;
        let fns = resolve(&lib, name)?;
        let path = library_path(fns.get_device_list as *const c_void);
        Ok(Loader { name: name.to_owned(), path, fns, _lib: lib })
    }

    /// The name it was loaded by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file the dynamic loader picked (symlinks resolved), when it can be found.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The library's version from its file name (`libibverbs.so.1.14.44.0` -> `1.14.44.0`).
    pub fn version(&self) -> Option<String> {
        let file = self.path.as_ref()?.file_name()?.to_str()?;
        file.split_once(".so.").map(|(_, version)| version.to_owned())
    }

    pub(crate) fn fns(&self) -> &Fns {
        &self.fns
    }

    /// `ibv_wc_status_str` of a completion status.
    pub fn status_str(&self, status: u32) -> String {
        // SAFETY: ibv_wc_status_str accepts any value and returns a pointer to a static
        // string ("unknown" for values it does not know); it never returns null, but a
        // null is handled anyway.
        let text = unsafe { (self.fns.wc_status_str)(status) };
        if text.is_null() {
            return format!("status {status}");
        }
        // SAFETY: non-null, NUL-terminated, static storage (see above).
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
}

/// Looks one function up and copies the pointer out of the symbol.
///
/// # Safety
/// `T` must be the function-pointer type of the C function `symbol` in this library.
unsafe fn get<T: Copy>(lib: &Library, library: &str, symbol: &'static str) -> VerbsResult<T> {
    // SAFETY: the caller guarantees that T matches the symbol's real type.
    let found = unsafe { lib.get::<T>(symbol.as_bytes()) };
    match found {
        Ok(sym) => Ok(*sym),
        Err(e) => Err(VerbsError::MissingSymbol {
            library: library.to_owned(),
            symbol,
            detail: e.to_string(),
        }),
    }
}

fn resolve(lib: &Library, name: &str) -> VerbsResult<Fns> {
    // SAFETY: for every `get` below, each type is written from the prototype of the same
    // name in <infiniband/verbs.h> (rdma-core 1.1 ABI), with the ffi.rs mirrors of its
    // structs; `ffi_layout_tests.rs` checks those layouts against bindgen's.
    unsafe {
        Ok(Fns {
            get_device_list: get(lib, name, "ibv_get_device_list")?,
            free_device_list: get(lib, name, "ibv_free_device_list")?,
            get_device_name: get(lib, name, "ibv_get_device_name")?,
            open_device: get(lib, name, "ibv_open_device")?,
            close_device: get(lib, name, "ibv_close_device")?,
            query_device: get(lib, name, "ibv_query_device")?,
            query_port: get(lib, name, "ibv_query_port")?,
            query_gid: get(lib, name, "ibv_query_gid")?,
            alloc_pd: get(lib, name, "ibv_alloc_pd")?,
            dealloc_pd: get(lib, name, "ibv_dealloc_pd")?,
            reg_mr: get(lib, name, "ibv_reg_mr")?,
            dereg_mr: get(lib, name, "ibv_dereg_mr")?,
            create_cq: get(lib, name, "ibv_create_cq")?,
            destroy_cq: get(lib, name, "ibv_destroy_cq")?,
            create_qp: get(lib, name, "ibv_create_qp")?,
            modify_qp: get(lib, name, "ibv_modify_qp")?,
            destroy_qp: get(lib, name, "ibv_destroy_qp")?,
            wc_status_str: get(lib, name, "ibv_wc_status_str")?,
        })
    }
}

/// The file that holds `addr`, via `dladdr`, with symlinks resolved.
fn library_path(addr: *const c_void) -> Option<PathBuf> {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables and fills `info`; `addr` is a function
    // in a library that is loaded for as long as this call runs.
    let found = unsafe { libc::dladdr(addr, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the dynamic loader, valid while
    // the library stays loaded; it is copied at once.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    let file = PathBuf::from(file);
    Some(std::fs::canonicalize(&file).unwrap_or(file))
}
