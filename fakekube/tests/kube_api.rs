//! kube-rs `Api` calls against the fake server: CRUD, errors, pagination, selectors.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::client;
use fakekube::gen::{self, ClusterSpec, Endpoint, Port};
use fakekube::{FakeApi, Verb};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Error, ResourceExt};
use serde_json::json;

fn code(e: &Error) -> u16 {
    match e {
        Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn reason(e: &Error) -> String {
    match e {
        Error::Api(s) => s.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn node_json(name: &str) -> serde_json::Value {
    gen::node(
        name,
        "192.168.1.10",
        Some("203.0.113.10"),
        &["10.244.1.0/24"],
    )
}

#[tokio::test]
async fn node_create_get_replace_patch_delete() {
    let api = FakeApi::start().await.unwrap();
    let nodes: Api<Node> = Api::all(client(&api).await);

    let n: Node = serde_json::from_value(node_json("n1")).unwrap();
    let created = nodes.create(&PostParams::default(), &n).await.unwrap();
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(created.uid().is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    // Nodes keep the status given at create, like the apiserver.
    let addrs = created.status.as_ref().unwrap().addresses.as_ref().unwrap();
    assert_eq!(addrs[0].type_, "InternalIP");
    assert_eq!(
        created.spec.as_ref().unwrap().pod_cidrs.as_ref().unwrap(),
        &["10.244.1.0/24"]
    );

    // Duplicate create: 409 AlreadyExists.
    let e = nodes.create(&PostParams::default(), &n).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "AlreadyExists"));

    let got = nodes.get("n1").await.unwrap();
    assert_eq!(got.uid(), created.uid());

    // Replace with the current RV works and bumps RV and generation.
    let mut changed = got.clone();
    changed.spec.as_mut().unwrap().unschedulable = Some(true);
    let replaced = nodes
        .replace("n1", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.uid(), created.uid());

    // Replace with a stale RV: 409 Conflict.
    let e = nodes
        .replace("n1", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));

    // Merge patch of annotations; null removes a key.
    let pp = PatchParams::default();
    let p = json!({"metadata": {"annotations": {"sdn-tunnel/public-key": "abc=", "node.alpha.kubernetes.io/ttl": null}}});
    let patched = nodes.patch("n1", &pp, &Patch::Merge(&p)).await.unwrap();
    let ann = patched.annotations();
    assert_eq!(
        ann.get("sdn-tunnel/public-key").map(String::as_str),
        Some("abc=")
    );
    assert!(!ann.contains_key("node.alpha.kubernetes.io/ttl"));
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );

    // Strategic merge patch of annotations merges too.
    let p = json!({"metadata": {"annotations": {"b": "2"}}});
    let patched = nodes.patch("n1", &pp, &Patch::Strategic(&p)).await.unwrap();
    assert_eq!(patched.annotations().len(), 2);

    // A patch that changes nothing keeps the RV (no event), like the apiserver.
    let again = nodes.patch("n1", &pp, &Patch::Merge(&p)).await.unwrap();
    assert_eq!(again.resource_version(), patched.resource_version());

    // Patch with a stale RV precondition: 409.
    let p = json!({"metadata": {"resourceVersion": rv1.to_string(), "labels": {"x": "y"}}});
    let e = nodes.patch("n1", &pp, &Patch::Merge(&p)).await.unwrap_err();
    assert_eq!(code(&e), 409);

    // The main resource ignores status changes; /status changes only status.
    let p = json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.99"}]}, "spec": {"unschedulable": false}});
    let main = nodes.patch("n1", &pp, &Patch::Merge(&p)).await.unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().addresses.as_ref().unwrap()[0].address,
        "192.168.1.10"
    );
    assert_eq!(main.spec.as_ref().unwrap().unschedulable, Some(false));
    let st = nodes
        .patch_status("n1", &pp, &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().addresses.as_ref().unwrap()[0].address,
        "192.168.1.99"
    );

    // Delete returns the object; then 404.
    let deleted = nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let obj = deleted.left().expect("the deleted object");
    assert_eq!(obj.name_any(), "n1");
    let e = nodes.get("n1").await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (404, "NotFound"));
    let e = nodes
        .delete("n1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), 404);
    assert_eq!(nodes.get_opt("n1").await.unwrap(), None);
    assert_eq!(api.count("nodes", Verb::Delete), 2);
}

#[tokio::test]
async fn namespaced_services_and_slices() {
    let api = FakeApi::start().await.unwrap();
    let c = client(&api).await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "prod");
    let s: Service = serde_json::from_value(gen::service(
        "prod",
        "web",
        &["10.96.0.10"],
        &[Port::tcp("http", 80, 8080)],
    ))
    .unwrap();
    let created = svcs.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.namespace().as_deref(), Some("prod"));
    assert_eq!(
        created.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.10")
    );

    // Namespace mismatch between body and URL: 400.
    let other: Api<Service> = Api::namespaced(c.clone(), "dev");
    let e = other.create(&PostParams::default(), &s).await.unwrap_err();
    assert_eq!(code(&e), 400);

    // Same name in another namespace is another object.
    let s_dev: Service =
        serde_json::from_value(gen::service("dev", "web", &["10.96.0.11"], &[])).unwrap();
    other.create(&PostParams::default(), &s_dev).await.unwrap();
    let all: Api<Service> = Api::all(c.clone());
    let names: Vec<_> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap(), s.name_any()))
        .collect();
    assert_eq!(names, ["dev/web", "prod/web"]);
    assert_eq!(
        svcs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "prod");
    let es: EndpointSlice = serde_json::from_value(gen::endpoint_slice(
        "prod",
        "web",
        "web-abc",
        &[
            Endpoint::ready("10.244.1.5", "n1"),
            Endpoint::terminating("10.244.2.5", "n2"),
        ],
        &[Port::tcp("http", 80, 8080)],
    ))
    .unwrap();
    let created = slices.create(&PostParams::default(), &es).await.unwrap();
    let eps = created.endpoints.as_ref().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[1].conditions.as_ref().unwrap().terminating, Some(true));
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].address_type, "IPv4");
    slices
        .delete("web-abc", &DeleteParams::default())
        .await
        .unwrap();
    assert!(api.get("EndpointSlice", Some("prod"), "web-abc").is_none());
}

#[tokio::test]
async fn pagination_returns_everything_once_from_one_snapshot() {
    let api = FakeApi::start().await.unwrap();
    for i in 0..5 {
        api.apply(node_json(&format!("n{i}"))).unwrap();
    }
    let nodes: Api<Node> = Api::all(client(&api).await);
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = nodes.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|n| n.name_any()));
        let rv = page.metadata.resource_version.clone().unwrap();
        assert_eq!(
            first_rv.get_or_insert(rv.clone()),
            &rv,
            "all pages at the first page's RV"
        );
        if pages == 1 {
            // Writes between pages are not seen by later pages.
            api.delete("Node", None, "n4").unwrap();
            api.apply(node_json("n9")).unwrap();
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["n0", "n1", "n2", "n3", "n4"]);
    assert_eq!(api.lists("nodes"), 3);
    assert!(api
        .last_query("nodes", Verb::List)
        .unwrap()
        .contains("continue="));

    // A continue token older than the compaction point: 410 Expired.
    let page = nodes.list(&ListParams::default().limit(2)).await.unwrap();
    api.apply(node_json("n10")).unwrap();
    api.compact();
    let e = nodes
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (410, "Expired"));
}

#[tokio::test]
async fn label_and_field_selectors() {
    let api = FakeApi::start().await.unwrap();
    for (name, zone, gpu) in [
        ("a", "z1", false),
        ("b", "z2", true),
        ("c", "z3", false),
        ("d", "z1", true),
    ] {
        let mut n = node_json(name);
        gen::label(&mut n, "zone", zone);
        if gpu {
            gen::label(&mut n, "gpu", "yes");
        }
        api.apply(n).unwrap();
    }
    let nodes: Api<Node> = Api::all(client(&api).await);
    let names = |sel: &'static str| {
        let nodes = nodes.clone();
        async move {
            nodes
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .iter()
                .map(|n| n.name_any())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("zone=z1").await, ["a", "d"]);
    assert_eq!(names("zone==z1").await, ["a", "d"]);
    assert_eq!(names("zone!=z1").await, ["b", "c"]);
    assert_eq!(names("gpu").await, ["b", "d"]);
    assert_eq!(names("!gpu").await, ["a", "c"]);
    assert_eq!(names("zone in (z2,z3)").await, ["b", "c"]);
    assert_eq!(names("zone notin (z2, z3)").await, ["a", "d"]);
    assert_eq!(names("zone=z1,!gpu").await, ["a"]);
    assert!(names("zone=nowhere").await.is_empty());
    // Selector plus pagination.
    let page = nodes
        .list(&ListParams::default().labels("zone in (z1,z2,z3)").limit(3))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(page.metadata.continue_.is_some());
    // Bad selector: 400.
    let e = nodes
        .list(&ListParams::default().labels("zone in z1"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 400);

    let by_field = nodes
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let by_field = nodes
        .list(&ListParams::default().fields("metadata.name!=c"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 3);

    let c = client(&api).await;
    for ns in ["x", "y"] {
        api.apply(gen::service(ns, "s", &["10.96.0.1"], &[]))
            .unwrap();
    }
    let all: Api<Service> = Api::all(c);
    let l = all
        .list(&ListParams::default().fields("metadata.namespace=y"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].namespace().as_deref(), Some("y"));
    let l = all
        .list(&ListParams::default().fields("metadata.namespace!=y,metadata.name=s"))
        .await
        .unwrap();
    assert_eq!(l.items[0].namespace().as_deref(), Some("x"));
}

#[tokio::test]
async fn version_and_two_independent_instances() {
    let a = FakeApi::start().await.unwrap();
    let b = FakeApi::start().await.unwrap();
    assert_ne!(a.addr(), b.addr());
    let (ca, cb) = (client(&a).await, client(&b).await);
    let v = ca.apiserver_version().await.unwrap();
    assert_eq!(v.git_version, "v1.33.0");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));

    a.apply(node_json("only-in-a")).unwrap();
    for i in 0..3 {
        b.apply(node_json(&format!("b{i}"))).unwrap();
    }
    let na: Api<Node> = Api::all(ca);
    let nb: Api<Node> = Api::all(cb);
    assert_eq!(
        na.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        nb.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    assert!(nb.get_opt("only-in-a").await.unwrap().is_none());
    assert_ne!(a.resource_version(), b.resource_version());

    // An outage of one does not touch the other.
    a.set_down(true);
    assert!(na.list(&ListParams::default()).await.is_err());
    assert_eq!(
        nb.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    a.set_down(false);
    assert_eq!(
        na.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        a.lists("nodes"),
        2,
        "the refused request never reached the handler"
    );
}

#[tokio::test]
async fn bulk_load_is_fast_and_lists_in_pages() {
    let api = FakeApi::start().await.unwrap();
    let objs = gen::cluster(&ClusterSpec {
        nodes: 1000,
        services: 10_000,
        endpoints_per_service: 5,
        ..Default::default()
    });
    let n = objs.len();
    let t = Instant::now();
    api.apply_all(objs).unwrap();
    let took = t.elapsed();
    eprintln!("applied {n} objects in {took:?}");
    // Well under a second in release; generous for unoptimized test builds on a busy machine.
    assert!(
        took.as_secs_f64() < if cfg!(debug_assertions) { 3.0 } else { 1.0 },
        "bulk apply took {took:?}"
    );
    assert_eq!(api.count_objects("services"), 10_000);
    assert_eq!(api.count_objects("endpointslices"), 10_000);
    assert_eq!(api.count_objects("nodes"), 1000);

    // kube-rs pages through them (the watcher's default page size is 500).
    let slices: Api<EndpointSlice> = Api::all(client(&api).await);
    let mut lp = ListParams::default().limit(500);
    let mut seen = BTreeSet::new();
    loop {
        let page = slices.list(&lp).await.unwrap();
        for s in &page.items {
            assert!(seen.insert(format!("{}/{}", s.namespace().unwrap(), s.name_any())));
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 10_000);
    assert_eq!(api.lists("endpointslices"), 20);
}
