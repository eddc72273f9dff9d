//! The wire format, seen with a hand-written HTTP/1.1 client: shapes of lists, Status errors,
//! watch lines, 410 on an old watch, malformed requests, discovery, and the `fakekube` binary.

use std::time::Duration;

use fakekube::{gen, FakeApi, Verb};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Decodes a chunked body.
fn unchunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = raw.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        raw = &rest[n + 2..];
    }
}

/// Sends one request with `Connection: close` and reads the whole reply.
async fn request(
    api: &FakeApi,
    method: &str,
    target: &str,
    content_type: &str,
    body: &str,
) -> Reply {
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Reply { status, body }
}

async fn get(api: &FakeApi, target: &str) -> Reply {
    request(api, "GET", target, "application/json", "").await
}

fn assert_status(r: &Reply, code: u16, reason: &str) {
    assert_eq!(r.status, code, "{}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["code"], code);
    assert_eq!(v["reason"], reason, "{v}");
}

#[tokio::test]
async fn list_and_get_shapes() {
    let api = FakeApi::start().await.unwrap();
    api.apply(gen::node("n1", "192.168.0.1", None, &["10.244.0.0/24"]))
        .unwrap();
    api.apply(gen::service("default", "web", &["10.96.0.10"], &[]))
        .unwrap();
    let l = get(&api, "/api/v1/nodes").await;
    assert_eq!(l.status, 200);
    let v = l.json();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("NodeList"), Some("v1"))
    );
    assert_eq!(
        v["metadata"]["resourceVersion"],
        api.resource_version().to_string()
    );
    assert!(v["metadata"].get("continue").is_none());
    assert_eq!(v["items"][0]["kind"], "Node");
    assert_eq!(v["items"][0]["apiVersion"], "v1");
    assert_eq!(v["items"][0]["metadata"]["resourceVersion"], "2");

    let v = get(&api, "/apis/discovery.k8s.io/v1/endpointslices")
        .await
        .json();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("EndpointSliceList"), Some("discovery.k8s.io/v1"))
    );
    assert_eq!(v["items"], json!([]));

    let v = get(&api, "/api/v1/namespaces/default/services/web")
        .await
        .json();
    assert_eq!(v["spec"]["clusterIP"], "10.96.0.10");
    assert_status(
        &get(&api, "/api/v1/namespaces/default/services/nope").await,
        404,
        "NotFound",
    );
    let nf = get(&api, "/api/v1/nodes/nope").await.json();
    assert_eq!(nf["message"], "nodes \"nope\" not found");
    assert_eq!(nf["details"]["name"], "nope");
    assert_status(&get(&api, "/api/v1/widgets").await, 404, "NotFound");
    assert_status(&get(&api, "/api/v1/services/web").await, 404, "NotFound");
    assert_status(&get(&api, "/nothing/here").await, 404, "NotFound");
    assert_status(
        &request(&api, "POST", "/api/v1/nodes/n1", "application/json", "{}").await,
        405,
        "MethodNotAllowed",
    );
}

#[tokio::test]
async fn writes_over_http() {
    let api = FakeApi::start().await.unwrap();
    let node = gen::node("n1", "192.168.0.1", None, &[]).to_string();
    let r = request(&api, "POST", "/api/v1/nodes", "application/json", &node).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_status(
        &request(&api, "POST", "/api/v1/nodes", "application/json", &node).await,
        409,
        "AlreadyExists",
    );
    let patch = r#"{"metadata":{"labels":{"a":"b"}}}"#;
    let r = request(
        &api,
        "PATCH",
        "/api/v1/nodes/n1",
        "application/merge-patch+json",
        patch,
    )
    .await;
    assert_eq!(r.json()["metadata"]["labels"]["a"], "b");
    let jp = r#"[{"op":"add","path":"/metadata/labels/c","value":"d"}]"#;
    let r = request(
        &api,
        "PATCH",
        "/api/v1/nodes/n1",
        "application/json-patch+json",
        jp,
    )
    .await;
    assert_eq!(r.json()["metadata"]["labels"]["c"], "d");
    assert_status(
        &request(&api, "PATCH", "/api/v1/nodes/n1", "text/plain", patch).await,
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &request(
            &api,
            "PATCH",
            "/api/v1/nodes/zz",
            "application/merge-patch+json",
            patch,
        )
        .await,
        404,
        "NotFound",
    );
    // Server-side apply creates a missing object.
    let r = request(
        &api,
        "PATCH",
        "/api/v1/nodes/n2?fieldManager=t",
        "application/apply-patch+yaml",
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // PUT with a stale resourceVersion.
    let stale = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": "2"}}).to_string();
    assert_status(
        &request(&api, "PUT", "/api/v1/nodes/n1", "application/json", &stale).await,
        409,
        "Conflict",
    );
    let wrong = json!({"metadata": {"name": "other"}}).to_string();
    assert_status(
        &request(&api, "PUT", "/api/v1/nodes/n1", "application/json", &wrong).await,
        400,
        "BadRequest",
    );
    // DELETE with a failing precondition, then for real.
    let pre = r#"{"preconditions":{"resourceVersion":"1"}}"#;
    assert_status(
        &request(&api, "DELETE", "/api/v1/nodes/n1", "application/json", pre).await,
        409,
        "Conflict",
    );
    let r = request(&api, "DELETE", "/api/v1/nodes/n1", "application/json", "").await;
    assert_eq!(r.json()["metadata"]["name"], "n1");
    // Delete a collection by label.
    api.apply(gen::service("x", "s1", &["10.96.0.1"], &[]))
        .unwrap();
    api.apply(gen::service("x", "s2", &["10.96.0.2"], &[]))
        .unwrap();
    let r = request(
        &api,
        "DELETE",
        "/api/v1/namespaces/x/services?labelSelector=app%3Ds1",
        "application/json",
        "",
    )
    .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.list("services").len(), 1);
    // dryRun=All validates and answers without storing.
    let svc = gen::service("x", "dry", &["10.96.0.3"], &[]).to_string();
    let r = request(
        &api,
        "POST",
        "/api/v1/namespaces/x/services?dryRun=All",
        "application/json",
        &svc,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(api.get("svc", Some("x"), "dry").is_none());
    let r = request(
        &api,
        "DELETE",
        "/api/v1/namespaces/x/services/s2?dryRun=All",
        "application/json",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(api.get("svc", Some("x"), "s2").is_some());
    // Like the apiserver, a create must not carry a resourceVersion.
    let with_rv = json!({"metadata": {"name": "rv", "resourceVersion": "5"}}).to_string();
    let r = request(
        &api,
        "POST",
        "/api/v1/namespaces/x/services",
        "application/json",
        &with_rv,
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    // generateName.
    let gen_name = json!({"metadata": {"generateName": "web-"}, "spec": {}}).to_string();
    let r = request(
        &api,
        "POST",
        "/api/v1/namespaces/x/services",
        "application/json",
        &gen_name,
    )
    .await;
    assert!(r.json()["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("web-"));
}

#[tokio::test]
async fn malformed_requests_get_400_not_a_panic() {
    let api = FakeApi::start().await.unwrap();
    api.apply(gen::node("n1", "192.168.0.1", None, &[]))
        .unwrap();
    for target in [
        "/api/v1/nodes?limit=abc",
        "/api/v1/nodes?limit=-1",
        "/api/v1/nodes?labelSelector=a%20in%20b",
        "/api/v1/nodes?fieldSelector=metadata.name",
        "/api/v1/nodes?continue=garbage",
        "/api/v1/nodes?resourceVersion=xyz",
        "/api/v1/nodes?resourceVersionMatch=Sometimes&resourceVersion=1",
        "/api/v1/nodes?resourceVersionMatch=Exact",
        "/api/v1/nodes?continue=x&resourceVersion=5",
        "/api/v1/nodes?watch=maybe",
        "/api/v1/nodes?watch=true&resourceVersion=-3",
        "/api/v1/nodes?watch=true&sendInitialEvents=true",
        "/api/v1/nodes?a=%zz",
    ] {
        assert_status(&get(&api, target).await, 400, "BadRequest");
    }
    for body in [
        "",
        "{",
        "[1,2]",
        "\"x\"",
        "{\"kind\":\"Service\",\"metadata\":{\"name\":\"n9\"}}",
    ] {
        assert_status(
            &request(&api, "POST", "/api/v1/nodes", "application/json", body).await,
            400,
            "BadRequest",
        );
    }
    let r = request(
        &api,
        "POST",
        "/api/v1/nodes",
        "application/json",
        r#"{"metadata":{"name":"Bad_Name"}}"#,
    )
    .await;
    assert_status(&r, 422, "Invalid");
    let r = request(
        &api,
        "POST",
        "/api/v1/nodes",
        "application/json",
        r#"{"metadata":{"name":"x","labels":{"a":1}}}"#,
    )
    .await;
    assert_status(&r, 422, "Invalid");
    let r = request(
        &api,
        "PATCH",
        "/api/v1/nodes/n1",
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/nope"}]"#,
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_status(
        &request(
            &api,
            "DELETE",
            "/api/v1/nodes/n1",
            "application/json",
            "{not json",
        )
        .await,
        400,
        "BadRequest",
    );
    // Garbage that is not HTTP at all: the connection is closed, the server lives on.
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert_eq!(get(&api, "/api/v1/nodes/n1").await.status, 200);
    assert!(api.count("nodes", Verb::Other) >= 1);
}

/// Reads watch lines until `n` events arrived (or the stream ended).
async fn watch_lines(api: &FakeApi, target: &str, n: usize) -> Vec<Value> {
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            let lines: Vec<Value> = unchunk(body)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n || text.ends_with("0\r\n\r\n") {
                return lines;
            }
        }
        let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if got == 0 {
            return Vec::new();
        }
        raw.extend_from_slice(&buf[..got]);
    }
}

#[tokio::test]
async fn watch_wire_format() {
    let api = FakeApi::start().await.unwrap();
    api.apply(gen::node("n1", "192.168.0.1", None, &[]))
        .unwrap();
    api.apply(gen::node("n2", "192.168.0.2", None, &[]))
        .unwrap();

    // No resourceVersion: the current objects as ADDED first.
    let ev = watch_lines(&api, "/api/v1/nodes?watch=1&timeoutSeconds=1", 2).await;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["kind"], "Node");

    // From an RV: only later changes; the single-object path watches one object.
    let ev = watch_lines(
        &api,
        "/api/v1/nodes/n2?watch=true&resourceVersion=3&timeoutSeconds=1",
        1,
    )
    .await;
    assert!(ev.is_empty(), "{ev:?}");
    let from = api.resource_version();
    api.delete("Node", None, "n1").unwrap();
    let ev = watch_lines(
        &api,
        &format!("/api/v1/nodes?watch=true&resourceVersion={from}&timeoutSeconds=1"),
        1,
    )
    .await;
    assert_eq!(ev[0]["type"], "DELETED");
    assert_eq!(
        ev[0]["object"]["metadata"]["resourceVersion"],
        api.resource_version().to_string()
    );

    // Older than the compaction point: HTTP 200 with one ERROR event carrying a 410 Status.
    api.apply(gen::node("n3", "192.168.0.3", None, &[]))
        .unwrap();
    api.compact();
    let ev = watch_lines(
        &api,
        &format!("/api/v1/nodes?watch=true&resourceVersion={from}"),
        1,
    )
    .await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["kind"], "Status");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    assert_eq!(
        get(
            &api,
            &format!("/api/v1/nodes?resourceVersion={from}&resourceVersionMatch=Exact")
        )
        .await
        .status,
        410
    );

    // Streaming list: initial events, then the initial-events-end bookmark.
    let ev = watch_lines(&api, "/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0", 3).await;
    assert_eq!(ev[2]["type"], "BOOKMARK");
    assert_eq!(
        ev[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        ev[2]["object"]["metadata"]["resourceVersion"],
        api.resource_version().to_string()
    );
}

#[tokio::test]
async fn exact_rv_list_serves_history() {
    let api = FakeApi::start().await.unwrap();
    api.apply(gen::node("n1", "192.168.0.1", None, &[]))
        .unwrap();
    let at = api.resource_version();
    api.apply(gen::node("n2", "192.168.0.2", None, &[]))
        .unwrap();
    api.delete("Node", None, "n1").unwrap();
    let v = get(
        &api,
        &format!("/api/v1/nodes?resourceVersion={at}&resourceVersionMatch=Exact"),
    )
    .await
    .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["metadata"]["name"], "n1");
    assert_eq!(v["metadata"]["resourceVersion"], at.to_string());
}

#[tokio::test]
async fn discovery_documents() {
    let api = FakeApi::start().await.unwrap();
    let v = get(&api, "/version").await.json();
    assert_eq!(v["gitVersion"], "v1.33.0");
    assert_eq!(get(&api, "/api").await.json()["versions"], json!(["v1"]));
    assert_eq!(
        get(&api, "/apis").await.json()["groups"][0]["name"],
        "discovery.k8s.io"
    );
    let core = get(&api, "/api/v1").await.json();
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "services"));
    assert_eq!(
        get(&api, "/apis/discovery.k8s.io/v1").await.json()["resources"][0]["kind"],
        "EndpointSlice"
    );
    assert_eq!(get(&api, "/healthz").await.body, "ok");
    assert_status(&get(&api, "/apis/apps/v1").await, 404, "NotFound");
}

#[tokio::test]
async fn outage_refuses_and_recovers() {
    let api = FakeApi::start().await.unwrap();
    api.apply(gen::node("n1", "192.168.0.1", None, &[]))
        .unwrap();
    api.set_down(true);
    assert!(api.is_down());
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    let _ = s
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        r.is_err() || buf.is_empty(),
        "served while down: {:?}",
        String::from_utf8_lossy(&buf)
    );
    api.apply(gen::node("n2", "192.168.0.2", None, &[]))
        .unwrap();
    api.set_down(false);
    let v = get(&api, "/api/v1/nodes").await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn binary_serves_generated_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let load = dir.path().join("extra.json");
    std::fs::write(
        &load,
        json!({"kind": "List", "items": [gen::node("extra", "192.168.9.9", None, &[])]})
            .to_string(),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fakekube"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--kubeconfig-out"])
        .arg(&kc)
        .arg("--load")
        .arg(&load)
        .args([
            "--gen-nodes",
            "10",
            "--gen-services",
            "20",
            "--gen-endpoints",
            "3",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = KillOnDrop(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !kc.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 11);
    drop(child);
}

#[tokio::test]
async fn start_on_a_given_listener_and_stop_on_drop() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let api = FakeApi::start_on(listener).await.unwrap();
    assert_eq!(api.addr(), addr);
    assert_eq!(api.url(), format!("http://{addr}"));
    let clone = api.clone();
    drop(api);
    assert_eq!(
        get(&clone, "/version").await.status,
        200,
        "a clone keeps it running"
    );
    drop(clone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still listening after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
