//! The certificates and keys of one real lab cluster, made with the `openssl` command line:
//! a CA, the API server's serving certificate, one client certificate per identity (admin,
//! controller-manager, scheduler, kube-proxy, each kubelet, the API server towards kubelets)
//! and the service-account signing key. ECDSA P-256 throughout: quick to generate on the
//! 2-core machine, and accepted everywhere in Kubernetes.

use anyhow::{Context, Result};
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::netns::exec_ok;

/// One client or server certificate: `<dir>/<name>.crt` and `<name>.key`.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A cluster's PKI directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertPair,
}

/// What a certificate is for.
pub enum Usage<'a> {
    /// TLS server: subject alternative names.
    Server {
        dns: &'a [&'a str],
        ips: &'a [IpAddr],
    },
    /// TLS client: the user (CN) and groups (O) Kubernetes reads from it.
    Client,
}

impl Pki {
    /// Creates the directory and a fresh CA named `ca_name`.
    pub fn create(dir: &Path, ca_name: &str) -> Result<Pki> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = pair(dir, "ca");
        genkey(&ca.key)?;
        // openssl's default v3_ca section: basicConstraints CA:true, key identifiers.
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-sha256",
            "-days",
            "3650",
            "-key",
            p(&ca.key),
            "-subj",
            &format!("/CN={ca_name}"),
            "-out",
            p(&ca.cert),
        ])?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// Issues `<name>.crt`/`.key` for subject CN=`cn` (and O=`org` when given).
    pub fn issue(&self, name: &str, cn: &str, org: Option<&str>, usage: Usage) -> Result<CertPair> {
        let out = pair(&self.dir, name);
        genkey(&out.key)?;
        let subj = match org {
            Some(o) => format!("/O={o}/CN={cn}"),
            None => format!("/CN={cn}"),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-key",
            p(&out.key),
            "-subj",
            &subj,
            "-out",
            p(&csr),
        ])?;
        let mut ext = String::from(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        );
        match usage {
            Usage::Server { dns, ips } => {
                ext += "extendedKeyUsage=serverAuth\n";
                let sans: Vec<String> = dns
                    .iter()
                    .map(|d| format!("DNS:{d}"))
                    .chain(ips.iter().map(|i| format!("IP:{i}")))
                    .collect();
                ext += &format!("subjectAltName={}\n", sans.join(","));
            }
            Usage::Client => ext += "extendedKeyUsage=clientAuth\n",
        }
        let ext_file = self.dir.join(format!("{name}.ext"));
        fs::write(&ext_file, ext)?;
        openssl(&[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-in",
            p(&csr),
            "-CA",
            p(&self.ca.cert),
            "-CAkey",
            p(&self.ca.key),
            "-CAcreateserial",
            "-extfile",
            p(&ext_file),
            "-out",
            p(&out.cert),
        ])?;
        let _ = fs::remove_file(csr);
        let _ = fs::remove_file(ext_file);
        Ok(out)
    }

    /// The service-account token signing key (`sa.key`) and its public half (`sa.pub`).
    pub fn service_account_keys(&self) -> Result<(PathBuf, PathBuf)> {
        let key = self.dir.join("sa.key");
        let public = self.dir.join("sa.pub");
        genkey(&key)?;
        openssl(&["ec", "-in", p(&key), "-pubout", "-out", p(&public)])?;
        Ok((key, public))
    }
}

fn pair(dir: &Path, name: &str) -> CertPair {
    CertPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

fn genkey(path: &Path) -> Result<()> {
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        p(path),
    ])?;
    crate::realkube::util::chmod(path, 0o600)
}

fn openssl(args: &[&str]) -> Result<()> {
    let mut full = vec!["openssl"];
    full.extend_from_slice(args);
    exec_ok("", &full).map(|_| ())
}

fn p(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

/// A kubeconfig with the CA, the server and a client certificate, all embedded.
pub fn kubeconfig(
    cluster: &str,
    server: &str,
    ca: &Path,
    client: &CertPair,
    user: &str,
) -> Result<String> {
    let b64 = |path: &Path| -> Result<String> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(crate::realkube::util::base64(&data))
    };
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {cluster}\n",
        b64(ca)?,
        b64(&client.cert)?,
        b64(&client.key)?,
    ))
}
