//! The queue-pair exchange that the verbs transport appends to `HELLO` and `HELLO_ACK`
//! (`docs/protocol.md`, "verbs"). Little-endian like the rest of the protocol.
//!
//! ```text
//! ENDPOINT (32)  qpn u32 | psn u32 | gid [16] | lid u16 | mtu u8 | gid_kind u8 | reserved u32
//! CLIENT   (64)  ENDPOINT | pool_addr u64 | pool_len u64 | pool_rkey u32
//!                | slot_size u32 | slot_count u32 | reserved u32
//! ```
//! A client whose `HELLO` sets the verbs bit sends CLIENT right after it; a server whose
//! `HELLO_ACK` chooses verbs sends its ENDPOINT right after that. The server sends no
//! memory description: it never exposes its own memory.

use serde::Serialize;

use super::gid::GidKind;
use super::slots::RemotePool;
use crate::error::{Error, Result};
use crate::proto::Cursor;

/// Size of [`Endpoint`] on the wire.
pub const ENDPOINT_LEN: usize = 32;
/// Size of [`ClientExchange`] on the wire.
pub const CLIENT_EXCHANGE_LEN: usize = 64;
/// QPNs and PSNs are 24-bit numbers.
pub const MAX_24BIT: u32 = 0x00ff_ffff;

/// One side's queue pair: what the peer needs to address it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Queue pair number (24 bits).
    pub qpn: u32,
    /// First packet sequence number this side sends (24 bits, random).
    pub psn: u32,
    /// The GID chosen for this connection (all zero on InfiniBand without a GRH).
    pub gid: [u8; 16],
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Active MTU of the port, as `enum ibv_mtu` (1 = 256 bytes .. 5 = 4096 bytes).
    pub mtu: u8,
    /// What the GID is, so the peer can pick a GID of the same kind.
    pub gid_kind: GidKind,
}

/// What a client sends after `HELLO` when it offers verbs: its endpoint and the receive
/// pool the server may write into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClientExchange {
    /// The client's queue pair.
    pub endpoint: Endpoint,
    /// Its registered receive pool.
    pub pool: RemotePool,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Protocol(what.into())
}

impl Endpoint {
    /// Wire form.
    pub fn encode(&self) -> [u8; ENDPOINT_LEN] {
        let mut b = [0u8; ENDPOINT_LEN];
        b[0..4].copy_from_slice(&self.qpn.to_le_bytes());
        b[4..8].copy_from_slice(&self.psn.to_le_bytes());
        b[8..24].copy_from_slice(&self.gid);
        b[24..26].copy_from_slice(&self.lid.to_le_bytes());
        b[26] = self.mtu;
        b[27] = self.gid_kind as u8;
        b
    }

    /// Parses the wire form and checks the ranges: 24-bit QPN and PSN, an MTU of 1..=5, a
    /// known GID kind.
    ///
    /// # Errors
    /// [`Error::Protocol`] on short input or a value out of range.
    pub fn decode(b: &[u8]) -> Result<Endpoint> {
        let mut f = Cursor::new(b, "verbs exchange");
        let ep = Endpoint {
            qpn: f.u32()?,
            psn: f.u32()?,
            gid: f.array()?,
            lid: f.u16()?,
            mtu: f.u8()?,
            gid_kind: GidKind::from_wire(f.u8()?)
                .ok_or_else(|| bad("verbs exchange: unknown GID kind"))?,
        };
        let _reserved = f.u32()?;
        if ep.qpn > MAX_24BIT || ep.psn > MAX_24BIT {
            return Err(bad(format!(
                "verbs exchange: QPN {:#x} or PSN {:#x} exceeds 24 bits",
                ep.qpn, ep.psn
            )));
        }
        if !(1..=5).contains(&ep.mtu) {
            return Err(bad(format!("verbs exchange: MTU code {} is not 1..=5", ep.mtu)));
        }
        Ok(ep)
    }
}

impl ClientExchange {
    /// Wire form.
    pub fn encode(&self) -> [u8; CLIENT_EXCHANGE_LEN] {
        let mut b = [0u8; CLIENT_EXCHANGE_LEN];
        b[..ENDPOINT_LEN].copy_from_slice(&self.endpoint.encode());
        b[32..40].copy_from_slice(&self.pool.addr.to_le_bytes());
        b[40..48].copy_from_slice(&self.pool.len.to_le_bytes());
        b[48..52].copy_from_slice(&self.pool.rkey.to_le_bytes());
        b[52..56].copy_from_slice(&self.pool.slot_size.to_le_bytes());
        b[56..60].copy_from_slice(&self.pool.slot_count.to_le_bytes());
        b
    }

    /// Parses the wire form; the endpoint is checked as [`Endpoint::decode`] and the pool
    /// as [`RemotePool::validate`].
    ///
    /// # Errors
    /// [`Error::Protocol`] on short input or values that cannot be right.
    pub fn decode(b: &[u8]) -> Result<ClientExchange> {
        if b.len() < CLIENT_EXCHANGE_LEN {
            return Err(bad("verbs exchange truncated"));
        }
        let (endpoint, rest) = b.split_at(ENDPOINT_LEN);
        let endpoint = Endpoint::decode(endpoint)?;
        let mut f = Cursor::new(rest, "verbs exchange");
        let pool = RemotePool {
            addr: f.u64()?,
            len: f.u64()?,
            rkey: f.u32()?,
            slot_size: f.u32()?,
            slot_count: f.u32()?,
        };
        let _reserved = f.u32()?;
        pool.validate().map_err(|e| bad(format!("verbs exchange: {e}")))?;
        Ok(ClientExchange { endpoint, pool })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        let mut gid = [0u8; 16];
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&[192, 0, 2, 7]);
        Endpoint { qpn: 0x11, psn: 0xabcdef, gid, lid: 0, mtu: 3, gid_kind: GidKind::RoceV2 }
    }

    fn client() -> ClientExchange {
        ClientExchange {
            endpoint: endpoint(),
            pool: RemotePool {
                addr: 0x7f12_3456_0000,
                len: 1 << 20,
                rkey: 0xdead_beef,
                slot_size: 1 << 16,
                slot_count: 16,
            },
        }
    }

    #[test]
    fn endpoint_roundtrip_and_layout() {
        let ep = endpoint();
        let wire = ep.encode();
        assert_eq!(Endpoint::decode(&wire).expect("decodes"), ep);
        assert_eq!(&wire[0..4], &[0x11, 0, 0, 0], "little-endian QPN first");
        assert_eq!(&wire[8..24], &ep.gid, "GID bytes as they are (network order)");
        assert_eq!((wire[26], wire[27]), (3, GidKind::RoceV2 as u8));
        assert!(Endpoint::decode(&wire[..ENDPOINT_LEN - 1]).is_err(), "truncated");
    }

    #[test]
    fn endpoint_ranges_are_checked() {
        for (at, value) in [(3usize, 1u8), (7, 1)] {
            let mut wire = endpoint().encode();
            wire[at] = value; // a bit above 24 in QPN or PSN
            assert!(Endpoint::decode(&wire).is_err(), "byte {at}");
        }
        for mtu in [0u8, 6, 255] {
            let mut wire = endpoint().encode();
            wire[26] = mtu;
            assert!(Endpoint::decode(&wire).is_err(), "mtu {mtu}");
        }
        let mut wire = endpoint().encode();
        wire[27] = 99;
        assert!(Endpoint::decode(&wire).is_err(), "gid kind");
    }

    #[test]
    fn client_roundtrip_and_garbage() {
        let c = client();
        let wire = c.encode();
        assert_eq!(wire.len(), CLIENT_EXCHANGE_LEN);
        assert_eq!(ClientExchange::decode(&wire).expect("decodes"), c);
        assert_eq!(&wire[48..52], &0xdead_beefu32.to_le_bytes());
        for cut in [0, 10, ENDPOINT_LEN, CLIENT_EXCHANGE_LEN - 1] {
            assert!(ClientExchange::decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut empty = c;
        empty.pool.slot_count = 0;
        assert!(ClientExchange::decode(&empty.encode()).is_err(), "empty pool");
        let mut short = c;
        short.pool.len = u64::from(short.pool.slot_size) * 16 - 1;
        assert!(ClientExchange::decode(&short.encode()).is_err(), "slots past the pool");
    }
}
