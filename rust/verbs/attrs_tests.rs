use super::*;

fn gid(kind: GidKind, index: u32, text: &str) -> GidEntry {
    let addr: Ipv6Addr = text.parse().expect("test GID");
    GidEntry { index, gid: addr.octets(), kind, netdev: Some("eth0".into()) }
}

fn roce_port() -> LocalPort {
    LocalPort {
        port_num: 1,
        link_layer: LinkLayer::Ethernet,
        active_mtu: 5,
        lid: 0,
        gid: Some(gid(GidKind::RoceV2, 3, "::ffff:192.0.2.1")),
    }
}

fn remote(mtu: u8) -> Endpoint {
    Endpoint {
        qpn: 0x1234,
        psn: 0x00ab_cdef,
        gid: "::ffff:192.0.2.2".parse::<Ipv6Addr>().expect("gid").octets(),
        lid: 0,
        mtu,
        gid_kind: GidKind::RoceV2,
    }
}

#[test]
fn gid_preference() {
    let table = vec![
        gid(GidKind::RoceV1, 0, "fe80::1"),
        gid(GidKind::RoceV2, 1, "fe80::1"),
        gid(GidKind::RoceV1, 2, "::ffff:192.0.2.1"),
        gid(GidKind::RoceV2, 3, "::ffff:192.0.2.1"),
        gid(GidKind::RoceV2, 4, "2001:db8::1"),
        GidEntry { index: 5, gid: [0; 16], kind: GidKind::RoceV2, netdev: None },
    ];
    assert_eq!(choose_gid(&table, None).map(|g| g.index), Some(3), "v2, IPv4-mapped");
    assert_eq!(choose_gid(&table, Some(GidKind::RoceV1)).map(|g| g.index), Some(2));
    assert_eq!(choose_gid(&table[..2], None).map(|g| g.index), Some(1), "v2 even link-local");
    assert_eq!(choose_gid(&table[4..], None).map(|g| g.index), Some(4), "zero GIDs skipped");
    assert_eq!(choose_gid(&table[5..], None), None);
    // A preference nobody matches falls back to the usual order.
    assert_eq!(choose_gid(&table, Some(GidKind::Ib)).map(|g| g.index), Some(3));
}

#[test]
fn gid_kinds_from_sysfs() {
    assert_eq!(GidKind::from_sysfs(LinkLayer::Ethernet, Some("RoCE v2\n")), GidKind::RoceV2);
    assert_eq!(GidKind::from_sysfs(LinkLayer::Ethernet, Some("IB/RoCE v1\n")), GidKind::RoceV1);
    assert_eq!(GidKind::from_sysfs(LinkLayer::InfiniBand, Some("IB/RoCE v1")), GidKind::Ib);
    assert_eq!(GidKind::from_sysfs(LinkLayer::Ethernet, None), GidKind::Unknown);
    for k in [GidKind::Unknown, GidKind::Ib, GidKind::RoceV1, GidKind::RoceV2] {
        assert_eq!(GidKind::from_wire(k as u8), Some(k));
    }
    assert_eq!(GidKind::from_wire(4), None);
    assert_eq!(format_gid(&roce_port().gid.expect("gid").gid), "::ffff:192.0.2.1");
}

#[test]
fn mtus() {
    assert_eq!(mtu_bytes(1), Some(256));
    assert_eq!(mtu_bytes(5), Some(4096));
    assert_eq!(mtu_bytes(0), None);
    assert_eq!(mtu_bytes(6), None);
    assert_eq!(path_mtu(5, 3), 3);
    assert_eq!(path_mtu(2, 4), 2);
}

#[test]
fn init_sets_port_and_access_by_role() {
    let client = to_init(2, Role::Client);
    assert_eq!(client.attr.qp_state, ffi::IBV_QPS_INIT);
    assert_eq!(client.attr.port_num, 2);
    assert_eq!(client.attr.pkey_index, 0);
    assert_eq!(
        client.attr.qp_access_flags,
        ffi::IBV_ACCESS_LOCAL_WRITE | ffi::IBV_ACCESS_REMOTE_WRITE
    );
    assert_eq!(client.attr.qp_access_flags & ffi::IBV_ACCESS_REMOTE_READ, 0, "no remote reads");
    assert_eq!(client.mask, 0b11_1001, "STATE | ACCESS_FLAGS | PKEY_INDEX | PORT");
    assert_eq!(to_init(1, Role::Server).attr.qp_access_flags, 0, "the sidecar exposes nothing");
}

#[test]
fn rtr_on_roce_uses_a_grh_and_the_smaller_mtu() {
    let t = to_rtr(&roce_port(), &remote(3)).expect("rtr");
    let a = t.attr;
    assert_eq!(a.qp_state, ffi::IBV_QPS_RTR);
    assert_eq!(a.path_mtu, 3, "min(4096, 1024)");
    assert_eq!((a.dest_qp_num, a.rq_psn), (0x1234, 0x00ab_cdef));
    assert_eq!(a.min_rnr_timer, MIN_RNR_TIMER);
    assert_eq!(a.max_dest_rd_atomic, 1);
    assert_eq!(a.ah_attr.is_global, 1);
    assert_eq!(a.ah_attr.grh.dgid.raw, remote(3).gid);
    assert_eq!(a.ah_attr.grh.sgid_index, 3);
    assert_eq!(a.ah_attr.grh.hop_limit, HOP_LIMIT);
    assert_eq!(a.ah_attr.port_num, 1);
    let required = ffi::IBV_QP_STATE
        | ffi::IBV_QP_AV
        | ffi::IBV_QP_PATH_MTU
        | ffi::IBV_QP_DEST_QPN
        | ffi::IBV_QP_RQ_PSN
        | ffi::IBV_QP_MAX_DEST_RD_ATOMIC
        | ffi::IBV_QP_MIN_RNR_TIMER;
    assert_eq!(t.mask, required);
    assert_eq!(to_rtr(&roce_port(), &remote(5)).expect("rtr").attr.path_mtu, 5);
}

#[test]
fn rtr_on_infiniband_routes_by_lid() {
    let port = LocalPort {
        port_num: 1,
        link_layer: LinkLayer::InfiniBand,
        active_mtu: 4,
        lid: 7,
        gid: None,
    };
    let peer = Endpoint { lid: 9, gid: [0; 16], gid_kind: GidKind::Unknown, ..remote(5) };
    let a = to_rtr(&port, &peer).expect("rtr").attr;
    assert_eq!((a.ah_attr.is_global, a.ah_attr.dlid, a.path_mtu), (0, 9, 4));
    let no_lid = Endpoint { lid: 0, ..peer };
    assert!(to_rtr(&port, &no_lid).is_err(), "no LID and no GID: cannot be addressed");
}

#[test]
fn rtr_refuses_what_cannot_connect() {
    let no_gid = LocalPort { gid: None, ..roce_port() };
    assert!(to_rtr(&no_gid, &remote(3)).is_err());
    let peer_without_gid = Endpoint { gid: [0; 16], ..remote(3) };
    assert!(to_rtr(&roce_port(), &peer_without_gid).is_err());
    assert!(to_rtr(&roce_port(), &Endpoint { qpn: 1 << 24, ..remote(3) }).is_err());
    assert!(to_rtr(&roce_port(), &remote(0)).is_err());
}

#[test]
fn rts_retries_are_bounded() {
    let t = to_rts(0x0100_0005);
    assert_eq!(t.attr.qp_state, ffi::IBV_QPS_RTS);
    assert_eq!(t.attr.sq_psn, 5, "24 bits");
    assert_eq!((t.attr.timeout, t.attr.retry_cnt), (ACK_TIMEOUT, RETRY_CNT));
    assert!(t.attr.rnr_retry < 7, "7 would retry forever");
    assert_eq!(t.attr.max_rd_atomic, 1);
    let mask = ffi::IBV_QP_STATE
        | ffi::IBV_QP_SQ_PSN
        | ffi::IBV_QP_TIMEOUT
        | ffi::IBV_QP_RETRY_CNT
        | ffi::IBV_QP_RNR_RETRY
        | ffi::IBV_QP_MAX_QP_RD_ATOMIC;
    assert_eq!(t.mask, mask);
}

#[test]
fn endpoints_and_psns() {
    let ep = roce_port().endpoint(0x42, 0x99);
    assert_eq!((ep.qpn, ep.psn, ep.mtu, ep.lid), (0x42, 0x99, 5, 0));
    assert_eq!(ep.gid_kind, GidKind::RoceV2);
    assert!(random_psn() <= MAX_24BIT);
}
