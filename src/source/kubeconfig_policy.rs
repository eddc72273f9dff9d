//! A remote cluster's kubeconfig is data, never code. It comes from another cluster (a Secret
//! the other side minted), so it may name an API server, its CA and a credential, and nothing
//! that makes this agent run a program (`exec`, `auth-provider`) or read a file of this node
//! (`tokenFile`, `client-certificate`, `certificate-authority`, ...: our private key's path,
//! say). Anything else is refused, naming the field, before kube-rs ever sees the file.

use serde_json::Value;

/// Keys allowed at each level; everything else is refused.
const TOP: &[&str] = &[
    "apiVersion",
    "kind",
    "clusters",
    "users",
    "contexts",
    "current-context",
    "preferences",
];
const CLUSTER: &[&str] = &["server", "certificate-authority-data", "tls-server-name"];
const USER: &[&str] = &["token", "client-certificate-data", "client-key-data"];
const CONTEXT: &[&str] = &["cluster", "user", "namespace"];
const NAMED: &[&str] = &["name", "cluster", "user", "context"];

/// Checks the kubeconfig text; the error names the offending field.
pub fn check(text: &str) -> Result<(), String> {
    let v: Value = serde_norway::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let top = v.as_object().ok_or("not a mapping")?;
    refuse_unknown("", top, TOP)?;
    for (list, inner, allowed) in [
        ("clusters", "cluster", CLUSTER),
        ("users", "user", USER),
        ("contexts", "context", CONTEXT),
    ] {
        let Some(items) = top.get(list) else { continue };
        let items = items
            .as_array()
            .ok_or_else(|| format!("{list}: not a list"))?;
        for (i, item) in items.iter().enumerate() {
            let at = format!("{list}[{i}]");
            let o = item
                .as_object()
                .ok_or_else(|| format!("{at}: not a mapping"))?;
            refuse_unknown(&at, o, NAMED)?;
            if let Some(body) = o.get(inner) {
                let body = body
                    .as_object()
                    .ok_or_else(|| format!("{at}.{inner}: not a mapping"))?;
                refuse_unknown(&format!("{at}.{inner}"), body, allowed)?;
            }
        }
    }
    Ok(())
}

fn refuse_unknown(
    at: &str,
    o: &serde_json::Map<String, Value>,
    allowed: &[&str],
) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => {
            let field = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            Err(format!(
                "{field}: not allowed in a remote kubeconfig (it is data: server, \
                 certificate-authority-data, and a token or client-certificate-data with \
                 client-key-data; no exec plugins, auth providers or file paths)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: west\n  cluster:\n    server: https://w:6443\n    certificate-authority-data: AAAA\n\
                        users:\n- name: r\n  user:\n    token: abc\ncontexts:\n- name: west\n  context: {cluster: west, user: r, namespace: sdn-tunnel}\ncurrent-context: west\n";

    #[test]
    fn data_only_passes() {
        check(GOOD).unwrap();
        check(&GOOD.replace(
            "token: abc",
            "client-certificate-data: AA\n    client-key-data: BB",
        ))
        .unwrap();
    }

    #[test]
    fn code_and_paths_are_refused_by_name() {
        for (change, field) in [
            ("token: abc", "users[0].user.exec"),
            ("token: abc", "users[0].user.tokenFile"),
            ("token: abc", "users[0].user.auth-provider"),
            ("token: abc", "users[0].user.client-certificate"),
            ("token: abc", "users[0].user.username"),
            (
                "server: https://w:6443",
                "clusters[0].cluster.certificate-authority",
            ),
            (
                "server: https://w:6443",
                "clusters[0].cluster.insecure-skip-tls-verify",
            ),
            ("server: https://w:6443", "clusters[0].cluster.proxy-url"),
        ] {
            let key = field.rsplit('.').next().unwrap();
            let text = GOOD.replacen(change, &format!("{change}\n    {key}: x"), 1);
            let e = check(&text).unwrap_err();
            assert!(
                e.starts_with(&format!("{field}: not allowed")),
                "{field}: {e}"
            );
        }
        let e = check(&format!("{GOOD}extensions: []\n")).unwrap_err();
        assert!(e.starts_with("extensions: not allowed"), "{e}");
        assert!(check("- a\n").is_err());
    }
}
