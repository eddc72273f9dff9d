//! Helpers shared by integration tests.
//!
//! Privileged-test policy: tests that need root call [`require_root`] first and return early
//! when it says false (after it printed why). With `SDN_TUNNEL_REQUIRE_PRIVILEGED=1` (CI) a
//! missing privilege is a failure instead of a skip, so privileged tests cannot silently pass.

#![allow(dead_code)] // each test binary uses a different subset

pub mod checks;
pub mod dig;
pub mod dns;
pub mod forge;
pub mod packet;

/// Env var that turns "skip" into "fail" for privileged tests.
pub const REQUIRE_PRIVILEGED_ENV: &str = "SDN_TUNNEL_REQUIRE_PRIVILEGED";

/// True if the calling test may go on with root privileges. Otherwise prints the reason and
/// returns false (skip), or panics if `SDN_TUNNEL_REQUIRE_PRIVILEGED=1`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    skip_or_fail(&format!("needs root (running as uid {euid})"))
}

/// True if `program` can be run (found in PATH); otherwise skip or fail like [`require_root`].
pub fn require_program(program: &str) -> bool {
    match std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) => skip_or_fail(&format!("needs the {program} program ({e})")),
    }
}

/// Prints why a privileged test is skipped and returns false, or panics when
/// `SDN_TUNNEL_REQUIRE_PRIVILEGED=1`.
pub fn skip_or_fail(reason: &str) -> bool {
    let required = std::env::var(REQUIRE_PRIVILEGED_ENV).is_ok_and(|v| v == "1");
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    if required {
        panic!("{test}: {reason}, and {REQUIRE_PRIVILEGED_ENV}=1 makes that a failure");
    }
    eprintln!("SKIPPED {test}: {reason} (set {REQUIRE_PRIVILEGED_ENV}=1 to fail instead)");
    false
}

/// A name unique to this process and call, for network namespaces, devices under test etc.
/// `prefix` should be short; the result is `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace created with `ip netns add`, deleted on drop (also when the test
/// panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec <ns> <program> <args>`.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns`), so sockets it
    /// creates (netlink included) and processes it spawns live in the namespace. Create the
    /// tokio runtime inside `f`. Panics in `f` propagate; the namespace is still deleted by
    /// `Drop`.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        let name = std::thread::current().name().unwrap_or("netns").to_string();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(s, move || {
                    enter(&path);
                    f()
                })
                .expect("spawn netns thread");
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Moves the calling thread into the network namespace at `path` (see
/// [`sdn_lab::netns::enter`]); panics when it cannot.
pub fn enter(path: &std::path::Path) {
    sdn_lab::netns::enter(path).unwrap_or_else(|e| panic!("{e:#}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// For tests that need a real kernel feature this machine lacks (IPVS): returns true when
/// running inside the VM (go on), false after re-running `test` of this test binary inside the
/// VM with `../shared/vm/vm-run` (one boot) and asserting it passed there. Skips or fails like
/// [`require_root`] when vm-run is missing.
pub fn in_vm_or_rerun(test: &str) -> bool {
    if std::env::var_os("VM_RUN_GUEST").is_some() {
        return true;
    }
    let vm_run = match std::env::var_os("SDN_TUNNEL_VM_RUN") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let beside =
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vm/vm-run");
            let fixed = std::path::PathBuf::from("/work/shared/vm/vm-run");
            if !beside.exists() && fixed.exists() {
                fixed
            } else {
                beside
            }
        }
    };
    if !vm_run.exists() {
        skip_or_fail(&format!(
            "needs {} to boot a kernel with IPVS",
            vm_run.display()
        ));
        return false;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let started = std::time::Instant::now();
    let status = std::process::Command::new(&vm_run)
        .args(["--timeout", "900", "--"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", vm_run.display()));
    eprintln!("vm-run finished in {:?}", started.elapsed());
    assert!(
        status.success(),
        "the test inside the VM failed ({status}); its output is above"
    );
    false
}
