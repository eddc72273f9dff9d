//! kubectl against one lab cluster, run from the lab's management namespace (the underlay
//! namespace, which holds 192.168.77.254 on the underlay bridge and so reaches every API
//! server like an admin workstation would).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns;

#[derive(Debug, Clone)]
pub struct Kubectl {
    pub bin: String,
    pub kubeconfig: PathBuf,
    /// Network namespace kubectl runs in.
    pub ns: String,
}

impl Kubectl {
    pub fn new(bin: String, kubeconfig: &Path, ns: &str) -> Kubectl {
        Kubectl {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
            ns: ns.to_string(),
        }
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.bin.clone(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs kubectl; the raw output (never fails).
    pub fn output(&self, args: &[&str]) -> Output {
        netns::exec(&self.ns, &self.argv(args))
    }

    /// Runs kubectl; stdout, or an error with the command and its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        netns::exec_ok(&self.ns, &self.argv(args))
    }

    /// `kubectl <args>` with `stdin` fed in (e.g. `apply -f -`).
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let argv = self.argv(args);
        let mut child = netns::command(&self.ns, &argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", argv.join(" ")))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`kubectl {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let s = self.run(&a)?;
        serde_json::from_str(&s).context("parsing kubectl JSON")
    }

    /// Polls `f` every 500 ms until it returns Ok(true); the last error or "timed out".
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Kubectl) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match f(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (last error: {last})")
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
