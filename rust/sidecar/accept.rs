//! The accept loop both listeners share.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::warn;

/// The next connection, or `None` once shutdown is signalled. Finished connection tasks
/// are reaped meanwhile. After a failed accept (usually out of file descriptors) it pauses
/// briefly, so connections can close, and tries again.
pub(super) async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    conns: &mut JoinSet<()>,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return None,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                warn!("accepting {what} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
