//! Pure decisions behind a connection: which GID to use, the path MTU, and the attribute
//! values and masks for each `ibv_modify_qp` step (RESET -> INIT -> RTR -> RTS) of an RC
//! queue pair. Nothing here touches a device, so it is all unit-tested everywhere.

use std::net::Ipv6Addr;
use std::os::raw::c_int;

use serde::{Serialize, Serializer};

use super::error::{VerbsError, VerbsResult};
use super::exchange::{Endpoint, MAX_24BIT};
use super::ffi::{self, IbvQpAttr};
use super::gid::{GidKind, LinkLayer};

/// RNR NAK timer code 12 = 0.64 ms: how long a sender waits when the receiver had no
/// receive posted. Clients keep receives posted ahead of their READs, so this is rare.
pub const MIN_RNR_TIMER: u8 = 12;
/// Local ACK timeout code 14 = 4.096 us * 2^14, about 67 ms per try.
pub const ACK_TIMEOUT: u8 = 14;
/// Transport retries before the QP errors out (7 is the most the field holds).
pub const RETRY_CNT: u8 = 7;
/// RNR retries: 6, not 7, because 7 means "forever" and nothing here waits forever; a
/// client that stops posting receives makes the sidecar's QP fail instead.
pub const RNR_RETRY: u8 = 6;
/// IP hop limit for RoCE v2 (routable) packets.
pub const HOP_LIMIT: u8 = 64;

/// One non-empty entry of a port's GID table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GidEntry {
    /// Index in the table (the `sgid_index` to connect with).
    pub index: u32,
    /// The GID, shown as an IPv6 address.
    #[serde(serialize_with = "gid_text")]
    pub gid: [u8; 16],
    /// Its kind.
    pub kind: GidKind,
    /// The network device it belongs to (RoCE), from sysfs `gid_attrs/ndevs/<index>`.
    pub netdev: Option<String>,
}

/// A GID as text (GIDs are IPv6-shaped; RoCE GIDs of IPv4 addresses show as `::ffff:a.b.c.d`).
pub fn format_gid(gid: &[u8; 16]) -> String {
    Ipv6Addr::from(*gid).to_string()
}

fn gid_text<S: Serializer>(gid: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_gid(gid))
}

/// 0 for an IPv4-mapped GID (RoCE over an IPv4 address: what most fabrics route), 1 for
/// another global one, 2 for link-local (fe80::/10, which only works on one L2 segment).
fn address_rank(gid: &[u8; 16]) -> u8 {
    let addr = Ipv6Addr::from(*gid);
    if addr.to_ipv4_mapped().is_some() {
        0
    } else if gid[0] == 0xfe && gid[1] & 0xc0 == 0x80 {
        2
    } else {
        1
    }
}

/// The GID to connect with: of the kind `prefer` when there is one (to match the peer),
/// else RoCE v2 over RoCE v1 over IB; within a kind, IPv4-mapped over global over
/// link-local; then the lowest index. All-zero entries are never chosen.
pub fn choose_gid(gids: &[GidEntry], prefer: Option<GidKind>) -> Option<&GidEntry> {
    gids.iter().filter(|g| g.gid != [0; 16]).min_by_key(|g| {
        (prefer.is_some_and(|k| k != g.kind), g.kind.rank(), address_rank(&g.gid), g.index)
    })
}

/// Bytes of an `enum ibv_mtu` code (1 = 256 .. 5 = 4096).
pub fn mtu_bytes(code: u8) -> Option<u32> {
    (1..=5).contains(&code).then(|| 128u32 << code)
}

/// The path MTU code both ends can use: the smaller of the two.
pub fn path_mtu(local: u8, remote: u8) -> u8 {
    local.min(remote)
}

/// The local port a queue pair is bound to, with the GID chosen for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalPort {
    /// Port number (from 1).
    pub port_num: u8,
    /// Its link layer.
    pub link_layer: LinkLayer,
    /// Active MTU code.
    pub active_mtu: u8,
    /// LID (InfiniBand).
    pub lid: u16,
    /// The GID to use (required on Ethernet).
    pub gid: Option<GidEntry>,
}

impl LocalPort {
    /// This side's half of the exchange for a queue pair `qpn` that starts at `psn`.
    pub fn endpoint(&self, qpn: u32, psn: u32) -> Endpoint {
        Endpoint {
            qpn,
            psn,
            gid: self.gid.as_ref().map_or([0; 16], |g| g.gid),
            lid: self.lid,
            mtu: self.active_mtu,
            gid_kind: self.gid.as_ref().map_or(GidKind::Unknown, |g| g.kind),
        }
    }
}

/// Which end of the protocol a queue pair serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client: the sidecar RDMA-writes into its pool, so its QP accepts remote writes.
    Client,
    /// The sidecar: it only initiates writes, so its QP accepts no remote access at all.
    Server,
}

/// One `ibv_modify_qp` call: the attributes and the mask of those that are set.
#[derive(Clone, Copy)]
pub(crate) struct Transition {
    /// State name for errors.
    pub state: &'static str,
    pub attr: IbvQpAttr,
    pub mask: c_int,
}

/// RESET -> INIT.
pub(crate) fn to_init(port_num: u8, role: Role) -> Transition {
    let access = match role {
        Role::Client => ffi::IBV_ACCESS_LOCAL_WRITE | ffi::IBV_ACCESS_REMOTE_WRITE,
        Role::Server => 0,
    };
    let attr = IbvQpAttr {
        qp_state: ffi::IBV_QPS_INIT,
        pkey_index: 0,
        port_num,
        qp_access_flags: access,
        ..IbvQpAttr::default()
    };
    let mask =
        ffi::IBV_QP_STATE | ffi::IBV_QP_PKEY_INDEX | ffi::IBV_QP_PORT | ffi::IBV_QP_ACCESS_FLAGS;
    Transition { state: "INIT", attr, mask }
}

/// INIT -> RTR, aimed at `remote`. A GRH is used on Ethernet (RoCE needs one) and whenever
/// the peer has no LID.
///
/// # Errors
/// [`VerbsError::Invalid`] when a GRH is needed but this port has no GID or the peer sent
/// none, or when the peer's numbers are out of range.
pub(crate) fn to_rtr(local: &LocalPort, remote: &Endpoint) -> VerbsResult<Transition> {
    let invalid = |what: &str| Err(VerbsError::Invalid(what.to_owned()));
    if remote.qpn > MAX_24BIT || remote.psn > MAX_24BIT || mtu_bytes(remote.mtu).is_none() {
        return invalid("peer endpoint out of range");
    }
    let mut attr = IbvQpAttr {
        qp_state: ffi::IBV_QPS_RTR,
        path_mtu: u32::from(path_mtu(local.active_mtu, remote.mtu)),
        dest_qp_num: remote.qpn,
        rq_psn: remote.psn,
        max_dest_rd_atomic: 1,
        min_rnr_timer: MIN_RNR_TIMER,
        ..IbvQpAttr::default()
    };
    attr.ah_attr.dlid = remote.lid;
    attr.ah_attr.port_num = local.port_num;
    if local.link_layer == LinkLayer::Ethernet || remote.lid == 0 {
        let Some(gid) = &local.gid else {
            return invalid("the port has no GID (RoCE needs an IP address on its netdev)");
        };
        if remote.gid == [0; 16] {
            return invalid("the peer sent no GID but the link needs one");
        }
        let Ok(sgid_index) = u8::try_from(gid.index) else {
            return invalid("GID index above 255");
        };
        attr.ah_attr.is_global = 1;
        attr.ah_attr.grh.dgid.raw = remote.gid;
        attr.ah_attr.grh.sgid_index = sgid_index;
        attr.ah_attr.grh.hop_limit = HOP_LIMIT;
    }
    let mask = ffi::IBV_QP_STATE
        | ffi::IBV_QP_AV
        | ffi::IBV_QP_PATH_MTU
        | ffi::IBV_QP_DEST_QPN
        | ffi::IBV_QP_RQ_PSN
        | ffi::IBV_QP_MAX_DEST_RD_ATOMIC
        | ffi::IBV_QP_MIN_RNR_TIMER;
    Ok(Transition { state: "RTR", attr, mask })
}

/// RTR -> RTS, sending from `local_psn`.
pub(crate) fn to_rts(local_psn: u32) -> Transition {
    let attr = IbvQpAttr {
        qp_state: ffi::IBV_QPS_RTS,
        sq_psn: local_psn & MAX_24BIT,
        timeout: ACK_TIMEOUT,
        retry_cnt: RETRY_CNT,
        rnr_retry: RNR_RETRY,
        max_rd_atomic: 1,
        ..IbvQpAttr::default()
    };
    let mask = ffi::IBV_QP_STATE
        | ffi::IBV_QP_SQ_PSN
        | ffi::IBV_QP_TIMEOUT
        | ffi::IBV_QP_RETRY_CNT
        | ffi::IBV_QP_RNR_RETRY
        | ffi::IBV_QP_MAX_QP_RD_ATOMIC;
    Transition { state: "RTS", attr, mask }
}

/// A random 24-bit starting PSN (random so that a stale packet of an earlier connection
/// that reused the QPN is not taken for a new one).
pub fn random_psn() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or_default());
    (h.finish() as u32) & MAX_24BIT
}

#[cfg(test)]
#[path = "attrs_tests.rs"]
mod tests;
