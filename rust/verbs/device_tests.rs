//! Tests on a real RDMA device: soft-RoCE (`ci/rxe-setup.sh`) or hardware. They are
//! ignored by default; run them with
//! `SEAWEED_RDMA_DEVICE=rxe0 cargo test verbs::device_tests -- --ignored --test-threads 1`.
//! Each connects queue pairs on one host (to itself, or client to server), so one machine
//! suffices.

use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn open() -> (Context, LocalPort, ProtectionDomain) {
    let name = std::env::var("SEAWEED_RDMA_DEVICE").ok().filter(|n| !n.is_empty());
    let lib = Loader::global().expect("libibverbs");
    let ctx = Context::open(lib, name.as_deref()).expect("device");
    let port = ctx.local_port(None, None).expect("an ACTIVE port");
    check_memlock(1 << 20, MemlockLimit::current(), has_cap_ipc_lock()).expect("memlock");
    let pd = ctx.alloc_pd().expect("pd");
    (ctx, port, pd)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware); set SEAWEED_RDMA_DEVICE"]
fn loopback_write_with_imm_lands_in_the_named_slot() {
    let (ctx, port, pd) = open();
    let pool = pd.register_pool(4096, 2, Access::RemoteWrite).expect("register");
    let remote = pool.remote();
    let mut slots = pool.into_slots();
    let dst = slots.pop().expect("slot 1");
    let mut src = slots.pop().expect("slot 0");
    src.copy_from_slice(&pattern(4096));

    let send_cq = ctx.create_cq(16).expect("send cq");
    let recv_cq = ctx.create_cq(16).expect("recv cq");
    let qp = pd.create_qp(&send_cq, &recv_cq, QpCaps::default(), port, Role::Client).expect("qp");
    let me = Endpoint::decode(&qp.endpoint().encode()).expect("exchange codec");
    let qp = qp.connect(&me).expect("connect to itself");
    qp.post_recv(7).expect("recv");

    let at = remote.dest(1, 100, 3000).expect("inside slot 1");
    let sge = src.sge(0, 3000).expect("sge");
    qp.post_write_with_imm(1, &[sge], at, remote.rkey, 0xabc, true).expect("post");

    let sent = send_cq.wait(1, WAIT).expect("send completion");
    let sent = send_cq.check(sent[0]).expect("write succeeded");
    assert_eq!(sent.wr_id, 1);
    let got = recv_cq.wait(1, WAIT).expect("receive completion");
    let got = recv_cq.check(got[0]).expect("receive succeeded");
    assert!(got.is_write_with_imm(), "{got:?}");
    assert_eq!((got.wr_id, got.imm), (7, Some(0xabc)));
    assert_eq!(&dst[100..3100], &src[..3000]);
    assert!(dst[..100].iter().chain(&dst[3100..]).all(|&b| b == 0), "nothing around it");
}

#[test]
#[ignore = "requires an RDMA device (soft-RoCE rxe or hardware); set SEAWEED_RDMA_DEVICE"]
fn sidecar_pushes_into_client_pool_through_the_handshake() {
    let (ctx, port, pd) = open();
    // The client's receive pool and QP, announced as in HELLO.
    let client_pool = pd.register_pool(8192, 4, Access::RemoteWrite).expect("client pool");
    let client_cq = ctx.create_cq(64).expect("client cq");
    let client =
        pd.create_qp(&client_cq, &client_cq, QpCaps::default(), port.clone(), Role::Client);
    let client = client.expect("client qp");
    let hello = ClientExchange { endpoint: client.endpoint(), pool: client_pool.remote() };
    let hello = ClientExchange::decode(&hello.encode()).expect("decode");

    // The sidecar: local-only staging, its own QP, connected first (as it answers).
    let staging = pd.register_pool(8192, 2, Access::LocalOnly).expect("staging");
    let server_cq = ctx.create_cq(64).expect("server cq");
    let server = pd.create_qp(&server_cq, &server_cq, QpCaps::default(), port, Role::Server);
    let server = server.expect("server qp");
    let ack = Endpoint::decode(&server.endpoint().encode()).expect("decode");
    let server = server.connect(&hello.endpoint).expect("server connects");
    let client = client.connect(&ack).expect("client connects");
    for id in 0..4 {
        client.post_recv(id).expect("recv");
    }

    // Two slabs gathered into one write to slot 2, offset 512.
    let mut slabs = staging.into_slots();
    let data = pattern(8192 + 1000);
    slabs[0].copy_from_slice(&data[..8192]);
    slabs[1][..1000].copy_from_slice(&data[8192..]);
    let sges = [slabs[0].sge(4096, 4096).expect("a"), slabs[1].sge(0, 1000).expect("b")];
    let len: u64 = sges.iter().map(|s| u64::from(s.len())).sum();
    let at = hello.pool.dest(2, 512, len).expect("bounds");
    server.post_write_with_imm(9, &sges, at, hello.pool.rkey, 42, true).expect("post");
    let done = server_cq.wait(1, WAIT).expect("send completion");
    server_cq.check(done[0]).expect("write ok");
    let got = client_cq.wait(1, WAIT).expect("receive completion");
    assert_eq!(client_cq.check(got[0]).expect("ok").imm, Some(42));

    let slots = client_pool.into_slots();
    assert_eq!(&slots[2][512..512 + 5096], &data[4096..]);
    assert!(hello.pool.dest(2, 512, 8192).is_err(), "a longer write is refused before posting");
}
