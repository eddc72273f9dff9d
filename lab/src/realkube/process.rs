//! Long-running processes of the real-Kubernetes lab: started in a node's namespaces, output
//! appended to a log file, each in its own process group (so a Ctrl-C meant for sdn-lab does
//! not reach it, and `--keep` leaves it running after sdn-lab exits).

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::netns;

/// How to enter a node.
pub enum Enter<'a> {
    /// The host's namespaces.
    Host,
    /// Network namespace `/run/netns/<ns>` only (the control plane's processes).
    Net(&'a str),
    /// The network and mount namespaces of process `pid` (a node's containerd).
    NetMount(u32),
}

/// The argv that runs `args` as `enter` says (nsenter, no fork: the pid is the program's).
pub fn entered(enter: &Enter<'_>, args: &[String]) -> Vec<String> {
    let mut v: Vec<String> = match enter {
        Enter::Host => Vec::new(),
        Enter::Net(ns) => vec![
            "nsenter".into(),
            format!("--net=/run/netns/{ns}"),
            "--".into(),
        ],
        Enter::NetMount(pid) => vec![
            "nsenter".into(),
            format!("--target={pid}"),
            "--net".into(),
            "--mount".into(),
            "--".into(),
        ],
    };
    v.extend(args.iter().cloned());
    v
}

/// Spawns `args` (entered as `enter`), stdout and stderr appended to `log`, environment plus
/// `env`.
pub fn spawn_logged(
    enter: &Enter<'_>,
    args: &[String],
    log: &Path,
    env: &[(&str, String)],
) -> Result<Child> {
    let argv = entered(enter, args);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(f, "--- sdn-lab: {}", argv.join(" "))?;
    let mut cmd = netns::command("", &argv);
    cmd.stdout(Stdio::from(f.try_clone()?))
        .stderr(Stdio::from(f))
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(log: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An empty log file (truncated).
pub fn new_log(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// Runs `args` as `enter` says and returns stdout; non-zero exit is an error with stderr.
pub fn run(enter: &Enter<'_>, args: &[String]) -> Result<String> {
    let argv = entered(enter, args);
    netns::exec_ok("", &argv)
}

#[allow(dead_code)]
pub fn command(enter: &Enter<'_>, args: &[String]) -> Command {
    netns::command("", &entered(enter, args))
}
