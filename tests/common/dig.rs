//! Reading `dig`'s text output in tests (the real dig is the reference client).

use std::net::SocketAddr;

/// `dig @<ip> -p <port> +time=<time_secs> +tries=1 <args>`; returns stdout.
pub fn dig(server: SocketAddr, time_secs: u32, args: &[&str]) -> String {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let time = format!("+time={time_secs}");
    let mut all = vec![at.as_str(), "-p", &port, &time, "+tries=1"];
    all.extend_from_slice(args);
    super::run("dig", &all)
}

/// The rcode of the answer (`NOERROR`, `NXDOMAIN`, ...).
pub fn status(out: &str) -> &str {
    let s = out
        .split("status: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no status in {out}"));
    &s[..s.find(',').unwrap()]
}

/// The header flags (`qr`, `aa`, `tc`, ...).
pub fn flags(out: &str) -> Vec<&str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_else(|| panic!("no flags in {out}"));
    let f = &line[";; flags:".len()..];
    f[..f.find(';').unwrap()].split_whitespace().collect()
}
