//! Running commands and code inside network namespaces, and small process helpers.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A command that runs `args` inside namespace `ns` (`ip netns exec`), or on the host when `ns`
/// is empty. An `ns` starting with `/` is a namespace file (e.g. `/proc/<pid>/ns/net` of a
/// real pod's process): `nsenter --net=<file>`, network namespace only.
pub fn command<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Command {
    assert!(!args.is_empty(), "empty command");
    let mut cmd;
    if ns.is_empty() {
        cmd = Command::new(&args[0]);
        cmd.args(&args[1..]);
    } else if ns.starts_with('/') {
        cmd = Command::new("nsenter");
        cmd.arg(format!("--net={ns}")).arg("--").args(args);
    } else {
        cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(ns).args(args);
    }
    cmd.stdin(Stdio::null());
    // sdn-lab blocks SIGINT/SIGTERM/SIGHUP in all its threads (a sigwait thread handles them);
    // the mask survives exec, so clear it or agents and wireguard-go would ignore SIGTERM.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}

/// Runs `args` in namespace `ns` (host when empty) and returns its output. Never fails: a
/// command that cannot be started yields exit status 127 and the error on stderr.
pub fn exec<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Output {
    run(&mut command(ns, args))
}

/// Like [`exec`], but a non-zero exit is an error (carrying the command line and stderr);
/// returns stdout.
pub fn exec_ok<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Result<String> {
    let out = exec(ns, args);
    check(ns, args, out)
}

/// Runs an `ip` command against namespace `ns` (`ip -n ns ...`; host when empty), must succeed.
pub fn ip<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Result<String> {
    let mut full: Vec<&OsStr> = vec![OsStr::new("ip")];
    if !ns.is_empty() {
        full.push(OsStr::new("-n"));
        full.push(OsStr::new(ns));
    }
    full.extend(args.iter().map(|a| a.as_ref()));
    let out = run(&mut command("", &full));
    check("", &full, out)
}

/// Spawns `args` in namespace `ns` (host when empty) with stdin null and stdout/stderr
/// inherited. The child is put in its own process group so that a Ctrl-C meant for the lab
/// does not hit it directly.
pub fn spawn_in<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> Result<Child> {
    let mut cmd = command(ns, args);
    cmd.process_group(0);
    cmd.spawn()
        .with_context(|| format!("spawning {} in {ns:?}", display_args(args)))
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => Output {
            status: ExitStatus::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("cannot run {:?}: {e}", cmd.get_program()).into_bytes(),
        },
    }
}

fn check<S: AsRef<OsStr>>(ns: &str, args: &[S], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{}`{} failed ({}): {}{}",
            display_args(args),
            if ns.is_empty() {
                String::new()
            } else {
                format!(" in netns {ns}")
            },
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn display_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `f` on a fresh thread that has joined network namespace `ns` (only that thread
/// switches; the rest of the process stays where it is). Sockets created inside `f` belong to
/// `ns` for their whole life, whichever thread uses them later.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = netns_path(ns);
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(Path::new(&path))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
    })
}

/// Moves the calling thread (only it) into the network namespace at `path` and checks that it
/// got there, so a test never changes the host's own namespace by mistake.
pub fn enter(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid fd; CLONE_NEWNET only affects the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let want = file.metadata()?.ino();
    let have = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    anyhow::ensure!(
        want == have,
        "setns did not move this thread into {}",
        path.display()
    );
    Ok(())
}

/// The file of namespace `ns`: `/run/netns/<ns>`, or `ns` itself when it is a path.
pub fn netns_path(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_string()
    } else {
        format!("/run/netns/{ns}")
    }
}

pub use crate::poll::wait_for;

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Sends SIGTERM to `child`, waits up to `grace`, then SIGKILLs it. Returns its exit status.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// True if the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_netns() -> Vec<String> {
    let out = exec("", &["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Pids of the processes living in namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<u32> {
    let out = exec("", &["ip", "netns", "pids", ns]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// CPU time (user + system, all threads) a process has used so far, from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    // SAFETY: plain libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// Random lowercase hex digits from /dev/urandom.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n.div_ceil(2)];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    let s: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    Ok(s[..n].to_string())
}
