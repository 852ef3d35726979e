//! A stand-in volume server for tests that need needle bytes but no SeaweedFS: it answers
//! `GET /<fid>` with the blob registered for that fid (whole, or the `Range` asked for, as
//! a volume server does) and 404 for any other, one request per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use crate::fid::FileId;

/// Serves until the test process ends (the thread is detached; the port is never reused).
pub(in crate::sidecar) struct FakeVolume {
    addr: String,
}

impl FakeVolume {
    /// Serves `needles` on a free loopback port.
    pub(in crate::sidecar) fn start(needles: &[(FileId, Vec<u8>)]) -> FakeVolume {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let blobs: HashMap<String, Vec<u8>> =
            needles.iter().map(|(fid, data)| (format!("/{fid}"), data.clone())).collect();
        let blobs = Arc::new(blobs);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let blobs = Arc::clone(&blobs);
                std::thread::spawn(move || answer(stream, &blobs));
            }
        });
        FakeVolume { addr }
    }

    /// `host:port`, for `--volume-server`.
    pub(in crate::sidecar) fn addr(&self) -> &str {
        &self.addr
    }
}

fn answer(mut stream: TcpStream, blobs: &HashMap<String, Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = value.trim().strip_prefix("bytes=").map(str::to_owned);
            }
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let Some(blob) = blobs.get(path) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let total = blob.len();
    let (status, extra, body) = match range.as_deref().and_then(|r| r.split_once('-')) {
        None => ("200 OK", String::new(), &blob[..]),
        Some((first, last)) => {
            let first: usize = first.parse().unwrap_or(0);
            let last = last
                .parse::<usize>()
                .map_or(total.saturating_sub(1), |l| l.min(total.saturating_sub(1)));
            if first >= total {
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                return;
            }
            (
                "206 Partial Content",
                format!("Content-Range: bytes {first}-{last}/{total}\r\n"),
                &blob[first..=last],
            )
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
}
