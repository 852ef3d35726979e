//! Sidecar tests: a sidecar in-process on loopback, a small blocking protocol client built
//! on `std::net` and [`crate::proto`], and (where needles are read) a real SeaweedFS
//! cluster from [`crate::testutil`].

mod fake_volume;
mod hostile;
mod local;
mod protocol;
mod upstream;
mod verbs;
mod verbs_device;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::transport::VerbsBackend;
use super::{Config, Sidecar};
use crate::fid::FileId;
use crate::proto::{
    DataHeader, FrameHeader, Hello, HelloAck, Kind, ReadRequest, DATA_HEADER_LEN, FRAME_HEADER_LEN,
    HELLO_ACK_LEN, READ_WHOLE, TRANSPORT_TCP, TRANSPORT_VERBS, VERSION,
};
use crate::verbs::exchange::ENDPOINT_LEN;
use crate::verbs::{ClientExchange, Endpoint};

/// A sidecar on its own runtime, listening on free loopback ports; stopped on drop.
pub(super) struct TestSidecar {
    rt: tokio::runtime::Runtime,
    sidecar: Option<Sidecar>,
}

impl TestSidecar {
    /// Starts with `args` plus `--listen 127.0.0.1:0 --http 127.0.0.1:0`.
    pub(super) fn start(args: &[&str]) -> TestSidecar {
        TestSidecar::try_start(args, None).expect("sidecar starts")
    }

    /// Starts with `backend` standing in for an RDMA device.
    pub(super) fn start_with_verbs(args: &[&str], backend: Arc<dyn VerbsBackend>) -> TestSidecar {
        TestSidecar::try_start(args, Some(backend)).expect("sidecar starts")
    }

    /// Starts, or says why it cannot.
    pub(super) fn try_start(
        args: &[&str],
        verbs: Option<Arc<dyn VerbsBackend>>,
    ) -> crate::Result<TestSidecar> {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"].map(String::from));
        let config = Config::from_args(&all).expect("test arguments parse");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sidecar = rt.block_on(async move {
            match verbs {
                Some(backend) => Sidecar::start_with_verbs(config, backend).await,
                None => Sidecar::start(config).await,
            }
        })?;
        Ok(TestSidecar { rt, sidecar: Some(sidecar) })
    }

    /// The sidecar's `/stats`.
    pub(super) fn stats(&self) -> serde_json::Value {
        let url = format!("{}/stats", self.http());
        let text = ureq::get(&url).call().expect("stats").body_mut().read_to_string();
        serde_json::from_str(&text.expect("body")).expect("json")
    }

    /// The sidecar's `/metrics`.
    pub(super) fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.http());
        ureq::get(&url).call().expect("metrics").body_mut().read_to_string().expect("body")
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
    /// The sidecar's endpoint when the handshake chose verbs (DATA then has no payload).
    pub(super) server: Option<Endpoint>,
    next_id: u32,
    /// The echo each sent READ's answer must carry, by request id.
    echoes: std::collections::HashMap<u32, u32>,
}

impl Client {
    /// Connects and completes the handshake.
    pub(super) fn connect(addr: SocketAddr) -> Client {
        Client::connect_offering(addr, TRANSPORT_TCP, None)
    }

    /// Connects offering `transports`, sending `exchange` after HELLO when it is given (the
    /// verbs bit should be set then), and completes the handshake.
    pub(super) fn connect_offering(
        addr: SocketAddr,
        transports: u16,
        exchange: Option<&ClientExchange>,
    ) -> Client {
        let mut stream = Client::raw(addr);
        let mut hello = Hello { version: VERSION, transports, max_inflight: 0 }.encode().to_vec();
        if let Some(ex) = exchange {
            hello.extend_from_slice(&ex.encode());
        }
        stream.write_all(&hello).expect("HELLO");
        let mut ack = [0u8; HELLO_ACK_LEN];
        stream.read_exact(&mut ack).expect("HELLO_ACK");
        let ack = HelloAck::decode(&ack).expect("ack decodes");
        assert_eq!(ack.version, VERSION);
        let server = (ack.transport == TRANSPORT_VERBS).then(|| {
            let mut ep = [0u8; ENDPOINT_LEN];
            stream.read_exact(&mut ep).expect("VERBS_ENDPOINT");
            Endpoint::decode(&ep).expect("endpoint decodes")
        });
        Client { stream, ack, server, next_id: 1, echoes: Default::default() }
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
        self.echoes.insert(id, crate::proto::read_echo(&body));
        let header = FrameHeader {
            kind: Kind::Read,
            flags: 0,
            request_id: id,
            body_len: body.len() as u32,
            echo: 0,
        };
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
        if let Some(want) = self.echoes.remove(&frame.request_id) {
            assert_eq!(frame.echo, want, "the answer echoes its READ");
        }
        let inline = if self.server.is_some() { 0 } else { data.data_len as usize };
        assert_eq!(
            body.len(),
            DATA_HEADER_LEN + inline,
            "payload: data_len over tcp, none over verbs"
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
        let frame =
            FrameHeader { kind: Kind::Ping, flags: 0, request_id: 77, body_len: 0, echo: 0 };
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
