//! Loader behaviour with and without the library, and the extension's link-time
//! independence from libibverbs.

use std::path::PathBuf;
use std::process::Command;

use super::*;

#[test]
fn a_missing_library_gives_the_install_hint() {
    let err = Loader::open_named("libibverbs-definitely-missing.so.1").expect_err("missing");
    assert!(matches!(err, VerbsError::LibraryMissing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "libibverbs-definitely-missing.so.1 not found: install rdma-core / libibverbs1 to \
             use the verbs transport; tcp works without it"
        ),
        "{text}"
    );
    // And it converts into the crate's error for callers above this layer.
    let crate_err: crate::Error = err.into();
    assert!(crate_err.to_string().contains("install rdma-core"), "{crate_err}");
}

#[test]
fn a_library_without_the_verbs_names_the_missing_symbol() {
    // libc is always there and exports no ibv_* function.
    let err = Loader::open_named("libc.so.6").expect_err("not libibverbs");
    match err {
        VerbsError::MissingSymbol { symbol, .. } => assert_eq!(symbol, "ibv_get_device_list"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_installed_library_loads_with_its_path_and_version() {
    let Ok(lib) = Loader::global() else {
        eprintln!("note: {LIBIBVERBS} is not installed here; nothing to load");
        return;
    };
    let path = lib.path().expect("dladdr finds the file");
    assert!(path.to_string_lossy().contains("libibverbs"), "{path:?}");
    let version = lib.version().unwrap_or_default();
    assert!(version.starts_with('1'), "{version:?} from {path:?}");
    assert_eq!(lib.status_str(0), "success");
    // Listing devices works or fails cleanly (ENOSYS without kernel support).
    match device_names(&lib) {
        Ok(names) => eprintln!("devices: {names:?}"),
        Err(e) => assert!(matches!(e, VerbsError::GetDeviceList(_)), "{e:?}"),
    }
}

/// The built extension (`target/<profile>/libseaweed_rdma.so`) must not need libibverbs:
/// `import seaweed_rdma` has to work on hosts without rdma-core.
#[test]
fn the_extension_does_not_link_libibverbs() {
    // The test binary runs from target/<profile>/deps/.
    let Some(dir) =
        std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.to_owned()))
    else {
        eprintln!("note: cannot locate the target directory; skipping the readelf check");
        return;
    };
    let so: PathBuf = dir.join("libseaweed_rdma.so");
    if !so.exists() {
        eprintln!("note: {} is not built (cargo test --lib skips it); skipping", so.display());
        return;
    }
    let out = match Command::new("readelf").arg("-d").arg(&so).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            panic!("readelf -d {} failed: {}", so.display(), String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => {
            eprintln!("note: readelf is not available ({e}); skipping the NEEDED check");
            return;
        }
    };
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(!needed.is_empty(), "readelf shows no NEEDED entries at all:\n{dynamic}");
    for line in &needed {
        assert!(!line.contains("libibverbs") && !line.contains("librdmacm"), "{line}");
    }
}
