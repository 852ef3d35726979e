//! What kind of address a port and a GID are: the link layer and the GID's kind, as sysfs
//! and the verbs exchange name them. A leaf: port attributes (`attrs.rs`) and the exchange
//! (`exchange.rs`) both use it.

use serde::Serialize;

use super::ffi;

/// A port's link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LinkLayer {
    /// Not reported (old providers; treated as InfiniBand).
    Unspecified,
    /// InfiniBand: addressed by LID, GRH optional.
    InfiniBand,
    /// Ethernet (RoCE): addressed by GID, GRH required.
    Ethernet,
}

impl LinkLayer {
    /// From `ibv_port_attr.link_layer`.
    pub fn from_raw(v: u8) -> LinkLayer {
        match v {
            ffi::IBV_LINK_LAYER_INFINIBAND => LinkLayer::InfiniBand,
            ffi::IBV_LINK_LAYER_ETHERNET => LinkLayer::Ethernet,
            _ => LinkLayer::Unspecified,
        }
    }
}

/// What a GID table entry is (from sysfs `gid_attrs/types/<index>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum GidKind {
    /// Not known (sysfs does not say).
    #[serde(rename = "unknown")]
    Unknown = 0,
    /// An InfiniBand port's GID.
    #[serde(rename = "IB")]
    Ib = 1,
    /// RoCE v1 (Ethernet frames, not routable).
    #[serde(rename = "RoCE v1")]
    RoceV1 = 2,
    /// RoCE v2 (UDP/IP, routable): preferred.
    #[serde(rename = "RoCE v2")]
    RoceV2 = 3,
}

impl GidKind {
    /// From the byte in the verbs exchange.
    pub fn from_wire(v: u8) -> Option<GidKind> {
        [GidKind::Unknown, GidKind::Ib, GidKind::RoceV1, GidKind::RoceV2]
            .get(usize::from(v))
            .copied()
    }

    /// From a port's link layer and the text of its `gid_attrs/types/<index>` file
    /// (`"IB/RoCE v1"` or `"RoCE v2"`).
    pub fn from_sysfs(link: LinkLayer, text: Option<&str>) -> GidKind {
        match (link, text.map(str::trim)) {
            (LinkLayer::InfiniBand, _) => GidKind::Ib,
            (_, Some("RoCE v2")) => GidKind::RoceV2,
            (LinkLayer::Ethernet, Some("IB/RoCE v1")) => GidKind::RoceV1,
            (LinkLayer::Unspecified, Some("IB/RoCE v1")) => GidKind::Ib,
            _ => GidKind::Unknown,
        }
    }

    /// Preference order when choosing a GID (lower first): RoCE v2, v1, InfiniBand.
    pub(crate) fn rank(self) -> u8 {
        match self {
            GidKind::RoceV2 => 0,
            GidKind::RoceV1 => 1,
            GidKind::Ib => 2,
            GidKind::Unknown => 3,
        }
    }
}
