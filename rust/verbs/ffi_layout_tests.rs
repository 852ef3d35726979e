//! Our hand-written `#[repr(C)]` mirrors against the bindgen output of `rdma-sys` (built
//! from this machine's `<infiniband/verbs.h>`): sizes, alignments, every field offset we
//! use, and every constant.

use std::mem::{align_of, offset_of, size_of};

use rdma_sys as sys;

use super::ffi::*;

/// Same size and alignment.
macro_rules! same_layout {
    ($ours:ty, $theirs:ty) => {
        assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), "size of {}", stringify!($ours));
        assert_eq!(align_of::<$ours>(), align_of::<$theirs>(), "align of {}", stringify!($ours));
    };
}

/// Same offset for each named field (ours first, then theirs).
macro_rules! same_offsets {
    ($ours:ty, $theirs:ty, $($of:ident = $tf:ident),+ $(,)?) => {
        $(
            assert_eq!(
                offset_of!($ours, $of),
                offset_of!($theirs, $tf),
                "offset of {}.{}",
                stringify!($ours),
                stringify!($of)
            );
        )+
    };
}

#[test]
fn complete_structs_match() {
    same_layout!(IbvDeviceAttr, sys::ibv_device_attr);
    same_offsets!(
        IbvDeviceAttr,
        sys::ibv_device_attr,
        fw_ver = fw_ver,
        node_guid = node_guid,
        max_mr_size = max_mr_size,
        vendor_id = vendor_id,
        vendor_part_id = vendor_part_id,
        max_qp = max_qp,
        max_qp_wr = max_qp_wr,
        max_sge = max_sge,
        max_cqe = max_cqe,
        atomic_cap = atomic_cap,
        max_pkeys = max_pkeys,
        phys_port_cnt = phys_port_cnt
    );

    same_layout!(IbvPortAttr, sys::ibv_port_attr);
    same_offsets!(
        IbvPortAttr,
        sys::ibv_port_attr,
        state = state,
        max_mtu = max_mtu,
        active_mtu = active_mtu,
        gid_tbl_len = gid_tbl_len,
        lid = lid,
        link_layer = link_layer,
        flags = flags,
        port_cap_flags2 = port_cap_flags2
    );

    same_layout!(IbvGid, sys::ibv_gid);
    same_layout!(IbvGlobalRoute, sys::ibv_global_route);
    same_offsets!(
        IbvGlobalRoute,
        sys::ibv_global_route,
        dgid = dgid,
        flow_label = flow_label,
        sgid_index = sgid_index,
        hop_limit = hop_limit,
        traffic_class = traffic_class
    );
    same_layout!(IbvAhAttr, sys::ibv_ah_attr);
    same_offsets!(
        IbvAhAttr,
        sys::ibv_ah_attr,
        grh = grh,
        dlid = dlid,
        sl = sl,
        static_rate = static_rate,
        is_global = is_global,
        port_num = port_num
    );

    same_layout!(IbvQpCap, sys::ibv_qp_cap);
    same_layout!(IbvQpAttr, sys::ibv_qp_attr);
    same_offsets!(
        IbvQpAttr,
        sys::ibv_qp_attr,
        qp_state = qp_state,
        path_mtu = path_mtu,
        qkey = qkey,
        rq_psn = rq_psn,
        sq_psn = sq_psn,
        dest_qp_num = dest_qp_num,
        qp_access_flags = qp_access_flags,
        cap = cap,
        ah_attr = ah_attr,
        alt_ah_attr = alt_ah_attr,
        pkey_index = pkey_index,
        max_rd_atomic = max_rd_atomic,
        max_dest_rd_atomic = max_dest_rd_atomic,
        min_rnr_timer = min_rnr_timer,
        port_num = port_num,
        timeout = timeout,
        retry_cnt = retry_cnt,
        rnr_retry = rnr_retry,
        rate_limit = rate_limit
    );

    same_layout!(IbvQpInitAttr, sys::ibv_qp_init_attr);
    same_offsets!(
        IbvQpInitAttr,
        sys::ibv_qp_init_attr,
        send_cq = send_cq,
        recv_cq = recv_cq,
        srq = srq,
        cap = cap,
        qp_type = qp_type,
        sq_sig_all = sq_sig_all
    );

    same_layout!(IbvMr, sys::ibv_mr);
    same_offsets!(IbvMr, sys::ibv_mr, addr = addr, length = length, lkey = lkey, rkey = rkey);

    same_layout!(IbvSge, sys::ibv_sge);
    same_layout!(IbvRecvWr, sys::ibv_recv_wr);
    same_offsets!(
        IbvRecvWr,
        sys::ibv_recv_wr,
        wr_id = wr_id,
        next = next,
        sg_list = sg_list,
        num_sge = num_sge
    );

    same_layout!(IbvSendWr, sys::ibv_send_wr);
    same_offsets!(
        IbvSendWr,
        sys::ibv_send_wr,
        wr_id = wr_id,
        next = next,
        sg_list = sg_list,
        num_sge = num_sge,
        opcode = opcode,
        send_flags = send_flags,
        imm_data = imm_data_invalidated_rkey_union,
        wr = wr,
        xrc_remote_srqn = qp_type,
        _bind_mw_tso = bind_mw_tso_union
    );
    assert_eq!(size_of::<IbvRdmaWr>(), size_of::<sys::wr_t>());
    same_offsets!(IbvRdmaWr, sys::rdma_t, remote_addr = remote_addr, rkey = rkey);

    same_layout!(IbvWc, sys::ibv_wc);
    same_offsets!(
        IbvWc,
        sys::ibv_wc,
        wr_id = wr_id,
        status = status,
        opcode = opcode,
        vendor_err = vendor_err,
        byte_len = byte_len,
        imm_data = imm_data_invalidated_rkey_union,
        qp_num = qp_num,
        wc_flags = wc_flags,
        sl = sl,
        dlid_path_bits = dlid_path_bits
    );
}

#[test]
fn library_allocated_prefixes_match() {
    // Only read through pointers: the fields we read sit where the library put them.
    same_layout!(IbvContext, sys::ibv_context);
    same_offsets!(IbvContext, sys::ibv_context, device = device, ops = ops);
    same_layout!(IbvContextOps, sys::ibv_context_ops);
    same_offsets!(
        IbvContextOps,
        sys::ibv_context_ops,
        poll_cq = poll_cq,
        post_send = post_send,
        post_recv = post_recv
    );
    same_offsets!(IbvCq, sys::ibv_cq, context = context, handle = handle, cqe = cqe);
    assert!(size_of::<IbvCq>() <= size_of::<sys::ibv_cq>());
    same_offsets!(
        IbvQp,
        sys::ibv_qp,
        context = context,
        pd = pd,
        send_cq = send_cq,
        recv_cq = recv_cq,
        handle = handle,
        qp_num = qp_num,
        state = state,
        qp_type = qp_type
    );
    assert!(size_of::<IbvQp>() <= size_of::<sys::ibv_qp>());
}

#[test]
fn constants_match() {
    assert_eq!(IBV_QPS_RESET, sys::ibv_qp_state::IBV_QPS_RESET);
    assert_eq!(IBV_QPS_INIT, sys::ibv_qp_state::IBV_QPS_INIT);
    assert_eq!(IBV_QPS_RTR, sys::ibv_qp_state::IBV_QPS_RTR);
    assert_eq!(IBV_QPS_RTS, sys::ibv_qp_state::IBV_QPS_RTS);
    assert_eq!(IBV_QPS_ERR, sys::ibv_qp_state::IBV_QPS_ERR);
    assert_eq!(IBV_QPT_RC, sys::ibv_qp_type::IBV_QPT_RC);

    type M = sys::ibv_qp_attr_mask;
    let masks = [
        (IBV_QP_STATE, M::IBV_QP_STATE),
        (IBV_QP_ACCESS_FLAGS, M::IBV_QP_ACCESS_FLAGS),
        (IBV_QP_PKEY_INDEX, M::IBV_QP_PKEY_INDEX),
        (IBV_QP_PORT, M::IBV_QP_PORT),
        (IBV_QP_AV, M::IBV_QP_AV),
        (IBV_QP_PATH_MTU, M::IBV_QP_PATH_MTU),
        (IBV_QP_TIMEOUT, M::IBV_QP_TIMEOUT),
        (IBV_QP_RETRY_CNT, M::IBV_QP_RETRY_CNT),
        (IBV_QP_RNR_RETRY, M::IBV_QP_RNR_RETRY),
        (IBV_QP_RQ_PSN, M::IBV_QP_RQ_PSN),
        (IBV_QP_MAX_QP_RD_ATOMIC, M::IBV_QP_MAX_QP_RD_ATOMIC),
        (IBV_QP_MIN_RNR_TIMER, M::IBV_QP_MIN_RNR_TIMER),
        (IBV_QP_SQ_PSN, M::IBV_QP_SQ_PSN),
        (IBV_QP_MAX_DEST_RD_ATOMIC, M::IBV_QP_MAX_DEST_RD_ATOMIC),
        (IBV_QP_DEST_QPN, M::IBV_QP_DEST_QPN),
    ];
    for (ours, theirs) in masks {
        assert_eq!(ours as u32, theirs.0, "mask {ours:#x}");
    }

    type A = sys::ibv_access_flags;
    assert_eq!(IBV_ACCESS_LOCAL_WRITE, A::IBV_ACCESS_LOCAL_WRITE.0);
    assert_eq!(IBV_ACCESS_REMOTE_WRITE, A::IBV_ACCESS_REMOTE_WRITE.0);
    assert_eq!(IBV_ACCESS_REMOTE_READ, A::IBV_ACCESS_REMOTE_READ.0);

    assert_eq!(IBV_WR_RDMA_WRITE, sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE);
    assert_eq!(IBV_WR_RDMA_WRITE_WITH_IMM, sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM);
    assert_eq!(IBV_SEND_SIGNALED, sys::ibv_send_flags::IBV_SEND_SIGNALED.0);
    assert_eq!(IBV_WC_RDMA_WRITE, sys::ibv_wc_opcode::IBV_WC_RDMA_WRITE);
    assert_eq!(IBV_WC_RECV_RDMA_WITH_IMM, sys::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM);
    assert_eq!(IBV_WC_WITH_IMM, sys::ibv_wc_flags::IBV_WC_WITH_IMM.0);
    assert_eq!(IBV_WC_SUCCESS, sys::ibv_wc_status::IBV_WC_SUCCESS);

    assert_eq!(IBV_PORT_DOWN, sys::ibv_port_state::IBV_PORT_DOWN);
    assert_eq!(IBV_PORT_INIT, sys::ibv_port_state::IBV_PORT_INIT);
    assert_eq!(IBV_PORT_ARMED, sys::ibv_port_state::IBV_PORT_ARMED);
    assert_eq!(IBV_PORT_ACTIVE, sys::ibv_port_state::IBV_PORT_ACTIVE);
    assert_eq!(IBV_PORT_ACTIVE_DEFER, sys::ibv_port_state::IBV_PORT_ACTIVE_DEFER);
    assert_eq!(IBV_MTU_256, sys::ibv_mtu::IBV_MTU_256);
    assert_eq!(IBV_MTU_4096, sys::ibv_mtu::IBV_MTU_4096);
}

/// The link-layer values are an anonymous enum that bindgen leaves out; read them from the
/// header itself where it is installed.
#[test]
fn link_layer_values_match_the_header() {
    let Ok(header) = std::fs::read_to_string("/usr/include/infiniband/verbs.h") else {
        eprintln!("note: <infiniband/verbs.h> is not installed; skipping");
        return;
    };
    let start = header.find("IBV_LINK_LAYER_UNSPECIFIED").expect("the enum is in the header");
    let names: Vec<&str> = header[start..]
        .split('}')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(
        names,
        ["IBV_LINK_LAYER_UNSPECIFIED", "IBV_LINK_LAYER_INFINIBAND", "IBV_LINK_LAYER_ETHERNET"]
    );
    assert_eq!((IBV_LINK_LAYER_INFINIBAND, IBV_LINK_LAYER_ETHERNET), (1, 2));
}
