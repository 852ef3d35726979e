//! Protocol robustness, without a cluster: a peer that breaks the protocol loses only its
//! own connection, and limits are enforced.

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use super::{closed_by_peer, dir_arg, ranged, whole, Client, TestSidecar};
use crate::fid::FileId;
use crate::proto::{
    FrameHeader, Hello, HelloAck, Kind, Status, HELLO_ACK_LEN, TRANSPORT_TCP, TRANSPORT_VERBS,
};

/// A sidecar over an empty directory whose "volume server" refuses connections.
fn sidecar(extra: &[&str]) -> (tempfile::TempDir, TestSidecar) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_arg(dir.path());
    let mut args = vec!["--dir", path.as_str(), "--volume-server", "127.0.0.1:9"];
    args.extend_from_slice(extra);
    let sidecar = TestSidecar::start(&args);
    (dir, sidecar)
}

fn frame(kind: u8, body_len: u32) -> [u8; 16] {
    let mut head =
        FrameHeader { kind: Kind::Ping, flags: 0, request_id: 1, body_len, echo: 0 }.encode();
    head[0] = kind;
    head
}

#[test]
fn broken_peers_lose_only_their_own_connection() {
    let (_dir, sc) = sidecar(&["--max-frame", "4096"]);
    let mut good = sc.connect();
    good.ping();
    let bad_magic = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let truncated_header = [&frame(1, 10)[..9]].concat();
    let truncated_body = [&frame(1, 100)[..], &[0u8; 10]].concat();
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("bad magic", false, bad_magic),
        ("garbage after the handshake", true, vec![0xAB; 64]),
        ("unknown kind", true, frame(42, 0).to_vec()),
        ("oversized frame", true, frame(1, 4097).to_vec()),
        ("DATA from a client", true, frame(2, 0).to_vec()),
        ("truncated header", true, truncated_header),
        ("truncated body", true, truncated_body),
    ];
    for (what, handshake, bytes) in cases {
        let mut stream = if handshake { sc.connect().stream } else { Client::raw(sc.addr()) };
        stream.write_all(&bytes).expect("send");
        if what.starts_with("truncated") {
            stream.shutdown(Shutdown::Write).expect("half-close");
        }
        assert!(closed_by_peer(&mut stream, Duration::from_secs(10)), "{what}: connection closed");
        good.ping();
        let (status, _) = good.read(&ranged(FileId::new(1, 1, 1), 0, 8));
        assert_eq!(
            status.status,
            Status::Internal,
            "{what}: others still served (upstream unreachable)"
        );
    }
    // A whole frame with a malformed READ body is answered, and the connection stays.
    let header = FrameHeader { kind: Kind::Read, flags: 0, request_id: 5, body_len: 3, echo: 0 };
    good.stream.write_all(&[&header.encode()[..], &[1, 2, 3]].concat()).expect("send");
    let (id, answer, _) = good.recv();
    assert_eq!((id, answer.status), (5, Status::BadRequest));
    good.ping();
}

#[test]
fn handshake_rules() {
    let (_dir, sc) = sidecar(&["--max-inflight", "8", "--max-read", "4096"]);
    let client = sc.connect();
    assert_eq!(
        (client.ack.transport, client.ack.max_inflight, client.ack.max_read),
        (TRANSPORT_TCP, 8, 4096)
    );
    assert_eq!(client.ack.max_frame, 64 * 1024);

    let mut old = Client::raw(sc.addr());
    old.write_all(&Hello { version: 9, transports: TRANSPORT_TCP, max_inflight: 1 }.encode())
        .expect("send");
    let mut ack = [0u8; HELLO_ACK_LEN];
    std::io::Read::read_exact(&mut old, &mut ack).expect("an answer");
    assert_eq!(HelloAck::decode(&ack).expect("decodes").version, 0, "unsupported version");
    assert!(closed_by_peer(&mut old, Duration::from_secs(10)));

    // A client of the previous version is still served (it ignores the echo).
    let mut v1 = Client::raw(sc.addr());
    v1.write_all(&Hello { version: 1, transports: TRANSPORT_TCP, max_inflight: 1 }.encode())
        .expect("send");
    let mut ack = [0u8; HELLO_ACK_LEN];
    std::io::Read::read_exact(&mut v1, &mut ack).expect("an answer");
    assert_eq!(HelloAck::decode(&ack).expect("decodes").version, 1, "served as version 1");

    let mut verbs_only = Client::raw(sc.addr());
    verbs_only
        .write_all(&Hello { version: 1, transports: TRANSPORT_VERBS, max_inflight: 1 }.encode())
        .expect("send");
    assert!(closed_by_peer(&mut verbs_only, Duration::from_secs(10)));

    let mut too_long = client;
    let (status, _) = too_long.read(&ranged(FileId::new(1, 1, 1), 0, 4097));
    assert_eq!(status.status, Status::BadRequest, "length above max_read");

    let started = Instant::now();
    let mut silent = Client::raw(sc.addr());
    assert!(
        closed_by_peer(&mut silent, Duration::from_secs(15)),
        "no HELLO: closed at the deadline"
    );
    assert!(started.elapsed() >= Duration::from_secs(4), "not before the deadline");
}

#[test]
fn connection_limit() {
    let (_dir, sc) = sidecar(&["--max-connections", "2"]);
    let mut first = sc.connect();
    let mut second = sc.connect();
    let mut third = Client::raw(sc.addr());
    assert!(
        closed_by_peer(&mut third, Duration::from_secs(10)),
        "beyond the limit: closed on accept"
    );
    first.ping();
    second.ping();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = Client::raw(sc.addr());
        let hello = Hello { version: 1, transports: TRANSPORT_TCP, max_inflight: 1 }.encode();
        let mut ack = [0u8; HELLO_ACK_LEN];
        let answered = next.write_all(&hello).is_ok()
            && std::io::Read::read_exact(&mut next, &mut ack).is_ok();
        if answered {
            break;
        }
        assert!(Instant::now() < deadline, "a slot frees up once a connection closes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn busy_beyond_max_inflight_and_unauthorized_without_token() {
    // An upstream that accepts and never answers keeps a READ in flight.
    let hang = TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = hang.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_arg(dir.path());
    let sc =
        TestSidecar::start(&["--dir", &path, "--volume-server", &upstream, "--max-inflight", "1"]);
    let mut client = sc.connect();
    assert_eq!(client.ack.max_inflight, 1);
    let stuck = client.send(&whole(FileId::new(7, 1, 1)));
    let (conn, _) = hang.accept().expect("the sidecar asks upstream");
    let (id, answer, _) = {
        client.send(&whole(FileId::new(7, 2, 1)));
        client.recv()
    };
    assert_eq!((id, answer.status), (stuck + 1, Status::Busy));
    drop(conn);
    let (id, answer, _) = client.recv();
    assert_eq!((id, answer.status), (stuck, Status::Internal), "upstream hung up");

    let (_dir, secured) = sidecar(&["--jwt-key", "k3y"]);
    let mut client = secured.connect();
    let fid = FileId::new(3, 1, 0x637037d6);
    let (answer, _) = client.read(&whole(fid));
    assert_eq!(answer.status, Status::Unauthorized, "no token");
    let other = super::super::mint_jwt("k3y", &FileId::new(3, 2, 0x637037d6), None).expect("mint");
    let (answer, _) = client.read(&crate::proto::ReadRequest { jwt: other, ..whole(fid) });
    assert_eq!(answer.status, Status::Unauthorized, "token for another fid");
    // Signed with the right key for the right fid, but valid only from an hour on: the
    // volume server answers 401 to it, and so must the sidecar.
    let now = jsonwebtoken::get_current_timestamp();
    let early = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "fid": fid.to_string(), "nbf": now + 3600, "exp": now + 7200 }),
        &jsonwebtoken::EncodingKey::from_secret(b"k3y"),
    )
    .expect("sign");
    let (answer, _) = client.read(&crate::proto::ReadRequest { jwt: early, ..whole(fid) });
    assert_eq!(answer.status, Status::Unauthorized, "token not valid yet (nbf)");
    let right = super::super::mint_jwt("k3y", &fid, None).expect("mint");
    let (answer, _) = client.read(&crate::proto::ReadRequest { jwt: right, ..whole(fid) });
    assert_eq!(answer.status, Status::Internal, "accepted, then upstream unreachable");
}
