//! The WireGuard UAPI request side (`tunnel::uapi`): the pure line reader `RequestReader`
//! against a model written from the protocol (operations end with an empty line; the first
//! line names the operation; at most `MAX_REQUEST_BYTES` of line content per operation), and
//! the real socket server (`uapi::serve` over a unix socket, a `Device` on a socketpair)
//! against the replies the model predicts.
//!
//! Input: the bytes a client writes on one connection (then it shuts down its write side).
//! Lines are split the way the server's `BufReader::lines()` does: on `\n`, a `\r` before it
//! dropped, the last line kept without its newline, reading stopping at a line that is not
//! UTF-8.
//!
//! Asserts:
//! - `RequestReader::line` returns, for every line, the model's action (More for a line that
//!   continues an operation, Get/Unsupported/Invalid for the empty line that ends one, TooLong
//!   as soon as the operation's bytes exceed the limit);
//! - the server's reply bytes are exactly the concatenation the model predicts (`errno=22`,
//!   `errno=95`, the `get` dump, nothing after TooLong), and the connection is closed;
//! - the `get` dump is well formed (checked once at start-up: key=value lines of the known
//!   keys, 64-hex keys, one block per peer, ending with `errno=0` and an empty line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdn_tunnel::model::DesiredPeer;
use sdn_tunnel::tunnel::device::Device;
use sdn_tunnel::tunnel::tun::Tun;
use sdn_tunnel::tunnel::uapi::{self, Action, RequestReader, MAX_REQUEST_BYTES};
use sdn_tunnel::tunnel::udp::Udp;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    rt: tokio::runtime::Runtime,
    path: PathBuf,
    get_reply: String,
    _dev: Arc<Device>,
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fresh fds we then own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair");
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Checks the `get=1` answer line by line (the format of wireguard.com/xplatform).
fn check_get_dump(s: &str, dev: &Device) {
    assert!(s.ends_with("errno=0\n\n"), "{s:?}");
    let body = &s[..s.len() - "errno=0\n\n".len()];
    let mut peers = 0;
    let is_hex64 = |v: &str| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
    for (i, line) in body.lines().enumerate() {
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        match k {
            "private_key" => assert!(i == 0 && is_hex64(v), "{line:?}"),
            "listen_port" => assert_eq!(v.parse::<u16>().unwrap(), dev.listen_port),
            "public_key" => {
                assert!(is_hex64(v), "{line:?}");
                peers += 1;
            }
            "endpoint" => {
                v.parse::<std::net::SocketAddr>().unwrap();
            }
            "allowed_ip" => {
                v.parse::<ipnetwork::IpNetwork>().unwrap();
            }
            "persistent_keepalive_interval"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec"
            | "tx_bytes"
            | "rx_bytes" => {
                v.parse::<u64>().unwrap();
            }
            "protocol_version" => assert_eq!(v, "1"),
            _ => panic!("unknown key in {line:?}"),
        }
    }
    assert_eq!(peers, dev.peers().peers.len());
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let (tun_fd, _other) = socketpair();
        std::mem::forget(_other); // keep the peer end open for the process's lifetime
        let udp = Udp::bind(0, 1 << 16).expect("bind udp");
        let dev = Device::new(Tun::from_fd(tun_fd, "fuzz0"), udp, [7u8; 32]).expect("device");
        let peer = |i: u8, ep: Option<&str>, nets: &[&str]| DesiredPeer {
            remote: "west".into(),
            name: Some(format!("b{i}")),
            public_key: sdn_tunnel::keys::public_from_private(&[i; 32]),
            // A configured endpoint makes set_peers send an initiation: none here, so the
            // dump stays the same for every input.
            endpoint: ep.map(|e| e.parse().unwrap()),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            persistent_keepalive: Some(25),
        };
        dev.set_peers(&[
            peer(1, None, &["10.132.1.0/24", "fd00:132:1::/64"]),
            peer(2, None, &["10.132.2.0/24"]),
        ]);
        let get_reply = uapi::render_get(&dev);
        check_get_dump(&get_reply, &dev);
        let dir = std::env::temp_dir().join(format!("sdn-fuzz-uapi-{}", std::process::id()));
        let path = dir.join("fuzz0.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (d, p) = (dev.clone(), path.clone());
        rt.spawn(async move { uapi::serve(d, p).await });
        // Let the listener bind.
        rt.block_on(async {
            for _ in 0..200 {
                if path.exists() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            panic!("uapi socket never appeared");
        });
        Server {
            rt,
            path,
            get_reply,
            _dev: dev,
        }
    })
}

/// Splits like tokio's `lines()`: `None` for a line that is not UTF-8 (the server stops there).
fn split_lines(data: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // A `\r` goes only with a `\n`: the last line keeps a trailing `\r`.
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                (line.strip_suffix(b"\r").unwrap_or(line), &rest[i + 1..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        match std::str::from_utf8(line) {
            Ok(s) => out.push(Some(s.to_string())),
            Err(_) => {
                out.push(None);
                break;
            }
        }
        rest = next;
    }
    out
}

/// The protocol as a model: for each line, what the server must do.
fn model(lines: &[String]) -> Vec<Action> {
    let mut out = Vec::new();
    let mut first: Option<&str> = None;
    let mut bytes = 0usize;
    for l in lines {
        bytes += l.len();
        if bytes > MAX_REQUEST_BYTES {
            out.push(Action::TooLong);
            return out;
        }
        if l.is_empty() {
            out.push(match first {
                Some("get=1") => Action::Get,
                Some("set=1") => Action::Unsupported,
                _ => Action::Invalid,
            });
            first = None;
            bytes = 0;
        } else {
            first.get_or_insert(l);
            out.push(Action::More);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let split = split_lines(data);
    let lines: Vec<String> = split.iter().map_while(|l| l.clone()).collect();
    let want = model(&lines);

    let mut reader = RequestReader::default();
    let mut got = Vec::new();
    for l in &lines {
        let a = reader.line(l.clone());
        got.push(a);
        if a == Action::TooLong {
            break;
        }
    }
    assert_eq!(got, want, "lines {lines:?}");

    let s = server();
    let mut expect = Vec::new();
    for a in &want {
        match a {
            Action::More => {}
            Action::Get => expect.extend_from_slice(s.get_reply.as_bytes()),
            Action::Unsupported => expect.extend_from_slice(b"errno=95\n\n"),
            Action::Invalid | Action::TooLong => expect.extend_from_slice(b"errno=22\n\n"),
        }
    }
    let reply = s.rt.block_on(async {
        let mut c = tokio::net::UnixStream::connect(&s.path).await.unwrap();
        let (mut r, mut w) = c.split();
        // Write and read at once: a long request must not deadlock on full socket buffers
        // (the server stops reading after TooLong).
        let write = async {
            let _ = w.write_all(data).await;
            let _ = w.shutdown().await;
        };
        let mut buf = Vec::new();
        let read = async {
            let _ = r.read_to_end(&mut buf).await;
        };
        let done = async { tokio::join!(write, read) };
        tokio::time::timeout(std::time::Duration::from_secs(10), done)
            .await
            .expect("the server neither answered nor closed the connection");
        buf
    });
    assert!(
        reply == expect,
        "reply {:?}\nwant  {:?}",
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(&expect)
    );
});
