//! `sdn-tunnel probe`: a minimal pod-to-pod check across clusters, run in ordinary (not
//! hostNetwork) pods of the agent image by the Ansible playbook's verify role (and usable by
//! hand). `serve` answers every TCP connection with one line naming itself; `connect` dials
//! targets and reports, as JSON, who answered and how long it took.

use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The first word of every answer: `sdn-tunnel-probe <name>\n`.
pub const GREETING: &str = "sdn-tunnel-probe";

/// Serves forever: each connection gets `sdn-tunnel-probe <name>` and is closed.
pub fn serve(listen: SocketAddr, name: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("probe: {name} listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        match conn {
            // Best effort: a client that went away is not our problem.
            Ok(mut s) => {
                let _ = writeln!(s, "{GREETING} {name}");
            }
            Err(e) => eprintln!("probe: accept: {e}"),
        }
    }
    Ok(())
}

/// One target's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub target: String,
    pub ok: bool,
    /// The name the target answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Connect plus first line, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Dials each target once (within `timeout`).
pub fn connect(targets: &[SocketAddr], timeout: Duration) -> Vec<ProbeResult> {
    targets
        .iter()
        .map(|&t| {
            let t0 = Instant::now();
            let r = (|| -> std::io::Result<String> {
                let s = TcpStream::connect_timeout(&t, timeout)?;
                s.set_read_timeout(Some(timeout))?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                parse_answer(&line).ok_or_else(|| {
                    std::io::Error::other(format!("not a probe answer: {:?}", line.trim()))
                })
            })();
            let millis = (t0.elapsed().as_secs_f64() * 1e4).round() / 10.0;
            match r {
                Ok(answer) => ProbeResult {
                    target: t.to_string(),
                    ok: true,
                    answer: Some(answer),
                    millis: Some(millis),
                    error: None,
                },
                Err(e) => ProbeResult {
                    target: t.to_string(),
                    ok: false,
                    answer: None,
                    millis: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .collect()
}

/// `sdn-tunnel-probe <name>` -> name.
pub fn parse_answer(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix(GREETING)?.strip_prefix(' ')?;
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_and_connect() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        std::thread::spawn(move || serve(addr, "east/probe-1"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = loop {
            let r = connect(&[addr], Duration::from_secs(1));
            if r[0].ok || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(r[0].ok, "{r:?}");
        assert_eq!(r[0].answer.as_deref(), Some("east/probe-1"));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = connect(&[closed], Duration::from_millis(500));
        assert!(!r[0].ok && r[0].error.is_some());
        assert_eq!(parse_answer("hello\n"), None);
        assert_eq!(parse_answer("sdn-tunnel-probe \n"), None);
    }
}
