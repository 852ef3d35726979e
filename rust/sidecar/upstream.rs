//! Needles the sidecar cannot read itself (a volume not in its directories, an EC volume, a
//! volume file it does not understand), fetched over HTTP from a volume server and then
//! served like local ones, so "not local" is never an answer the client sees.
//!
//! Every request asks with `Accept-Encoding: gzip`, so a compressed needle comes back as
//! stored (and a `Range` applies to the stored bytes), exactly what a local read returns;
//! `?cm=false` returns a chunk manifest's own bytes rather than the file it describes.
//! An HTTP answer tells the compressed flag (`Content-Encoding`) but not the rest of the
//! needle's flags byte, so upstream answers carry only that bit.
//! Blocking (ureq): callers run this on blocking threads.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::read::DataMeta;
use super::read::Span;
use super::staging::{Lease, StagingPool};
use crate::fid::FileId;
use crate::needle::FLAG_COMPRESSED;
use crate::proto::Status;

/// How long a master's answer about a volume's location is reused.
const LOOKUP_TTL: Duration = Duration::from_secs(30);
/// Deadline of one upstream request, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Target {
    VolumeServer(String),
    Master { url: String, local_hosts: Vec<String> },
}

/// What an upstream fetch came to.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The bytes are in the lease.
    Done { meta: DataMeta, lease: Lease },
    /// An answer without data (NOT_FOUND, UNAUTHORIZED, BAD_REQUEST, BUSY).
    Refused(Status),
}

/// The volume server(s) behind this sidecar.
#[derive(Debug)]
pub(crate) struct Upstream {
    target: Target,
    agent: ureq::Agent,
    lookups: Mutex<HashMap<u32, (Instant, String)>>,
}

/// `host:port` or a URL, as a base URL without a trailing slash.
fn base_url(text: &str) -> String {
    let text = text.trim_end_matches('/');
    if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    }
}

/// Host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let addr = addr.rsplit_once("://").map_or(addr, |(_, rest)| rest);
    let host = match addr.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    host
}

impl Upstream {
    /// Fetches from `volume_server`, or from whichever server `master` names for a volume,
    /// preferring one on this host (`listen` is the sidecar's own address).
    pub(crate) fn new(volume_server: Option<&str>, master: Option<&str>, listen: &str) -> Upstream {
        let target = match (volume_server, master) {
            (Some(vs), _) => Target::VolumeServer(base_url(vs)),
            (None, Some(m)) => {
                let mut local_hosts: Vec<String> =
                    ["127.0.0.1", "localhost", "::1"].iter().map(|h| (*h).to_owned()).collect();
                let own = host_of(listen);
                if !own.is_empty() && own != "0.0.0.0" && own != "::" {
                    local_hosts.push(own.to_owned());
                }
                if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                    local_hosts.push(name.trim().to_owned());
                }
                Target::Master { url: base_url(m), local_hosts }
            }
            // The command line requires one of the two; an empty target fails every fetch.
            (None, None) => Target::VolumeServer(String::new()),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        Upstream { target, agent, lookups: Mutex::default() }
    }

    /// Where to send requests for volume `vid`; `None` when the master knows no such volume.
    fn server_for(&self, vid: u32) -> Result<Option<String>, String> {
        let (master, local_hosts) = match &self.target {
            Target::VolumeServer(url) if url.is_empty() => {
                return Err("no --volume-server or --master".into())
            }
            Target::VolumeServer(url) => return Ok(Some(url.clone())),
            Target::Master { url, local_hosts } => (url, local_hosts),
        };
        if let Some((at, url)) =
            self.lookups.lock().unwrap_or_else(PoisonError::into_inner).get(&vid)
        {
            if at.elapsed() < LOOKUP_TTL {
                return Ok(Some(url.clone()));
            }
        }
        let lookup = format!("{master}/dir/lookup?volumeId={vid}");
        let mut response =
            self.agent.get(&lookup).call().map_err(|e| format!("GET {lookup}: {e}"))?;
        let status = response.status().as_u16();
        let text =
            response.body_mut().read_to_string().map_err(|e| format!("GET {lookup}: {e}"))?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("GET {lookup} answered {status}: {text}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {lookup}: {e}"))?;
        let urls: Vec<&str> = answer["locations"]
            .as_array()
            .map(|locs| locs.iter().filter_map(|l| l["url"].as_str()).collect())
            .unwrap_or_default();
        let chosen = urls
            .iter()
            .find(|u| local_hosts.iter().any(|h| h == host_of(u)))
            .or(urls.first())
            .ok_or_else(|| format!("the master lists no location for volume {vid}"))?;
        let url = base_url(chosen);
        self.lookups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(vid, (Instant::now(), url.clone()));
        Ok(Some(url))
    }

    /// Fetches `span` of the needle `fid` into a staging lease. Runs on a blocking thread;
    /// `rt` is used to wait for staging slabs.
    ///
    /// # Errors
    /// A message for anything that is not a plain answer (unreachable server, unexpected
    /// status, short body); the client gets INTERNAL and falls back.
    pub(crate) fn fetch(
        &self,
        fid: &FileId,
        span: Span,
        jwt: &str,
        pool: &StagingPool,
        rt: &Handle,
        max_read: u64,
    ) -> Result<Fetched, String> {
        let Some(server) = self.server_for(fid.volume)? else {
            return Ok(Fetched::Refused(Status::NotFound));
        };
        let url = format!("{server}/{fid}?cm=false");
        let mut request = self.agent.get(&url).header("Accept-Encoding", "gzip");
        if span != Span::WHOLE {
            // An empty range cannot be asked for; one byte is asked for and none kept.
            let range = match span.offset.checked_add(span.len.max(1) - 1) {
                Some(last) if span.len != u64::MAX => format!("bytes={}-{last}", span.offset),
                _ => format!("bytes={}-", span.offset),
            };
            request = request.header("Range", &range);
        }
        if !jwt.is_empty() {
            request = request.header("Authorization", &format!("Bearer {jwt}"));
        }
        let mut response = request.call().map_err(|e| {
            self.lookups.lock().unwrap_or_else(PoisonError::into_inner).remove(&fid.volume);
            format!("GET {url}: {e}")
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let encoding = header("content-encoding").unwrap_or_default();
        let flags = if matches!(encoding.as_str(), "gzip" | "zstd") { FLAG_COMPRESSED } else { 0 };
        // The volume server's ETag is the quoted hex of the stored CRC.
        let crc = header("etag")
            .and_then(|e| u32::from_str_radix(e.trim_matches('"'), 16).ok())
            .unwrap_or(0);
        // `bytes FIRST-LAST/TOTAL`, or `bytes */TOTAL` on a 416.
        let content_range = header("content-range").unwrap_or_default();
        let (range, total_from_range) = content_range.rsplit_once('/').unwrap_or(("", ""));
        let total_from_range = total_from_range.parse::<u64>().ok();
        let range_len =
            range.trim_start_matches("bytes ").split_once('-').and_then(|(first, last)| {
                let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
                last.checked_sub(first).map(|d| d + 1)
            });
        let content_length = response.body().content_length();
        let meta = |total: u64| DataMeta {
            flags,
            crc,
            data_size: u32::try_from(total).unwrap_or(u32::MAX),
        };
        let (total, skip, len) = match status {
            404 => return Ok(Fetched::Refused(Status::NotFound)),
            401 | 403 => return Ok(Fetched::Refused(Status::Unauthorized)),
            // A range that starts at or past the end: an empty answer, as a local read gives.
            416 => (total_from_range.unwrap_or(0), 0, 0),
            206 => {
                let total = total_from_range
                    .ok_or_else(|| format!("GET {url}: 206 without Content-Range"))?;
                let len = range_len
                    .or(content_length)
                    .ok_or_else(|| format!("GET {url}: 206 of unknown length"))?;
                (total, 0, if span.len == 0 { 0 } else { len })
            }
            200 => {
                let total =
                    content_length.ok_or_else(|| format!("GET {url}: no Content-Length"))?;
                // A whole answer to a ranged request (an empty needle): cut the range out.
                let (start, len) = span.clamp(u32::try_from(total).unwrap_or(u32::MAX));
                (total, start, len)
            }
            other => {
                let text = response.body_mut().read_to_string().unwrap_or_default();
                return Err(format!("GET {url} answered {other}: {}", text.trim()));
            }
        };
        if len > max_read {
            return Ok(Fetched::Refused(Status::BadRequest));
        }
        let Some(mut lease) = rt.block_on(pool.acquire(len as usize, super::STAGING_WAIT)) else {
            return Ok(Fetched::Refused(Status::Busy));
        };
        let mut body = response.body_mut().as_reader();
        let read = io::copy(&mut (&mut body).take(skip), &mut io::sink()).and_then(|skipped| {
            if skipped < skip {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            lease.chunks_mut().try_for_each(|chunk| body.read_exact(chunk))
        });
        read.map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        Ok(Fetched::Done { meta: meta(total), lease })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(base_url("127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(base_url("https://vs:1"), "https://vs:1");
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("http://host:80"), "host");
        assert_eq!(host_of("[::1]:9"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }
}
