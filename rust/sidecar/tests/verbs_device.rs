//! The real sidecar with `--transport verbs` on a real RDMA device (soft-RoCE from
//! `ci/rxe-setup.sh`, or hardware), with a client queue pair and pool made here. Ignored
//! by default; run them with
//! `SEAWEED_RDMA_DEVICE=rxe0 cargo test sidecar::tests::verbs_device -- --ignored --test-threads 1`
//! (the variable is optional: without it the sidecar picks the first usable device).

use std::time::Duration;

use super::fake_volume::FakeVolume;
use super::{dir_arg, ranged, whole, Client, TestSidecar};
use crate::fid::FileId;
use crate::proto::{ReadRequest, Status, TRANSPORT_TCP, TRANSPORT_VERBS};
use crate::verbs::{
    Access, ClientExchange, CompletionQueue, ConnectedQp, Context, Loader, QpCaps, Role, Slot,
};

const WAIT: Duration = Duration::from_secs(10);
const SLOT: u32 = 256 * 1024;

/// A client of the verbs transport: its queue pair, completion queue and receive slots.
struct VerbsClient {
    client: Client,
    qp: ConnectedQp,
    cq: CompletionQueue,
    slots: Vec<Slot>,
}

impl VerbsClient {
    fn connect(sc: &TestSidecar) -> VerbsClient {
        // The device the sidecar opened, so both ends share a port (loopback).
        let stats = sc.stats();
        let device = stats["rdma_device"].as_str().expect("the sidecar serves verbs").to_owned();
        let ctx =
            Context::open(Loader::global().expect("libibverbs"), Some(&device)).expect("open");
        let pd = ctx.alloc_pd().expect("pd");
        let pool = pd.register_pool(SLOT, 4, Access::RemoteWrite).expect("client pool");
        let cq = ctx.create_cq(64).expect("cq");
        let port = ctx.local_port(None, None).expect("port");
        let qp = pd.create_qp(&cq, &cq, QpCaps::default(), port, Role::Client).expect("qp");
        let ex = ClientExchange { endpoint: qp.endpoint(), pool: pool.remote() };
        let client =
            Client::connect_offering(sc.addr(), TRANSPORT_TCP | TRANSPORT_VERBS, Some(&ex));
        assert_eq!(client.ack.transport, TRANSPORT_VERBS, "verbs chosen");
        let server = client.server.expect("the sidecar's endpoint follows the ack");
        let qp = qp.connect(&server).expect("client connects");
        for id in 0..32 {
            qp.post_recv(id).expect("post receive");
        }
        VerbsClient { client, qp, cq, slots: pool.into_slots() }
    }

    /// Sends `req` and returns its status and data_len once the DATA frame and, for data,
    /// the receive completion carrying its request id have both arrived.
    fn read(&mut self, req: &ReadRequest) -> (Status, u32) {
        let id = self.client.send(req);
        let (got, head, payload) = self.client.recv();
        assert_eq!((got, payload.len()), (id, 0), "no payload over verbs");
        if head.status == Status::Ok && head.data_len > 0 {
            let done = self.cq.wait(1, WAIT).expect("receive completion");
            let done = self.cq.check(done[0]).expect("receive succeeded");
            assert!(done.is_write_with_imm(), "{done:?}");
            assert_eq!(done.imm, Some(id), "immediate = request id");
            self.qp.post_recv(u64::from(id) + 100).expect("re-post");
        }
        (head.status, head.data_len)
    }
}

fn sidecar(needles: &[(FileId, Vec<u8>)]) -> (FakeVolume, tempfile::TempDir, TestSidecar) {
    let volume = FakeVolume::start(needles);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_arg(dir.path());
    let device = std::env::var("SEAWEED_RDMA_DEVICE").ok().filter(|d| !d.is_empty());
    // 4 KiB slabs, so a 200 KB read gathers 50 of them: more than one write holds.
    let mut args = vec!["--dir", &path, "--volume-server", volume.addr(), "--transport", "verbs"];
    args.extend(["--staging-slab-kib", "4", "--staging-mib", "2", "--max-read", "262144"]);
    if let Some(device) = &device {
        args.extend(["--rdma-device", device.as_str()]);
    }
    let sc = TestSidecar::start(&args);
    (volume, dir, sc)
}

fn to(req: ReadRequest, slot: u32, offset: u32) -> ReadRequest {
    ReadRequest { dest_slot: slot, dest_offset: offset, ..req }
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware); optionally set SEAWEED_RDMA_DEVICE"]
fn sidecar_serves_reads_by_rdma_write_into_the_named_slot() {
    let small = (FileId::new(3, 1, 0xaabb_ccdd), (0..5000u32).map(|i| (i * 13) as u8).collect());
    let big =
        (FileId::new(3, 2, 0xaabb_ccdd), (0..200_000u32).map(|i| (i * 5 + 1) as u8).collect());
    let (_volume, _dir, sc) = sidecar(&[small.clone(), big.clone()]);
    let mut c = VerbsClient::connect(&sc);

    assert_eq!(c.read(&to(ranged(small.0, 100, 1000), 1, 64)), (Status::Ok, 1000));
    assert_eq!(&c.slots[1][64..1064], &small.1[100..1100]);
    assert!(c.slots[1][..64].iter().chain(&c.slots[1][1064..]).all(|&b| b == 0), "only the range");

    // Several writes (50 slabs, more SGEs than one write holds), one completion.
    assert_eq!(c.read(&to(whole(big.0), 2, 0)), (Status::Ok, 200_000));
    assert!(c.slots[2][..200_000] == big.1[..], "gathered across slabs, in order");

    // Outside the client's slots: refused, and nothing lands anywhere.
    let before: Vec<Vec<u8>> = c.slots.iter().map(|s| s.to_vec()).collect();
    assert_eq!(c.read(&to(whole(big.0), 3, SLOT - 1000)), (Status::BadRequest, 0));
    assert_eq!(c.read(&to(ranged(small.0, 0, 10), 4, 0)), (Status::BadRequest, 0));
    assert_eq!(c.read(&to(whole(FileId::new(3, 9, 1)), 0, 0)), (Status::NotFound, 0));
    assert_eq!(c.read(&to(ranged(small.0, 5000, 10), 0, 0)), (Status::Ok, 0));
    let after: Vec<Vec<u8>> = c.slots.iter().map(|s| s.to_vec()).collect();
    assert!(before == after, "no slot changed");
    let mut extra = Vec::new();
    c.cq.poll(&mut extra, 4).expect("poll");
    assert!(extra.is_empty(), "no completion for answers without bytes: {extra:?}");

    let stats = sc.stats();
    assert_eq!(stats["transports"]["verbs"]["bytes"].as_u64(), Some(201_000), "{stats}");
    // A tcp client of the same sidecar is served inline.
    let mut plain = sc.connect();
    let (head, bytes) = plain.read(&ranged(small.0, 0, 32));
    assert_eq!((head.status, bytes.as_slice()), (Status::Ok, &small.1[..32]));
}
