//! The cross-platform WireGuard UAPI (https://www.wireguard.com/xplatform/) on a 0600 unix
//! socket, so the standard `wg show <device>` works against our tunnel. Only `get` for now;
//! `set` answers "operation not supported".
//!
//! `get` includes the private key because that is how `wg` learns the interface's public key;
//! the socket is root-only (0600), exactly like wireguard-go's.

use super::device::Device;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Renders the `get=1` answer (pure, given the device state).
pub fn render_get(dev: &Device) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "private_key={}", hex::encode(dev.private_key()));
    let _ = writeln!(s, "listen_port={}", dev.listen_port);
    for p in &dev.peers().peers {
        let info = p.info();
        let stats = p.stats();
        let _ = writeln!(s, "public_key={}", hex::encode(p.public_key));
        if let Some(ep) = p.endpoint() {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            info.persistent_keepalive.unwrap_or(0)
        );
        let (sec, nsec) = stats
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        let _ = writeln!(s, "last_handshake_time_sec={sec}");
        let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(s, "tx_bytes={}", stats.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", stats.rx_bytes);
        for net in &info.allowed_ips {
            let _ = writeln!(s, "allowed_ip={net}");
        }
        let _ = writeln!(s, "protocol_version=1");
    }
    s.push_str("errno=0\n\n");
    s
}

/// Binds a unix socket with mode 0600, replacing a stale socket file left by a crash. The
/// socket is bound inside a fresh 0700 directory beside `path`, made 0600, and renamed into
/// place: no window in which others could connect, and no process-wide umask change (two tasks
/// bind sockets at once).
pub fn bind_private_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = dir.join(format!(".{name}.{}.bind", std::process::id()));
    let _ = std::fs::remove_dir_all(&private); // a leftover of a crashed start
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = UnixListener::bind(&staged)
        .and_then(|l| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            // rename() replaces a stale socket file atomically.
            std::fs::rename(&staged, path)?;
            Ok(l)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())));
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Serves the UAPI until the task is dropped.
pub async fn serve(dev: Arc<Device>, path: PathBuf) -> io::Result<()> {
    let listener = bind_private_socket(&path)?;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of fds and the like: the socket keeps serving once the cause is gone.
            Err(e) => {
                tracing::warn!(error = %e, "uapi accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let dev = dev.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(dev, stream).await {
                tracing::debug!(error = %e, "uapi client");
            }
        });
    }
}

/// Most request bytes (line contents, without newlines) per operation.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// What a connection's reader does after one request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep reading (the operation's request is not complete yet).
    More,
    /// Answer `get=1`.
    Get,
    /// Answer "operation not supported" (`set=1`).
    Unsupported,
    /// Answer "invalid argument" (an unknown or missing operation).
    Invalid,
    /// The request exceeded [`MAX_REQUEST_BYTES`]: answer "invalid argument" and close.
    TooLong,
}

/// The request side of one UAPI connection, one line at a time (pure: the socket loop in
/// `handle` feeds it lines and writes the answers). An operation is its first line; an empty
/// line ends it. Public for fuzzing.
#[derive(Debug, Default)]
pub struct RequestReader {
    op: Option<String>,
    total: usize,
}

impl RequestReader {
    /// Takes one line (without its newline).
    pub fn line(&mut self, line: String) -> Action {
        self.total += line.len();
        if self.total > MAX_REQUEST_BYTES {
            return Action::TooLong;
        }
        if line.is_empty() {
            self.total = 0;
            return match self.op.take().as_deref() {
                Some("get=1") => Action::Get,
                Some("set=1") => Action::Unsupported,
                _ => Action::Invalid,
            };
        }
        if self.op.is_none() {
            self.op = Some(line);
        }
        Action::More
    }
}

async fn handle(dev: Arc<Device>, stream: tokio::net::UnixStream) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // Bounded: a client gets 4 KiB of request per operation and must end it with an empty
    // line; a line is never buffered beyond that (a client that sends no newline is cut off).
    let mut reader = RequestReader::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_REQUEST_BYTES + 2) as u64; // the longest allowed line and its "\r\n"
        let n = (&mut r).take(limit).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // As `lines()` would give it: without "\n" or "\r\n"; a last line may lack them.
        let complete = buf.ends_with(b"\n");
        if complete {
            buf.pop();
            if buf.ends_with(b"\r") {
                buf.pop();
            }
        }
        let action = if !complete && n as u64 >= limit {
            Action::TooLong // longer than any request may be: not buffered further
        } else {
            let line = String::from_utf8(std::mem::take(&mut buf))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            reader.line(line)
        };
        let reply = match action {
            Action::More => continue,
            Action::TooLong => {
                w.write_all(b"errno=22\n\n").await?;
                return Ok(());
            }
            Action::Get => render_get(&dev),
            Action::Unsupported => "errno=95\n\n".to_string(),
            Action::Invalid => "errno=22\n\n".to_string(),
        };
        w.write_all(reply.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, RequestReader, MAX_REQUEST_BYTES};

    fn feed(lines: &[&str]) -> Vec<Action> {
        let mut r = RequestReader::default();
        lines.iter().map(|l| r.line(l.to_string())).collect()
    }

    #[test]
    fn operations_end_with_an_empty_line() {
        use Action::*;
        assert_eq!(feed(&["get=1", ""]), [More, Get]);
        assert_eq!(
            feed(&["set=1", "private_key=00", ""]),
            [More, More, Unsupported]
        );
        assert_eq!(feed(&["", "bogus=1", ""]), [Invalid, More, Invalid]);
        // the first line names the operation; later lines are its arguments
        assert_eq!(
            feed(&["get=1", "set=1", "", "get=1", ""]),
            [More, More, Get, More, Get]
        );
    }

    /// A client that never ends its line is answered "invalid argument" and cut off after
    /// about 4 KiB, not buffered without bound.
    #[tokio::test]
    async fn a_line_without_end_is_cut_off() {
        use std::os::fd::OwnedFd;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (tun_end, _peer_end) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let tun = crate::tunnel::tun::Tun::from_fd(OwnedFd::from(tun_end), "uapitest0");
        let udp = crate::tunnel::udp::Udp::bind(0, 1 << 16).unwrap();
        let dev = crate::tunnel::Device::new(tun, udp, [7u8; 32]).unwrap();
        let (client, server) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(super::handle(dev, server));
        let (mut rd, mut wr) = client.into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1024];
            // Far more than the limit; the server stops reading long before the end.
            for _ in 0..1024 {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Still connected, still no newline: only a bounded reader answers now.
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            drop(wr);
        });
        // The server closes with our unread bytes queued: the end may come as a reset.
        let mut reply = Vec::new();
        let mut b = [0u8; 64];
        loop {
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut b));
            match read
                .await
                .expect("no answer: the line is still being buffered")
            {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(reply, b"errno=22\n\n");
        served.await.unwrap().unwrap();
        writer.abort();
    }

    #[test]
    fn request_size_is_bounded_per_operation() {
        let long = "x".repeat(MAX_REQUEST_BYTES);
        assert_eq!(feed(&[&long, ""]), [Action::More, Action::Invalid]);
        assert_eq!(feed(&[&long, "y"]), [Action::More, Action::TooLong]);
        // the budget starts again with each operation
        assert_eq!(feed(&[&long, "", &long, ""])[3], Action::Invalid);
    }
}
