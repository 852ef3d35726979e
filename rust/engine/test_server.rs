//! A test double of OUR sidecar protocol (not of SeaweedFS): serves needles from an
//! in-memory map over `crate::proto`, and can misbehave on demand (answer out of order,
//! stall, close mid-payload, send garbage).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::proto::{self, DataHeader, FrameHeader, Hello, HelloAck, Kind, ReadRequest, Status};

/// How the server answers READs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answer each READ at once.
    Normal,
    /// Hold READs until this many arrived on the connection, then answer newest first.
    Reverse(usize),
    /// Send nothing for this long, then the whole answer.
    StallLate(Duration),
    /// Send the header and half the payload, wait this long, then the rest.
    StallMid(Duration),
    /// Send the header and half the payload, then close the connection.
    CloseMid,
    /// Answer a READ with bytes that are not a frame.
    Garbage,
    /// Answer HELLO with bytes that are not a HELLO_ACK.
    GarbageHandshake,
    /// Answer every READ with this status.
    Refuse(Status),
    /// Answer each READ under its own id with the needle of the next key and that READ's
    /// echo: what a client sees when another process shares its connection.
    Crossed,
}

/// One stored needle.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) cookie: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) flags: u8,
    pub(crate) crc: u32,
    pub(crate) deleted: bool,
}

impl Stored {
    /// A live needle with a correct CRC.
    pub(crate) fn new(cookie: u32, data: Vec<u8>) -> Stored {
        let crc = crc32c::crc32c(&data);
        Stored { cookie, data, flags: 0, crc, deleted: false }
    }
}

#[derive(Debug)]
struct State {
    needles: HashMap<(u32, u64), Stored>,
    mode: Mutex<Mode>,
    max_read: u32,
    max_inflight: u32,
    accepted: AtomicUsize,
}

/// A running test server; stops (closing every connection) when dropped.
pub(crate) struct TestServer {
    pub(crate) addr: String,
    state: Arc<State>,
    _rt: Runtime,
}

impl TestServer {
    /// Starts on a free loopback port.
    pub(crate) fn start(needles: HashMap<(u32, u64), Stored>, mode: Mode) -> TestServer {
        TestServer::start_on("127.0.0.1:0", needles, mode, 1 << 20, 64)
    }

    /// Starts on `addr` with the given grants.
    pub(crate) fn start_on(
        addr: &str,
        needles: HashMap<(u32, u64), Stored>,
        mode: Mode,
        max_read: u32,
        max_inflight: u32,
    ) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test server runtime");
        let listener = rt.block_on(TcpListener::bind(addr)).expect("bind test server");
        let local: SocketAddr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            needles,
            mode: Mutex::new(mode),
            max_read,
            max_inflight,
            accepted: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_state.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, accept_state.clone()));
            }
        });
        TestServer { addr: local.to_string(), state, _rt: rt }
    }

    /// Changes how later READs are answered.
    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode lock") = mode;
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

/// The DATA frame answering `req` (whose body has the echo `echo`), split into (frame
/// header + DATA header, payload).
fn answer(state: &State, id: u32, echo: u32, req: &ReadRequest) -> (Vec<u8>, Vec<u8>) {
    let found = state.needles.get(&(req.volume, req.key)).filter(|n| n.cookie == req.cookie);
    let (data, payload) = match found {
        None => (DataHeader::error(Status::NotFound), Vec::new()),
        Some(n) if n.deleted => (DataHeader::error(Status::Deleted), Vec::new()),
        Some(_) if !req.whole() && req.length > state.max_read => {
            (DataHeader::error(Status::BadRequest), Vec::new())
        }
        Some(n) => {
            let bytes = if req.whole() {
                n.data.clone()
            } else {
                let start = (req.offset as usize).min(n.data.len());
                let end = (start + req.length as usize).min(n.data.len());
                n.data[start..end].to_vec()
            };
            let header = DataHeader {
                status: Status::Ok,
                needle_flags: n.flags,
                data_len: bytes.len() as u32,
                needle_size: n.data.len() as u32,
                crc: n.crc,
            };
            (header, bytes)
        }
    };
    let body_len = (proto::DATA_HEADER_LEN + payload.len()) as u32;
    let mut head = FrameHeader { kind: Kind::Data, flags: 0, request_id: id, body_len, echo }
        .encode()
        .to_vec();
    head.extend_from_slice(&data.encode());
    (head, payload)
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = [0u8; proto::HELLO_LEN];
    if rd.read_exact(&mut hello).await.is_err() || Hello::decode(&hello).is_err() {
        return;
    }
    let mode = *state.mode.lock().expect("mode lock");
    if mode == Mode::GarbageHandshake {
        let _ = wr.write_all(&[0x5a; proto::HELLO_ACK_LEN]).await;
        return;
    }
    let ack = HelloAck {
        version: proto::VERSION,
        transport: proto::TRANSPORT_TCP,
        max_inflight: state.max_inflight,
        max_frame: 65536,
        max_read: state.max_read,
        server_id: 7,
    };
    if wr.write_all(&ack.encode()).await.is_err() {
        return;
    }
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut held = Vec::new();
    loop {
        let mut raw = [0u8; proto::FRAME_HEADER_LEN];
        if rd.read_exact(&mut raw).await.is_err() {
            return;
        }
        let Ok(header) = FrameHeader::decode(&raw, 65536) else { return };
        let mut body = vec![0u8; header.body_len as usize];
        if rd.read_exact(&mut body).await.is_err() {
            return;
        }
        let id = header.request_id;
        if header.kind == Kind::Ping {
            let pong =
                FrameHeader { kind: Kind::Pong, flags: 0, request_id: id, body_len: 0, echo: 0 };
            let _ = wr.lock().await.write_all(&pong.encode()).await;
            continue;
        }
        let Ok(req) = ReadRequest::decode(&body) else { return };
        let echo = proto::read_echo(&body);
        let mode = *state.mode.lock().expect("mode lock");
        let (head, payload) = if mode == Mode::Crossed {
            let other = (req.volume, req.key + 1);
            let cookie = state.needles.get(&other).map_or(0, |n| n.cookie);
            let theirs = ReadRequest { key: req.key + 1, cookie, ..req.clone() };
            let mut body = Vec::new();
            theirs.encode_into(&mut body).expect("encodes");
            answer(&state, id, proto::read_echo(&body), &theirs)
        } else {
            answer(&state, id, echo, &req)
        };
        match mode {
            Mode::Normal | Mode::GarbageHandshake | Mode::Crossed => {
                send(&wr, &[&head, &payload]).await
            }
            Mode::Reverse(n) => {
                held.push((head, payload));
                if held.len() >= n {
                    for (head, payload) in held.drain(..).rev() {
                        send(&wr, &[&head, &payload]).await;
                    }
                }
            }
            Mode::StallLate(wait) => {
                let wr = wr.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    send(&wr, &[&head, &payload]).await;
                });
            }
            Mode::StallMid(wait) => {
                let half = payload.len() / 2;
                let mut guard = wr.lock().await;
                let _ = guard.write_all(&head).await;
                let _ = guard.write_all(&payload[..half]).await;
                tokio::time::sleep(wait).await;
                let _ = guard.write_all(&payload[half..]).await;
            }
            Mode::CloseMid => {
                let half = payload.len() / 2;
                send(&wr, &[&head, &payload[..half]]).await;
                return;
            }
            Mode::Garbage => send(&wr, &[&[0xab; 40]]).await,
            Mode::Refuse(status) => {
                let header = FrameHeader {
                    kind: Kind::Data,
                    flags: 0,
                    request_id: id,
                    body_len: proto::DATA_HEADER_LEN as u32,
                    echo,
                };
                send(&wr, &[&header.encode(), &DataHeader::error(status).encode()]).await;
            }
        }
    }
}

async fn send(wr: &tokio::sync::Mutex<OwnedWriteHalf>, parts: &[&[u8]]) {
    let _ = wr.lock().await.write_all(&parts.concat()).await;
}
