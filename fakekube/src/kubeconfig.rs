//! Writing a kubeconfig that points at a fake server.

use std::fmt::Write as _;

/// A kubeconfig with one cluster, user (dummy bearer token) and context, all named `context`,
/// and `namespace: default`. Strings are written as JSON strings, which YAML reads as-is.
pub fn render(server_url: &str, context: &str) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let (url, ctx) = (q(server_url), q(context));
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {ctx}\n  cluster:\n    server: {url}\n\
         users:\n\
         - name: {ctx}\n  user:\n    token: \"fakekube-token\"\n\
         contexts:\n\
         - name: {ctx}\n  context:\n    cluster: {ctx}\n    user: {ctx}\n    namespace: default\n\
         current-context: {ctx}\n\
         preferences: {{}}\n"
    );
    out
}
