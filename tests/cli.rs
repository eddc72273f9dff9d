//! The command line as a user meets it: keys interoperate with `wg`, config errors name the
//! field, --help explains. No root needed (wg is needed for the interop checks).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sdn-tunnel"))
}

fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "failed: {o:?}");
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn pubkey_matches_wg_and_wg_keys_are_accepted() {
    if !common::require_program("wg") {
        return;
    }
    for _ in 0..5 {
        // Our key through both tools.
        let ours = stdout(&bin().arg("keygen").output().unwrap());
        assert_eq!(ours.len(), 44);
        let a = stdout(&with_stdin(bin_with("pubkey"), &ours));
        let mut wg = Command::new("wg");
        wg.arg("pubkey");
        let b = stdout(&with_stdin(wg, &ours));
        assert_eq!(a, b, "pubkey differs from wg pubkey for {ours}");

        // A `wg genkey` key through both tools.
        let theirs = stdout(&Command::new("wg").arg("genkey").output().unwrap());
        let a = stdout(&with_stdin(bin_with("pubkey"), &theirs));
        let mut wg = Command::new("wg");
        wg.arg("pubkey");
        let b = stdout(&with_stdin(wg, &theirs));
        assert_eq!(a, b);
    }
}

fn bin_with(arg: &str) -> Command {
    let mut c = bin();
    c.arg(arg);
    c
}

#[test]
fn pubkey_rejects_garbage() {
    let o = with_stdin(bin_with("pubkey"), "not a key\n");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a WireGuard key"));
}

fn write_config(dir: &std::path::Path, extra_tunnel: &str, key_mode: u32) -> std::path::PathBuf {
    let key = dir.join("private.key");
    let k = stdout(&bin().arg("keygen").output().unwrap());
    std::fs::write(&key, format!("{k}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    let peer = stdout(&with_stdin(bin_with("pubkey"), &k));
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"cluster: {{name: east, podCIDRs: [10.128.0.0/14], serviceCIDRs: [172.30.0.0/16]}}
node: {{name: a1, podCIDRs: [10.128.0.0/24]}}
tunnel: {{privateKeyFile: {key}{extra_tunnel}}}
remotes:
  - name: west
    podCIDRs: [10.132.0.0/14]
    serviceCIDRs: [172.31.0.0/16]
    static:
      peers:
        - {{publicKey: "{peer}", endpoint: "203.0.113.7:51820", podCIDRs: [10.132.0.0/24]}}
"#,
            key = key.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn check_config_accepts_valid_and_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "", 0o600);
    let ok = bin()
        .args(["agent", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");

    let bad = write_config(dir.path(), ", mtu: 100", 0o600);
    let o = bin()
        .args(["agent", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tunnel.mtu"), "{err}");

    let typo = write_config(dir.path(), ", listenPrt: 1", 0o600);
    let o = bin()
        .args(["agent", "--check-config", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("listenPrt"), "{err}");

    let loose = write_config(dir.path(), "", 0o644);
    let o = bin()
        .args(["agent", "--check-config", "--config"])
        .arg(&loose)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tunnel.privateKeyFile") && err.contains("chmod 600"),
        "{err}"
    );
    // The key itself never appears in errors.
    let key = std::fs::read_to_string(dir.path().join("private.key")).unwrap();
    assert!(!err.contains(key.trim()));
}

#[test]
fn help_explains_every_command() {
    let o = stdout(&bin().arg("--help").output().unwrap());
    for cmd in ["keygen", "pubkey", "agent", "status", "cleanup"] {
        assert!(o.contains(cmd), "--help lacks {cmd}: {o}");
    }
    let o = stdout(&bin().args(["agent", "--help"]).output().unwrap());
    assert!(
        o.contains("--check-config") && o.contains("--config"),
        "{o}"
    );
}

/// A remote kubeconfig is data: one with an `exec` plugin is refused (naming the field) and
/// the plugin never runs (it would create a marker file).
#[test]
fn a_remote_kubeconfig_with_an_exec_plugin_is_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("the-plugin-ran");
    let kc = dir.path().join("west.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: west\n  cluster:\n    server: https://127.0.0.1:1\n\
             users:\n- name: r\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
             command: /bin/sh\n      args: [\"-c\", \"touch {}\"]\n\
             contexts:\n- name: west\n  context: {{cluster: west, user: r}}\ncurrent-context: west\n",
            marker.display()
        ),
    )
    .unwrap();
    let key = dir.path().join("private.key");
    std::fs::write(
        &key,
        format!("{}\n", stdout(&bin().arg("keygen").output().unwrap())),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: {{name: east, podCIDRs: [10.128.0.0/14], serviceCIDRs: [172.30.0.0/16]}}\n\
             node: {{name: a1, podCIDRs: [10.128.0.0/24]}}\n\
             tunnel: {{privateKeyFile: {}}}\n\
             remotes:\n  - {{name: west, podCIDRs: [10.132.0.0/14], serviceCIDRs: [172.31.0.0/16], kubeconfig: {}}}\n",
            key.display(),
            kc.display()
        ),
    )
    .unwrap();
    let o = bin()
        .args([
            "check-remote",
            "--remote",
            "west",
            "--timeout",
            "3",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("users[0].user.exec: not allowed"), "{text}");
    assert!(!marker.exists(), "the exec plugin ran");
}
