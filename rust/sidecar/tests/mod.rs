//! Sidecar tests: a sidecar in-process on loopback, a small blocking protocol client built
//! on `std::net` and [`crate::proto`], and (where needles are read) a real SeaweedFS
//! cluster from [`crate::testutil`].

mod local;
mod protocol;
mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::{Config, Sidecar};
use crate::fid::FileId;
use crate::proto::{
    DataHeader, FrameHeader, Hello, HelloAck, Kind, ReadRequest, DATA_HEADER_LEN, FRAME_HEADER_LEN,
    HELLO_ACK_LEN, READ_WHOLE, TRANSPORT_TCP, VERSION,
};

/// A sidecar on its own runtime, listening on free loopback ports; stopped on drop.
pub(super) struct TestSidecar {
    rt: tokio::runtime::Runtime,
    sidecar: Option<Sidecar>,
}

impl TestSidecar {
    /// Starts with `args` plus `--listen 127.0.0.1:0 --http 127.0.0.1:0`.
    pub(super) fn start(args: &[&str]) -> TestSidecar {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"].map(String::from));
        let config = Config::from_args(&all).expect("test arguments parse");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sidecar = rt.block_on(Sidecar::start(config)).expect("sidecar starts");
        TestSidecar { rt, sidecar: Some(sidecar) }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.sidecar.as_ref().expect("running").listen_addr()
    }

    pub(super) fn http(&self) -> String {
        format!(
            "http://{}",
            self.sidecar.as_ref().and_then(Sidecar::http_addr).expect("http listener")
        )
    }

    pub(super) fn connect(&self) -> Client {
        Client::connect(self.addr())
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        if let Some(sidecar) = self.sidecar.take() {
            self.rt.block_on(sidecar.shutdown());
        }
    }
}

/// A READ for `len` bytes at `offset`.
pub(super) fn ranged(fid: FileId, offset: u64, len: u32) -> ReadRequest {
    ReadRequest {
        volume: fid.volume,
        cookie: fid.cookie,
        key: fid.key,
        offset,
        length: len,
        ..Default::default()
    }
}

/// A READ for the whole needle.
pub(super) fn whole(fid: FileId) -> ReadRequest {
    ReadRequest { flags: READ_WHOLE, ..ranged(fid, 0, 0) }
}

pub(super) fn dir_arg(path: &Path) -> String {
    path.display().to_string()
}

/// A blocking protocol client.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) ack: HelloAck,
    next_id: u32,
}

impl Client {
    /// Connects and completes the handshake.
    pub(super) fn connect(addr: SocketAddr) -> Client {
        let mut stream = Client::raw(addr);
        stream
            .write_all(
                &Hello { version: VERSION, transports: TRANSPORT_TCP, max_inflight: 0 }.encode(),
            )
            .expect("HELLO");
        let mut ack = [0u8; HELLO_ACK_LEN];
        stream.read_exact(&mut ack).expect("HELLO_ACK");
        let ack = HelloAck::decode(&ack).expect("ack decodes");
        assert_eq!(ack.version, VERSION);
        Client { stream, ack, next_id: 1 }
    }

    /// A connected socket with nothing sent yet.
    pub(super) fn raw(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream
    }

    pub(super) fn send(&mut self, req: &ReadRequest) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = Vec::new();
        req.encode_into(&mut body).expect("encodes");
        let header =
            FrameHeader { kind: Kind::Read, flags: 0, request_id: id, body_len: body.len() as u32 };
        self.stream.write_all(&[&header.encode()[..], &body].concat()).expect("send READ");
        id
    }

    /// The next DATA answer: `(request id, header, payload)`.
    pub(super) fn recv(&mut self) -> (u32, DataHeader, Vec<u8>) {
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.stream.read_exact(&mut head).expect("frame header");
        let frame = FrameHeader::decode(&head, u32::MAX).expect("frame decodes");
        assert_eq!(frame.kind, Kind::Data);
        let mut body = vec![0u8; frame.body_len as usize];
        self.stream.read_exact(&mut body).expect("frame body");
        let data = DataHeader::decode(&body).expect("DATA decodes");
        assert_eq!(
            body.len(),
            DATA_HEADER_LEN + data.data_len as usize,
            "payload length matches data_len"
        );
        (frame.request_id, data, body.split_off(DATA_HEADER_LEN))
    }

    /// Sends one READ and waits for its answer.
    pub(super) fn read(&mut self, req: &ReadRequest) -> (DataHeader, Vec<u8>) {
        let id = self.send(req);
        let (got, header, payload) = self.recv();
        assert_eq!(got, id);
        (header, payload)
    }

    pub(super) fn ping(&mut self) {
        let frame = FrameHeader { kind: Kind::Ping, flags: 0, request_id: 77, body_len: 0 };
        self.stream.write_all(&frame.encode()).expect("PING");
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.stream.read_exact(&mut head).expect("PONG");
        let pong = FrameHeader::decode(&head, 0).expect("PONG decodes");
        assert_eq!((pong.kind, pong.request_id), (Kind::Pong, 77));
    }
}

/// Whether the peer has closed `stream` (EOF or reset), waiting up to `wait`.
pub(super) fn closed_by_peer(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a version-0 HELLO_ACK before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Whether `stored` is the CRC32-C of `data` in either stored form.
pub(super) fn crc_ok(data: &[u8], stored: u32) -> bool {
    crate::needle::crc_matches(data, stored)
}
