//! The live Kubernetes source against an API server: a fake one in-process by default (real
//! list/watch semantics, see the fakekube crate), or a real cluster with
//! `KUBECONFIG=... cargo test --test kube_source -- --ignored` (those variants create and
//! delete their own `sdn-test-*` Nodes and Services in `default`).
//!
//! Each test runs a `KubeRemote` source, mutates the cluster through the API, and waits for the
//! published snapshot (and `plan()` over it) to show the change.

use fakekube::{gen, FakeApi};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kube::Client;
use sdn_tunnel::config::{Config, Import};
use sdn_tunnel::model::{plan, Snapshots};
use sdn_tunnel::source::kube_remote::KubeRemote;
use sdn_tunnel::source::{
    RemoteSnapshot, RemoteView, SourceHealth, SourceKind, ANN_ENDPOINT, ANN_PUBLIC_KEY,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// A fresh public key: tests sharing a real cluster must not collide on keys.
fn key() -> String {
    let k = sdn_tunnel::keys::generate_private();
    sdn_tunnel::keys::encode_key(&sdn_tunnel::keys::public_from_private(&k))
}
const WAIT: Duration = Duration::from_secs(15);

/// Where the test's remote cluster lives.
struct Cluster {
    fake: Option<FakeApi>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    /// Prefix for object names, unique per run (a real cluster is shared).
    prefix: String,
}

impl Cluster {
    async fn fake() -> Cluster {
        let api = FakeApi::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, "west").unwrap();
        Cluster {
            fake: Some(api),
            kubeconfig,
            _dir: dir,
            prefix: "sdn-test".into(),
        }
    }

    /// `tag` keeps concurrent tests apart on a shared cluster.
    fn real(tag: &str) -> Cluster {
        let path = std::env::var_os("KUBECONFIG")
            .expect("the real-cluster variants need KUBECONFIG pointing at a test cluster");
        Cluster {
            fake: None,
            kubeconfig: PathBuf::from(path),
            _dir: tempfile::tempdir().unwrap(),
            prefix: format!("sdn-test-{}-{tag}", std::process::id()),
        }
    }

    fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    async fn client(&self) -> Client {
        sdn_tunnel::source::kube_client::from_kubeconfig(&self.kubeconfig, None)
            .await
            .unwrap()
    }

    fn api_for(client: &Client, obj: &Value) -> Api<DynamicObject> {
        let ar = match obj["kind"].as_str().unwrap() {
            "Node" => ApiResource::erase::<Node>(&()),
            "Service" => ApiResource::erase::<Service>(&()),
            "EndpointSlice" => ApiResource::erase::<EndpointSlice>(&()),
            "ServiceExport" => ApiResource {
                group: "multicluster.x-k8s.io".into(),
                version: "v1beta1".into(),
                api_version: "multicluster.x-k8s.io/v1beta1".into(),
                kind: "ServiceExport".into(),
                plural: "serviceexports".into(),
            },
            k => panic!("kind {k}"),
        };
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }

    /// Create or replace through the API (the same calls work on a real cluster).
    async fn put(&self, mut obj: Value) {
        let client = self.client().await;
        let api = Self::api_for(&client, &obj);
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        obj["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let dynobj: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        match api.create(&PostParams::default(), &dynobj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let cur = api.get(&name).await.unwrap();
                obj["metadata"]["resourceVersion"] = json!(cur.metadata.resource_version);
                let dynobj: DynamicObject = serde_json::from_value(obj).unwrap();
                api.replace(&name, &PostParams::default(), &dynobj)
                    .await
                    .unwrap();
            }
            Err(e) => panic!("create {name}: {e}"),
        }
    }

    async fn remove(&self, obj: &Value) {
        let client = self.client().await;
        let api = Self::api_for(&client, obj);
        let name = obj["metadata"]["name"].as_str().unwrap();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
}

fn node(c: &Cluster, name: &str, key: &str, endpoint: &str, cidr: &str) -> Value {
    let mut n = gen::node(&c.name(name), "192.0.2.1", None, &[cidr]);
    gen::annotate(&mut n, ANN_PUBLIC_KEY, key);
    gen::annotate(&mut n, ANN_ENDPOINT, endpoint);
    n
}

fn service(c: &Cluster, name: &str, ip: &str) -> Value {
    gen::service(
        "default",
        &c.name(name),
        &[ip],
        &[gen::Port::tcp("http", 80, 8080)],
    )
}

fn slice(c: &Cluster, svc: &str, suffix: &str, ips: &[&str]) -> Value {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| gen::Endpoint::ready(ip, "b1"))
        .collect();
    gen::endpoint_slice(
        "default",
        &c.name(svc),
        &format!("{}-{suffix}", c.name(svc)),
        &eps,
        &[gen::Port::tcp("http", 80, 8080)],
    )
}

/// The config of the local cluster "east" with the remote "west" read from `kubeconfig`.
///
/// The real-cluster variants run against a cluster whose service CIDR is 172.31.0.0/16 (the
/// lab's west: `sdn-lab kube`), whose API server refuses a ClusterIP outside that range. So
/// west is declared here with the narrower 172.31.0.0/17: a ClusterIP in 172.31.128.0/17 is
/// one the real API server accepts and the agent must still refuse. Node pod CIDRs of the
/// tests are 10.132.100.0/24 and up, clear of the lab's real nodes.
fn config(kubeconfig: &Path) -> Config {
    Config::parse(
        &format!(
            "cluster: {{name: east, podCIDRs: [10.128.0.0/14], serviceCIDRs: [172.30.0.0/16]}}\n\
             node: {{name: a1, podCIDRs: [10.128.1.0/24]}}\n\
             remotes:\n\
             - name: west\n  podCIDRs: [10.132.0.0/14]\n  serviceCIDRs: [172.31.0.0/17]\n  \
             kubeconfig: {}\n",
            kubeconfig.display()
        ),
        None,
    )
    .unwrap()
}

struct Source {
    rx: watch::Receiver<RemoteView>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `import: all`: the tests of nodes, services and hostile objects see every Service.
fn start(kubeconfig: &Path) -> Source {
    start_with(kubeconfig, Import::All)
}

fn start_with(kubeconfig: &Path, import: Import) -> Source {
    let (tx, rx) = watch::channel(RemoteView {
        remote: "west".into(),
        snapshot: Arc::new(RemoteSnapshot::default()),
        health: SourceHealth::new(SourceKind::Kube),
    });
    let src = KubeRemote {
        name: "west".into(),
        kubeconfig: kubeconfig.to_path_buf(),
        context: None,
        limits: Default::default(),
        import,
        local: None,
    };
    let task = tokio::spawn(src.run(tx, Arc::new(Notify::new())));
    Source { rx, task }
}

/// Waits until `pred` holds for the published view; panics with the last view otherwise.
async fn wait_view(src: &mut Source, what: &str, pred: impl Fn(&RemoteView) -> bool) -> RemoteView {
    wait_view_for(src, what, WAIT, pred).await
}

async fn wait_view_for(
    src: &mut Source,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&RemoteView) -> bool,
) -> RemoteView {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let v = src.rx.borrow_and_update();
            if pred(&v) {
                return v.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, src.rx.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; last view: {:#?}",
                src.rx.borrow()
            );
        }
    }
}

fn node_key(v: &RemoteView, name: &str) -> Option<String> {
    v.snapshot
        .nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| sdn_tunnel::keys::encode_key(&n.public_key))
}

fn planned(cfg: &Config, v: &RemoteView) -> sdn_tunnel::model::Desired {
    let mut snaps = Snapshots::new();
    snaps.insert("west".into(), v.snapshot.clone());
    plan(cfg, &snaps)
}

// ---------------------------------------------------------------------------------------------

async fn nodes_join_rekey_and_leave(c: &Cluster) {
    let (k1, k2, k3) = (key(), key(), key());
    let cfg = config(&c.kubeconfig);
    let mut src = start(&c.kubeconfig);
    let (b1, b2) = (c.name("b1"), c.name("b2"));
    let v = wait_view(&mut src, "first sync", |v| v.health.synced).await;
    assert_eq!(v.health.kind, SourceKind::Kube);

    c.put(node(c, "b1", &k1, "192.0.2.11:51820", "10.132.101.0/24"))
        .await;
    c.put(node(c, "b2", &k2, "192.0.2.12:51820", "10.132.102.0/24"))
        .await;
    let v = wait_view(&mut src, "b1 and b2", |v| {
        node_key(v, &b1).is_some() && node_key(v, &b2).is_some()
    })
    .await;
    let d = planned(&cfg, &v);
    let p = d
        .peers
        .iter()
        .find(|p| p.name.as_deref() == Some(b1.as_str()))
        .unwrap();
    assert_eq!(p.endpoint, Some("192.0.2.11:51820".parse().unwrap()));
    assert_eq!(p.allowed_ips, vec!["10.132.101.0/24".parse().unwrap()]);

    // Rekey and move b1: the same node, a new key and endpoint.
    c.put(node(c, "b1", &k3, "192.0.2.21:51820", "10.132.101.0/24"))
        .await;
    let v = wait_view(&mut src, "b1 rekeyed", |v| {
        node_key(v, &b1).as_deref() == Some(k3.as_str())
    })
    .await;
    let d = planned(&cfg, &v);
    let p = d
        .peers
        .iter()
        .find(|p| p.name.as_deref() == Some(b1.as_str()))
        .unwrap();
    assert_eq!(p.endpoint, Some("192.0.2.21:51820".parse().unwrap()));

    c.remove(&node(c, "b2", &k2, "192.0.2.12:51820", "10.132.102.0/24"))
        .await;
    let v = wait_view(&mut src, "b2 gone", |v| node_key(v, &b2).is_none()).await;
    assert!(node_key(&v, &b1).is_some());
    c.remove(&node(c, "b1", &k3, "192.0.2.21:51820", "10.132.101.0/24"))
        .await;
    wait_view(&mut src, "b1 gone", |v| node_key(v, &b1).is_none()).await;
}

async fn services_and_endpoints_follow(c: &Cluster) {
    let cfg = config(&c.kubeconfig);
    let mut src = start(&c.kubeconfig);
    let web = c.name("web");
    let find = |v: &RemoteView| v.snapshot.services.iter().find(|s| s.name == web).cloned();
    c.put(service(c, "web", "172.31.0.10")).await;
    c.put(slice(c, "web", "a", &["10.132.1.5", "10.132.1.6"]))
        .await;
    let v = wait_view(&mut src, "web with 2 endpoints", |v| {
        find(v).is_some_and(|s| s.endpoints.len() == 2)
    })
    .await;
    let s = find(&v).unwrap();
    assert_eq!(
        s.cluster_ips,
        vec!["172.31.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(s.ports[0].port, 80);
    assert_eq!(s.endpoints[0].ports[0].port, 8080);
    let d = planned(&cfg, &v);
    assert!(d.services.iter().any(|s| s.service.name == web));

    // A second slice, then an endpoint changes, then the first slice goes.
    c.put(slice(c, "web", "b", &["10.132.2.7"])).await;
    wait_view(&mut src, "3 endpoints", |v| {
        find(v).is_some_and(|s| s.endpoints.len() == 3)
    })
    .await;
    c.put(slice(c, "web", "a", &["10.132.1.9"])).await;
    let v = wait_view(&mut src, "endpoint replaced", |v| {
        find(v).is_some_and(|s| s.endpoints.iter().any(|e| e.ip.to_string() == "10.132.1.9"))
    })
    .await;
    assert_eq!(find(&v).unwrap().endpoints.len(), 2);
    c.remove(&slice(c, "web", "a", &[])).await;
    wait_view(&mut src, "1 endpoint", |v| {
        find(v).is_some_and(|s| s.endpoints.len() == 1)
    })
    .await;
    // The service itself goes.
    c.remove(&service(c, "web", "172.31.0.10")).await;
    c.remove(&slice(c, "web", "b", &[])).await;
    wait_view(&mut src, "web gone", |v| find(v).is_none()).await;
}

fn export(c: &Cluster, name: &str) -> Value {
    gen::service_export("default", &c.name(name))
}

fn imported(v: &RemoteView, name: &str) -> bool {
    v.snapshot.services.iter().any(|s| s.name == name)
}

/// `import: exported`: a Service is imported while a ServiceExport of the same namespace and
/// name exists, and only then; the report counts what was left out.
async fn exports_decide_what_is_imported(c: &Cluster) {
    let mut src = start_with(&c.kubeconfig, Import::Exported);
    let (web, db) = (c.name("web"), c.name("db"));
    c.put(service(c, "web", "172.31.0.30")).await;
    c.put(service(c, "db", "172.31.0.31")).await;
    c.put(slice(c, "web", "a", &["10.132.1.5"])).await;
    let v = wait_view(&mut src, "synced, web and db seen but not exported", |v| {
        v.health.synced
            && v.snapshot
                .import
                .as_ref()
                .is_some_and(|i| i.not_exported >= 2)
    })
    .await;
    assert!(!imported(&v, &web) && !imported(&v, &db), "{v:#?}");
    let report = v.snapshot.import.clone().unwrap();
    assert_eq!(report.policy, "exported");
    assert_eq!(
        report.export_api.as_deref(),
        Some("multicluster.x-k8s.io/v1beta1")
    );

    let t = Instant::now();
    c.put(export(c, "web")).await;
    let v = wait_view(&mut src, "web imported once exported", |v| {
        imported(v, &web)
    })
    .await;
    eprintln!("export followed in {:.2} s", t.elapsed().as_secs_f64());
    assert!(!imported(&v, &db));
    assert_eq!(
        v.snapshot
            .services
            .iter()
            .find(|s| s.name == web)
            .unwrap()
            .endpoints
            .len(),
        1
    );
    // An export whose Service does not exist imports nothing (and breaks nothing).
    c.put(export(c, "ghost")).await;
    let t = Instant::now();
    c.remove(&export(c, "web")).await;
    wait_view(&mut src, "web gone once unexported", |v| !imported(v, &web)).await;
    eprintln!("unexport followed in {:.2} s", t.elapsed().as_secs_f64());
    for o in [
        export(c, "ghost"),
        service(c, "web", ""),
        service(c, "db", ""),
        slice(c, "web", "a", &[]),
    ] {
        c.remove(&o).await;
    }
}

/// `import: {selector}`: the API server filters the Services by label.
async fn a_selector_imports_the_labelled_services(c: &Cluster) {
    let label = format!("{}-export", c.prefix);
    let mut src = start_with(
        &c.kubeconfig,
        Import::Selector(format!("example.com/{label}=yes")),
    );
    let (web, db) = (c.name("web"), c.name("db"));
    let mut labelled = service(c, "web", "172.31.0.40");
    gen::label(&mut labelled, &format!("example.com/{label}"), "yes");
    c.put(labelled).await;
    c.put(service(c, "db", "172.31.0.41")).await;
    let v = wait_view(&mut src, "web (labelled) imported", |v| imported(v, &web)).await;
    assert!(!imported(&v, &db), "db has no label: {v:#?}");
    c.remove(&service(c, "web", "")).await;
    c.remove(&service(c, "db", "")).await;
}

async fn hostile_objects_are_rejected(c: &Cluster) {
    let (k1, k2, k3) = (key(), key(), key());
    let cfg = config(&c.kubeconfig);
    let mut src = start(&c.kubeconfig);
    let good = c.name("good");
    // Claims a pod range of the local cluster (east is 10.128.0.0/14).
    c.put(node(c, "steal", &k1, "192.0.2.31:51820", "10.128.5.0/24"))
        .await;
    // Malformed key; a huge annotation.
    c.put(node(
        c,
        "badkey",
        "AAAA",
        "192.0.2.32:51820",
        "10.132.109.0/24",
    ))
    .await;
    let mut big = node(c, "big", &k2, "192.0.2.33:51820", "10.132.110.0/24");
    gen::annotate(&mut big, ANN_ENDPOINT, &"9".repeat(4000));
    c.put(big).await;
    // A ClusterIP outside west's declared serviceCIDRs (inside its real range, see config());
    // an endpoint outside west's podCIDRs.
    c.put(service(c, "evil", "172.31.200.1")).await;
    c.put(service(c, "good", "172.31.0.20")).await;
    c.put(slice(c, "good", "a", &["10.132.1.5", "10.128.0.5"]))
        .await;
    c.put(node(c, "ok", &k3, "192.0.2.34:51820", "10.132.111.0/24"))
        .await;

    let v = wait_view(&mut src, "all objects seen", |v| {
        v.snapshot.rejected.len() >= 2
            && v.snapshot
                .services
                .iter()
                .any(|s| s.name == good && s.endpoints.len() == 2)
            && node_key(v, &c.name("ok")).is_some()
    })
    .await;
    let d = planned(&cfg, &v);
    let reason = |object: &str| {
        d.rejected
            .iter()
            .find(|r| r.object == object)
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{object} not rejected: {:#?}", d.rejected))
    };
    assert!(reason(&format!("node {}", c.name("steal"))).contains("outside remote west podCIDRs"));
    assert!(reason(&format!("node {}", c.name("badkey"))).contains("malformed key"));
    assert!(reason(&format!("node {}", c.name("big"))).contains("limit 1024"));
    assert!(reason(&format!("service default/{}", c.name("evil")))
        .contains("outside remote west serviceCIDRs"));
    assert!(
        reason(&format!("endpoint 10.128.0.5 of service default/{good}"))
            .contains("outside remote west podCIDRs")
    );
    // Nothing hostile was planned; the good parts were.
    // (On a shared real cluster other tests' nodes may be there too: look at ours only.)
    let ours: Vec<_> = d
        .peers
        .iter()
        .filter_map(|p| p.name.clone())
        .filter(|n| n.starts_with(&c.prefix))
        .collect();
    assert_eq!(ours, vec![c.name("ok")]);
    let g = d.services.iter().find(|s| s.service.name == good).unwrap();
    assert_eq!(g.service.endpoints.len(), 1);
    assert!(!d.services.iter().any(|s| s.service.name == c.name("evil")));
    for n in ["steal", "badkey", "big", "ok"] {
        c.remove(&node(c, n, &k1, "192.0.2.1:1", "10.132.100.0/24"))
            .await;
    }
    for s in ["evil", "good"] {
        c.remove(&service(c, s, "172.31.0.1")).await;
    }
    c.remove(&slice(c, "good", "a", &[])).await;
}

#[tokio::test]
async fn fake_nodes_join_rekey_and_leave() {
    nodes_join_rekey_and_leave(&Cluster::fake().await).await;
}

#[tokio::test]
async fn fake_services_and_endpoints_follow() {
    services_and_endpoints_follow(&Cluster::fake().await).await;
}

#[tokio::test]
async fn fake_hostile_objects_are_rejected() {
    hostile_objects_are_rejected(&Cluster::fake().await).await;
}

#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_nodes_join_rekey_and_leave() {
    nodes_join_rekey_and_leave(&Cluster::real("nodes")).await;
}

#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_services_and_endpoints_follow() {
    services_and_endpoints_follow(&Cluster::real("svcs")).await;
}

#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_hostile_objects_are_rejected() {
    hostile_objects_are_rejected(&Cluster::real("hostile")).await;
}

#[tokio::test]
async fn fake_exports_decide_what_is_imported() {
    exports_decide_what_is_imported(&Cluster::fake().await).await;
}

#[tokio::test]
async fn fake_a_selector_imports_the_labelled_services() {
    a_selector_imports_the_labelled_services(&Cluster::fake().await).await;
}

#[tokio::test]
#[ignore = "needs a real cluster with the MCS CRDs: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_exports_decide_what_is_imported() {
    exports_decide_what_is_imported(&Cluster::real("exports")).await;
}

#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_a_selector_imports_the_labelled_services() {
    a_selector_imports_the_labelled_services(&Cluster::real("selector")).await;
}

// ----- fake-only: things a test cannot do to a real cluster -----

/// A remote without the MCS CRDs imports nothing under `import: exported` and is not stale;
/// installing them there is followed without a restart, and so is their removal.
#[tokio::test]
async fn the_service_export_api_appearing_and_going_is_followed() {
    const MCS: &str = "multicluster.x-k8s.io";
    let c = Cluster::fake().await;
    let api = c.fake.as_ref().unwrap();
    api.set_group_served(MCS, false);
    let mut src = start_with(&c.kubeconfig, Import::Exported);
    let web = c.name("web");
    c.put(service(&c, "web", "172.31.0.50")).await;
    // Stored in-process: the HTTP API of the group is "not installed".
    api.apply(export(&c, "web")).unwrap();
    let v = wait_view(&mut src, "synced without the export API", |v| {
        v.health.synced
            && v.snapshot
                .import
                .as_ref()
                .is_some_and(|i| i.export_api.is_none() && i.not_exported == 1)
    })
    .await;
    assert!(
        v.health.stale_since_unix.is_none() && v.health.last_error.is_none(),
        "{v:#?}"
    );
    assert!(!imported(&v, &web));

    api.set_group_served(MCS, true);
    let v = wait_view_for(
        &mut src,
        "web imported once the CRDs are served",
        Duration::from_secs(30),
        |v| imported(v, &web),
    )
    .await;
    assert_eq!(
        v.snapshot.import.as_ref().unwrap().export_api.as_deref(),
        Some("multicluster.x-k8s.io/v1beta1")
    );

    // The CRDs go: a real server ends the watches, which re-list into a 404.
    api.set_group_served(MCS, false);
    api.set_down(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.set_down(false);
    let v = wait_view_for(
        &mut src,
        "nothing imported once the CRDs are gone",
        Duration::from_secs(30),
        |v| {
            !imported(v, &web)
                && v.health.stale_since_unix.is_none()
                && v.snapshot
                    .import
                    .as_ref()
                    .is_some_and(|i| i.export_api.is_none())
        },
    )
    .await;
    assert!(v.health.synced);
}

#[tokio::test]
async fn outage_keeps_the_last_snapshot_marks_stale_and_catches_up() {
    let (k1, k2) = (key(), key());
    let c = Cluster::fake().await;
    let api = c.fake.as_ref().unwrap();
    let mut src = start(&c.kubeconfig);
    c.put(node(&c, "b1", &k1, "192.0.2.11:51820", "10.132.101.0/24"))
        .await;
    let b1 = c.name("b1");
    let b2 = c.name("b2");
    wait_view(&mut src, "b1", |v| {
        v.health.synced && node_key(v, &b1).is_some()
    })
    .await;

    api.set_down(true);
    let v = wait_view(&mut src, "stale", |v| v.health.stale_since_unix.is_some()).await;
    assert!(v.health.last_error.is_some());
    assert!(
        node_key(&v, &b1).is_some(),
        "snapshot must survive an outage"
    );
    // Changes made while the API is unreachable (as seen from us).
    api.apply(node(&c, "b2", &k2, "192.0.2.12:51820", "10.132.102.0/24"))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = src.rx.borrow().clone();
    assert!(node_key(&v, &b1).is_some() && node_key(&v, &b2).is_none());
    assert!(v.health.stale_since_unix.is_some());

    api.set_down(false);
    let v = wait_view(&mut src, "recovered with b2", |v| {
        v.health.stale_since_unix.is_none() && node_key(v, &b2).is_some()
    })
    .await;
    assert!(v.health.last_error.is_none());
    assert!(node_key(&v, &b1).is_some());
}

#[tokio::test]
async fn compaction_forces_a_relist_that_converges() {
    let (k1, k2) = (key(), key());
    let c = Cluster::fake().await;
    let api = c.fake.as_ref().unwrap();
    let mut src = start(&c.kubeconfig);
    c.put(node(&c, "b1", &k1, "192.0.2.11:51820", "10.132.101.0/24"))
        .await;
    let (b1, b2) = (c.name("b1"), c.name("b2"));
    wait_view(&mut src, "b1", |v| {
        v.health.synced && node_key(v, &b1).is_some()
    })
    .await;
    let lists_before = api.lists("nodes");

    api.compact();
    // While the watcher re-lists: b1 deleted, b2 added.
    api.delete("Node", None, &b1).unwrap();
    api.apply(node(&c, "b2", &k2, "192.0.2.12:51820", "10.132.102.0/24"))
        .unwrap();
    let v = wait_view(&mut src, "converged after 410", |v| {
        node_key(v, &b1).is_none() && node_key(v, &b2).is_some()
    })
    .await;
    assert!(v.health.synced);
    assert!(
        api.lists("nodes") > lists_before,
        "410 must cause a re-list (lists before {lists_before}, after {})",
        api.lists("nodes")
    );
}

#[tokio::test]
async fn missing_kubeconfig_is_a_clear_per_remote_error() {
    let mut src = start(Path::new("/nonexistent/west.kubeconfig"));
    let v = wait_view(&mut src, "error", |v| v.health.last_error.is_some()).await;
    let e = v.health.last_error.unwrap();
    assert!(e.contains("/nonexistent/west.kubeconfig"), "{e}");
    assert!(!v.health.synced);
}

#[tokio::test]
async fn a_changed_kubeconfig_is_followed_without_a_restart() {
    // Two API servers stand for "the same cluster before and after a credential/endpoint
    // change": the source must move to the second one when the file changes, and its
    // re-list must replace the first one's objects (b1 goes, b2 comes).
    let (k1, k2) = (key(), key());
    let c = Cluster::fake().await;
    let other = FakeApi::start().await.unwrap();
    let mut src = start(&c.kubeconfig);
    c.put(node(&c, "b1", &k1, "192.0.2.11:51820", "10.132.101.0/24"))
        .await;
    other
        .apply(node(&c, "b2", &k2, "192.0.2.12:51820", "10.132.102.0/24"))
        .unwrap();
    let (b1, b2) = (c.name("b1"), c.name("b2"));
    wait_view(&mut src, "b1 from the first API", |v| {
        v.health.synced && node_key(v, &b1).is_some()
    })
    .await;

    // A broken file (as a half-written one would be) keeps the current connection.
    std::fs::write(&c.kubeconfig, "apiVersion: v1\nkind: Config\nclusters: [").unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let v = src.rx.borrow().clone();
    assert!(node_key(&v, &b1).is_some() && v.health.stale_since_unix.is_none());

    // Atomically replaced, as the kubelet does for a Secret volume.
    let tmp = c.kubeconfig.with_extension("new");
    other.write_kubeconfig(&tmp, "west").unwrap();
    std::fs::rename(&tmp, &c.kubeconfig).unwrap();
    let v = wait_view(&mut src, "b2 from the second API, b1 gone", |v| {
        node_key(v, &b2).is_some() && node_key(v, &b1).is_none()
    })
    .await;
    assert!(v.health.synced && v.health.stale_since_unix.is_none());
}

/// The MCS controller's Lease election against a real API server (its optimistic concurrency
/// is what makes a single holder): of two contenders exactly one holds the Lease; when it
/// stops renewing, the other takes over once the Lease has expired.
#[tokio::test]
#[ignore = "needs a real cluster: KUBECONFIG=... cargo test --test kube_source -- --ignored"]
async fn real_one_lease_holder_and_takeover() {
    use sdn_tunnel::agent::mcs_lease::{Leadership, LeaseLoop, DURATION_S};
    let c = Cluster::real("lease");
    let name = c.name("lease");
    let mut loops = Vec::new();
    for me in ["x", "y"] {
        let (tx, rx) = watch::channel(Leadership::default());
        let l = LeaseLoop {
            client: c.client().await,
            namespace: "default".into(),
            name: name.clone(),
            me: me.into(),
        };
        loops.push((me, tokio::spawn(l.run(tx)), rx));
    }
    let leaders = |loops: &Vec<(
        &str,
        tokio::task::JoinHandle<()>,
        watch::Receiver<Leadership>,
    )>| {
        loops
            .iter()
            .filter(|(_, _, rx)| rx.borrow().leader)
            .map(|(me, _, _)| me.to_string())
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    while leaders(&loops).len() != 1 {
        assert!(
            t.elapsed() < WAIT,
            "no single leader: {:?}",
            leaders(&loops)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several rounds later still one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first = leaders(&loops);
    assert_eq!(first.len(), 1, "{first:?}");
    let i = loops.iter().position(|(me, _, _)| *me == first[0]).unwrap();
    let (_, task, _) = loops.remove(i);
    task.abort();
    let t = Instant::now();
    let (other, _, rx) = &loops[0];
    while !rx.borrow().leader {
        assert!(
            t.elapsed() < Duration::from_secs(DURATION_S as u64 + 15),
            "{other} did not take over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{other} took over {:.1} s after {} stopped (lease {DURATION_S} s)",
        t.elapsed().as_secs_f64(),
        first[0]
    );
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client().await, "default");
    let lease = api.get(&name).await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(*other));
    assert_eq!(spec.lease_transitions, Some(1));
    loops[0].1.abort();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
