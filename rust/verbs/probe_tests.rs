use super::*;
use crate::verbs::gid::GidKind;

fn lib(present: bool, error: Option<&str>) -> LibraryReport {
    LibraryReport {
        name: LIBIBVERBS.into(),
        present,
        path: None,
        version: None,
        error: error.map(str::to_owned),
    }
}

fn port(state: &'static str, link_layer: LinkLayer, gids: usize) -> PortReport {
    let gid = |index| GidEntry {
        index,
        gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        kind: GidKind::RoceV2,
        netdev: None,
    };
    PortReport {
        attr: PortAttr {
            port: 1,
            state,
            link_layer,
            active_mtu: 3,
            max_mtu: 5,
            lid: 0,
            gid_tbl_len: 16,
        },
        gids: (0..gids as u32).map(gid).collect(),
    }
}

fn device(ports: Vec<PortReport>) -> DeviceReport {
    DeviceReport { name: "rxe0".into(), attr: None, ports, error: None }
}

#[test]
fn reasons_name_what_is_missing() {
    let missing = assess(&lib(false, Some("libibverbs.so.1 not found: install ...")), &[], None);
    assert_eq!(missing.len(), 1);
    assert!(missing[0].contains("not found"), "{missing:?}");

    let enosys =
        assess(&lib(true, Some("ibv_get_device_list: Function not implemented")), &[], None);
    assert!(enosys[0].contains("no RDMA devices") && enosys[0].contains("kernel"), "{enosys:?}");
    assert!(enosys[0].contains("rxe-setup.sh"), "{enosys:?}");

    let down =
        assess(&lib(true, None), &[device(vec![port("DOWN", LinkLayer::Ethernet, 1)])], None);
    assert!(down[0].contains("rxe0 port 1 is DOWN"), "{down:?}");

    let no_ip =
        assess(&lib(true, None), &[device(vec![port("ACTIVE", LinkLayer::Ethernet, 0)])], None);
    assert!(no_ip[0].contains("no GID"), "{no_ip:?}");

    let ib = [device(vec![port("ACTIVE", LinkLayer::InfiniBand, 0)])];
    assert!(assess(&lib(true, None), &ib, None).is_empty(), "IB needs no GID");
    let roce = [device(vec![port("ACTIVE", LinkLayer::Ethernet, 2)])];
    assert!(assess(&lib(true, None), &roce, None).is_empty());

    let low = VerbsError::Memlock { needed: 64 << 20, limit: 8 << 20 };
    let memlock = assess(&lib(true, None), &roce, Some(&low));
    assert_eq!(memlock.len(), 1);
    assert!(memlock[0].contains("ulimit -l"), "{memlock:?}");
}

#[test]
fn a_missing_library_is_reported_not_raised() {
    let report = probe_with("libibverbs-definitely-missing.so.1", 0);
    assert!(!report.libibverbs.present);
    assert!(!report.usable);
    assert!(report.devices.is_empty());
    assert!(report.reasons[0].contains("install rdma-core"), "{:?}", report.reasons);
    assert!(report.memlock.enough, "nothing needed");
}

/// On hosts with libibverbs and no RDMA (this project's dev machines and CI): present, no
/// devices, not usable, and the reason says so. Elsewhere, only that the report holds
/// together.
#[test]
fn probe_reports_this_host() {
    let report = probe();
    let json = serde_json::to_value(&report).expect("serializes");
    for key in ["libibverbs", "devices", "kernel", "memlock", "fuse", "usable", "reasons"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(report.usable, report.reasons.is_empty());
    let rdma_here =
        Path::new(SYSFS_ROOT).exists() || std::env::var_os("SEAWEED_RDMA_DEVICE").is_some();
    if !report.libibverbs.present || rdma_here {
        eprintln!("note: libibverbs missing or RDMA present here; skipping the no-device checks");
        return;
    }
    assert!(report.libibverbs.path.is_some(), "{:?}", report.libibverbs);
    assert!(report.devices.is_empty());
    assert!(!report.usable);
    assert!(report.reasons.iter().any(|r| r.contains("no RDMA devices")), "{:?}", report.reasons);
}
