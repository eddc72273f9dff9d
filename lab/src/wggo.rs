//! Debian's wireguard-go as a foreign WireGuard node (interop) or a benchmark baseline,
//! configured with the standard `wg` tool and `ip` routes. The benchmark's other userspace
//! references (a current wireguard-go, boringtun-cli) are started the same way: each takes
//! the device name, creates the TUN device and a UAPI socket in [`WG_RUN_DIR`], and is
//! configured with `wg set` ([`Daemon`], [`start_daemon`]).

use crate::netns::{command, exec_ok, ip, wait_for};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Directory where wireguard-go (and our agent, with runDir /var/run) put UAPI sockets.
pub const WG_RUN_DIR: &str = "/var/run/wireguard";

/// A peer as configured with `wg set ... peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    /// `ip:port` or `[ip6]:port`.
    pub endpoint: Option<String>,
    pub persistent_keepalive: u16,
}

/// What to bring up: device `device` in namespace `ns`.
#[derive(Debug, Clone)]
pub struct WgGoConfig<'a> {
    pub ns: &'a str,
    pub device: &'a str,
    pub private_key_file: &'a Path,
    pub listen_port: u16,
    pub mtu: u16,
    pub peers: Vec<WgPeer>,
    /// Routed into the device.
    pub routes: Vec<String>,
    /// Preferred source for the routes (an address inside the node's pod CIDR).
    pub route_src: Option<Ipv4Addr>,
    pub log_file: &'a Path,
}

/// The userspace WireGuard program that serves a device, and how it is started (always in
/// the foreground, as root, its output appended to the config's log file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// `<program> <device>` with `WG_PROCESS_FOREGROUND=1` and `LOG_LEVEL=<log_level>`
    /// (`error`, or `verbose`, which also logs handshakes and e.g. UDP GSO being disabled).
    WireguardGo {
        program: PathBuf,
        log_level: &'static str,
    },
    /// `<program> --foreground --disable-drop-privileges [--threads N] <device>`
    /// (boringtun-cli's default is 4 threads, each with its own TUN queue).
    BoringtunCli {
        program: PathBuf,
        threads: Option<u32>,
    },
}

impl Daemon {
    /// Debian's `wireguard-go` from `PATH`, logging errors only (what [`start`] runs).
    pub fn debian_wireguard_go() -> Daemon {
        Daemon::WireguardGo {
            program: PathBuf::from("wireguard-go"),
            log_level: "error",
        }
    }

    pub fn program(&self) -> &Path {
        match self {
            Daemon::WireguardGo { program, .. } | Daemon::BoringtunCli { program, .. } => program,
        }
    }

    fn command(&self, ns: &str, device: &str) -> Command {
        let mut args: Vec<OsString> = vec![self.program().into()];
        match self {
            Daemon::WireguardGo { log_level, .. } => {
                args.push(device.into());
                let mut cmd = command(ns, &args);
                cmd.env("WG_PROCESS_FOREGROUND", "1")
                    .env("LOG_LEVEL", log_level);
                cmd
            }
            Daemon::BoringtunCli { threads, .. } => {
                args.extend(["--foreground".into(), "--disable-drop-privileges".into()]);
                if let Some(t) = threads {
                    args.extend(["--threads".into(), t.to_string().into()]);
                }
                args.push(device.into());
                command(ns, &args)
            }
        }
    }

    fn install_hint(&self) -> &'static str {
        match self {
            Daemon::WireguardGo { program, .. } if program == Path::new("wireguard-go") => {
                " (apt-get install wireguard-go)"
            }
            _ => " (scripts/bench-refs.sh builds it)",
        }
    }
}

/// Starts Debian's `wireguard-go` in the foreground inside `cfg.ns`, waits for its UAPI
/// socket, configures it with `wg set`, sets MTU, brings it up and adds the routes. The
/// returned child is the wireguard-go process itself (`ip netns exec` execs it).
pub fn start(cfg: &WgGoConfig<'_>) -> Result<Child> {
    start_daemon(&Daemon::debian_wireguard_go(), cfg)
}

/// Like [`start`], with any [`Daemon`].
pub fn start_daemon(daemon: &Daemon, cfg: &WgGoConfig<'_>) -> Result<Child> {
    let name = daemon.program().display().to_string();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.log_file)
        .with_context(|| format!("opening {}", cfg.log_file.display()))?;
    let sock = Path::new(WG_RUN_DIR).join(format!("{}.sock", cfg.device));
    // A stale socket from a crashed run would make us think it is up already.
    let _ = std::fs::remove_file(&sock);
    let mut cmd = daemon.command(cfg.ns, cfg.device);
    cmd.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {name}{}", daemon.install_hint()))?;
    let up = wait_for(
        || sock.exists() || matches!(child.try_wait(), Ok(Some(_))),
        Duration::from_secs(10),
    );
    if !up || !sock.exists() {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "{name} {} in {} did not create {}; log: {}",
            cfg.device,
            cfg.ns,
            sock.display(),
            std::fs::read_to_string(cfg.log_file).unwrap_or_default()
        );
    }
    if let Err(e) = configure(cfg) {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&sock);
        return Err(e);
    }
    Ok(child)
}

fn configure(cfg: &WgGoConfig<'_>) -> Result<()> {
    let port = cfg.listen_port.to_string();
    let key = cfg.private_key_file.to_string_lossy().into_owned();
    let mut args: Vec<String> = vec![
        "wg".into(),
        "set".into(),
        cfg.device.into(),
        "listen-port".into(),
        port,
        "private-key".into(),
        key,
    ];
    for p in &cfg.peers {
        args.push("peer".into());
        args.push(p.public_key.clone());
        args.push("allowed-ips".into());
        args.push(p.allowed_ips.join(","));
        if let Some(e) = &p.endpoint {
            args.push("endpoint".into());
            args.push(e.clone());
        }
        if p.persistent_keepalive > 0 {
            args.push("persistent-keepalive".into());
            args.push(p.persistent_keepalive.to_string());
        }
    }
    exec_ok(cfg.ns, &args)?;
    let mtu = cfg.mtu.to_string();
    ip(
        cfg.ns,
        &["link", "set", "dev", cfg.device, "mtu", &mtu, "up"],
    )?;
    for r in &cfg.routes {
        let mut a = vec!["route", "replace", r.as_str(), "dev", cfg.device];
        let src;
        if let Some(s) = cfg.route_src {
            src = s.to_string();
            a.extend(["src", src.as_str()]);
        }
        ip(cfg.ns, &a)?;
    }
    Ok(())
}
