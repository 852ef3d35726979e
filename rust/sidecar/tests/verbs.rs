//! The verbs transport without a device: the whole connection (handshake with its
//! exchange, READs, DATA without payload, closing on a failed write) runs against a fake
//! backend whose writer records what it would RDMA-write where. And `auto` without a
//! device serves tcp, `verbs` without one does not start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::fake_volume::FakeVolume;
use super::{closed_by_peer, dir_arg, ranged, whole, Client, TestSidecar};
use crate::fid::FileId;
use crate::proto::{ReadRequest, Status, TRANSPORT_TCP, TRANSPORT_VERBS};
use crate::sidecar::transport::{Pusher, Recorder, VerbsBackend, VerbsPusher};
use crate::verbs::{ClientExchange, Endpoint, GidKind, RemotePool};

const SLOT: u32 = 8192;
const POOL_ADDR: u64 = 0x7f00_0000_0000;

/// Stands in for the RDMA device: "connects" with a fixed endpoint and writes into a
/// [`Recorder`].
#[derive(Debug, Default)]
struct FakeBackend {
    recorder: Arc<Recorder>,
    seen: Mutex<Vec<ClientExchange>>,
    refuse: bool,
}

fn server_endpoint() -> Endpoint {
    Endpoint {
        qpn: 0x00ab_cdef,
        psn: 0x12_3456,
        gid: [7; 16],
        lid: 0,
        mtu: 5,
        gid_kind: GidKind::RoceV2,
    }
}

impl VerbsBackend for FakeBackend {
    fn device(&self) -> &str {
        "fake0"
    }

    fn accept(
        &self,
        ex: &ClientExchange,
        _max_inflight: u32,
    ) -> Result<(Endpoint, Arc<dyn Pusher>), String> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(*ex);
        if self.refuse {
            return Err("ibv_modify_qp to RTR: Connection timed out".into());
        }
        let pusher = VerbsPusher::new(ex.pool, self.recorder.clone());
        Ok((server_endpoint(), Arc::new(pusher)))
    }
}

fn exchange() -> ClientExchange {
    let endpoint =
        Endpoint { qpn: 0x11, psn: 0x22, gid: [9; 16], lid: 0, mtu: 3, gid_kind: GidKind::RoceV2 };
    let pool = RemotePool {
        addr: POOL_ADDR,
        len: u64::from(SLOT) * 4,
        rkey: 0xbeef,
        slot_size: SLOT,
        slot_count: 4,
    };
    ClientExchange { endpoint, pool }
}

fn slot_addr(slot: u32, offset: u32) -> u64 {
    POOL_ADDR + u64::from(slot) * u64::from(SLOT) + u64::from(offset)
}

fn to(req: ReadRequest, slot: u32, offset: u32) -> ReadRequest {
    ReadRequest { dest_slot: slot, dest_offset: offset, ..req }
}

struct Setup {
    small: (FileId, Vec<u8>),
    big: (FileId, Vec<u8>),
    _volume: FakeVolume,
    _dir: tempfile::TempDir,
    args: Vec<String>,
}

/// Two needles (3000 bytes, and 20000: more than a slot) behind a fake volume server, and
/// arguments for a sidecar over an empty directory that fetches them from it, with 1 KiB
/// slabs so reads gather several.
fn setup(extra: &[&str]) -> Setup {
    let small = (FileId::new(5, 0x10, 0x1234_5678), (0..3000u32).map(|i| (i * 7) as u8).collect());
    let big = (FileId::new(5, 0x11, 0x1234_5678), (0..20_000u32).map(|i| (i * 3) as u8).collect());
    let volume = FakeVolume::start(&[small.clone(), big.clone()]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["--dir".to_owned(), dir_arg(dir.path()), "--volume-server".to_owned()];
    args.push(volume.addr().to_owned());
    args.extend(["--staging-slab-kib", "1"].map(String::from));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Setup { small, big, _volume: volume, _dir: dir, args }
}

impl Setup {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

#[test]
fn verbs_connection_writes_into_the_named_slot_and_refuses_the_rest() {
    let s = setup(&[]);
    let backend = Arc::new(FakeBackend::default());
    let sc = TestSidecar::start_with_verbs(&s.args(), backend.clone());
    let ex = exchange();
    let mut client = sc.connect_verbs(&ex);
    assert_eq!(client.ack.transport, TRANSPORT_VERBS);
    assert_eq!(client.server, Some(server_endpoint()), "the 32-byte endpoint follows the ack");
    assert_eq!(backend.seen.lock().unwrap_or_else(PoisonError::into_inner).as_slice(), [ex]);
    let recorder = &backend.recorder;
    let (fid, data) = &s.small;

    // In bounds: written at pool + slot * slot_size + offset with imm = request id, and the
    // DATA frame says OK with data_len but carries no payload (`Client::recv` checks that).
    let id = client.send(&to(ranged(*fid, 100, 1000), 2, 500));
    let (got, head, payload) = client.recv();
    assert_eq!((got, head.status, head.data_len, payload.len()), (id, Status::Ok, 1000, 0));
    let writes = recorder.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!((writes[0].addr, writes[0].rkey, writes[0].imm), (slot_addr(2, 500), 0xbeef, id));
    assert_eq!(writes[0].bytes, &data[100..1100]);

    // The bound is what is written: a long range clamped to 10 bytes fits anywhere.
    let (head, _) = client.read(&to(ranged(*fid, 2990, SLOT), 1, SLOT - 10));
    assert_eq!((head.status, head.data_len), (Status::Ok, 10));
    let (head, _) = client.read(&to(whole(*fid), 3, 0));
    assert_eq!((head.status, head.data_len), (Status::Ok, 3000));
    let writes = recorder.writes();
    assert_eq!(
        (writes[1].addr, writes[1].bytes.as_slice()),
        (slot_addr(1, SLOT - 10), &data[2990..])
    );
    assert_eq!((writes[2].addr, writes[2].bytes.as_slice()), (slot_addr(3, 0), data.as_slice()));

    // Outside what the client registered: BAD_REQUEST, and nothing is written.
    let refused = [
        ("no such slot", to(ranged(*fid, 0, 10), 4, 0)),
        ("offset past the slot", to(ranged(*fid, 0, 0), 0, SLOT + 1)),
        ("range past the slot's end", to(ranged(*fid, 0, 1000), 0, SLOT - 999)),
        ("whole needle larger than a slot", to(whole(s.big.0), 0, 0)),
        ("slot far out", to(ranged(*fid, 0, 1), u32::MAX, u32::MAX)),
    ];
    for (what, req) in refused {
        let (head, _) = client.read(&req);
        assert_eq!((head.status, head.data_len), (Status::BadRequest, 0), "{what}");
    }
    // Other statuses and empty answers write nothing either.
    let (head, _) = client.read(&to(whole(FileId::new(5, 0x99, 1)), 0, 0));
    assert_eq!(head.status, Status::NotFound);
    let (head, _) = client.read(&to(ranged(*fid, 3000, 100), 0, SLOT));
    assert_eq!((head.status, head.data_len), (Status::Ok, 0), "empty range at the slot's end");
    assert_eq!(recorder.writes().len(), 3, "nothing written for refused or empty answers");

    // Pipelined: answers and writes matched by request id.
    let ids: Vec<(u32, u32)> = (0..4)
        .map(|slot| (client.send(&to(ranged(*fid, u64::from(slot) * 100, 50), slot, 8)), slot))
        .collect();
    let mut answered: Vec<u32> = (0..4)
        .map(|_| client.recv())
        .map(|(id, head, _)| {
            assert_eq!(head.status, Status::Ok);
            id
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, ids.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    for (id, slot) in ids {
        let write = recorder.writes().into_iter().find(|w| w.imm == id).expect("written");
        assert_eq!(write.addr, slot_addr(slot, 8));
        assert_eq!(write.bytes, &data[slot as usize * 100..slot as usize * 100 + 50]);
    }

    // A tcp client of the same sidecar still gets its bytes inline.
    let mut plain = sc.connect();
    assert_eq!(plain.ack.transport, TRANSPORT_TCP);
    let (head, bytes) = plain.read(&to(ranged(*fid, 0, 64), 99, 99));
    assert_eq!((head.status, bytes.as_slice()), (Status::Ok, &data[..64]), "tcp ignores the slot");

    let stats = sc.stats();
    assert_eq!(
        (stats["transport"].as_str(), stats["rdma_device"].as_str()),
        (Some("verbs"), Some("fake0"))
    );
    let verbs = &stats["transports"]["verbs"];
    assert_eq!(
        (verbs["connections_total"].as_u64(), verbs["connections_open"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(verbs["bytes"].as_u64(), Some(1000 + 10 + 3000 + 4 * 50), "{stats}");
    assert_eq!(stats["transports"]["tcp"]["bytes"].as_u64(), Some(64));
    assert_eq!(stats["status"]["bad_request"].as_u64(), Some(5));
    let metrics = sc.metrics();
    assert!(
        metrics
            .contains("seaweed_rdma_sidecar_transport_connections_open{transport=\"verbs\"} 1\n"),
        "{metrics}"
    );

    // A write that fails (as a failed completion would) closes that connection only.
    recorder.fail_next();
    client.send(&to(ranged(*fid, 0, 10), 0, 0));
    assert!(
        closed_by_peer(&mut client.stream, Duration::from_secs(10)),
        "closed after a failed write"
    );
    plain.ping();
    let mut again = sc.connect_verbs(&ex);
    let (head, _) = again.read(&to(ranged(*fid, 0, 10), 0, 0));
    assert_eq!(head.status, Status::Ok, "a new verbs connection works");
    let stats = sc.stats();
    assert_eq!(stats["verbs_failures"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["transports"]["verbs"]["connections_total"].as_u64(), Some(2));
}

#[test]
fn verbs_handshake_rules() {
    let s = setup(&[]);
    let backend = Arc::new(FakeBackend::default());
    let sc = TestSidecar::start_with_verbs(&s.args(), backend.clone());
    let ex = exchange();
    // verbs only: fine when the sidecar has verbs.
    let only = Client::connect_offering(sc.addr(), TRANSPORT_VERBS, Some(&ex));
    assert_eq!(only.server, Some(server_endpoint()));
    // tcp only: nothing is read after HELLO and nothing follows the ack.
    let mut plain = sc.connect();
    plain.ping();
    // An exchange that cannot be right closes the connection.
    let mut bad = exchange();
    bad.pool.slot_count = 0;
    let mut stream = Client::raw(sc.addr());
    let hello = crate::proto::Hello {
        version: 1,
        transports: TRANSPORT_TCP | TRANSPORT_VERBS,
        max_inflight: 1,
    };
    std::io::Write::write_all(&mut stream, &[&hello.encode()[..], &bad.encode()].concat())
        .expect("send");
    assert!(closed_by_peer(&mut stream, Duration::from_secs(10)), "empty pool refused");

    // A queue pair that cannot connect: tcp when the client offers it, else closed.
    let s = setup(&[]);
    let refusing = Arc::new(FakeBackend { refuse: true, ..FakeBackend::default() });
    let sc = TestSidecar::start_with_verbs(&s.args(), refusing);
    let mut fallback = sc.connect_verbs(&ex);
    assert_eq!((fallback.ack.transport, fallback.server), (TRANSPORT_TCP, None));
    let (head, bytes) = fallback.read(&ranged(s.small.0, 0, 16));
    assert_eq!(
        (head.status, bytes.as_slice()),
        (Status::Ok, &s.small.1[..16]),
        "in step after the exchange"
    );
    let mut stream = Client::raw(sc.addr());
    let hello = crate::proto::Hello { version: 1, transports: TRANSPORT_VERBS, max_inflight: 1 };
    std::io::Write::write_all(&mut stream, &[&hello.encode()[..], &ex.encode()].concat())
        .expect("send");
    assert!(closed_by_peer(&mut stream, Duration::from_secs(10)), "verbs only, and verbs failed");
}

#[test]
fn auto_without_a_device_serves_tcp_and_verbs_refuses_to_start() {
    // A device name no host has: the same outcome with or without RDMA hardware.
    let s = setup(&["--transport", "auto", "--rdma-device", "no-such-rdma-device"]);
    let sc = TestSidecar::start(&s.args());
    let mut client = sc.connect_verbs(&exchange());
    assert_eq!((client.ack.transport, client.server), (TRANSPORT_TCP, None), "tcp chosen");
    let (head, bytes) = client.read(&to(ranged(s.small.0, 5, 100), 9, 9));
    assert_eq!((head.status, bytes.as_slice()), (Status::Ok, &s.small.1[5..105]), "stream in step");
    let stats = sc.stats();
    assert_eq!((stats["transport"].as_str(), stats["rdma_device"].as_str()), (Some("tcp"), None));
    assert_eq!(stats["transports"]["tcp"]["connections_total"].as_u64(), Some(1));
    assert_eq!(stats["transports"]["verbs"]["connections_total"].as_u64(), Some(0));

    let s = setup(&["--transport", "verbs", "--rdma-device", "no-such-rdma-device"]);
    let err =
        TestSidecar::try_start(&s.args(), None).err().expect("no device, no start").to_string();
    assert!(err.contains("--transport verbs cannot start"), "{err}");
}

impl TestSidecar {
    /// Connects offering verbs and tcp, with `ex` after HELLO.
    fn connect_verbs(&self, ex: &ClientExchange) -> Client {
        Client::connect_offering(self.addr(), TRANSPORT_TCP | TRANSPORT_VERBS, Some(ex))
    }
}
