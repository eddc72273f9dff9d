//! kube-runtime watchers (default config, default backoff) against the fake server: events,
//! bookmarks, selector transitions, recovery from compaction (410) and from an outage.

mod common;

use std::time::Duration;

use common::{client, server_state, wait_for, Mirror};
use fakekube::gen::{self, Endpoint, Port};
use fakekube::FakeApi;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn node_json(name: &str) -> serde_json::Value {
    gen::node(name, "192.168.1.10", None, &["10.244.1.0/24"])
}

fn slice_json(ns: &str, svc: &str, ip: &str) -> serde_json::Value {
    gen::endpoint_slice(
        ns,
        svc,
        &format!("{svc}-x"),
        &[Endpoint::ready(ip, "n1")],
        &[Port::tcp("http", 80, 8080)],
    )
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_for_all_three_kinds() {
    let api = FakeApi::start().await.unwrap();
    api.apply(node_json("n0")).unwrap();
    api.apply(gen::service("a", "s0", &["10.96.0.1"], &[]))
        .unwrap();
    api.apply(slice_json("a", "s0", "10.244.0.1")).unwrap();
    let c = client(&api).await;
    let nodes = Mirror::start(Api::<Node>::all(c.clone()), watcher::Config::default());
    let svcs = Mirror::start(Api::<Service>::all(c.clone()), watcher::Config::default());
    let slices = Mirror::start(
        Api::<EndpointSlice>::all(c.clone()),
        watcher::Config::default(),
    );
    for (m, kind) in [
        (&nodes, "Node"),
        (&svcs, "Service"),
        (&slices, "EndpointSlice"),
    ] {
        wait_for(T, "initial sync", || m.count("InitDone") == 1).await;
        assert_eq!(m.snapshot(), server_state(&api, kind));
    }
    assert_eq!(nodes.events(), ["Init", "InitApply(n0)", "InitDone"]);
    wait_for(T, "three watches", || api.active_watches() == 3).await;

    // Added (over HTTP through kube, and in-process), modified, deleted.
    let n1: Node = serde_json::from_value(node_json("n1")).unwrap();
    Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &n1)
        .await
        .unwrap();
    api.merge(
        "Node",
        None,
        "n0",
        &json!({"metadata": {"annotations": {"k": "v"}}}),
    )
    .unwrap();
    api.delete("Node", None, "n1").unwrap();
    api.apply(gen::service("b", "s1", &["10.96.0.2"], &[]))
        .unwrap();
    api.merge(
        "svc",
        Some("a"),
        "s0",
        &json!({"spec": {"sessionAffinity": "ClientIP"}}),
    )
    .unwrap();
    api.delete("svc", Some("a"), "s0").unwrap();
    api.apply(slice_json("b", "s1", "10.244.0.2")).unwrap();
    api.apply(slice_json("a", "s0", "10.244.0.3")).unwrap();
    api.delete("EndpointSlice", Some("a"), "s0-x").unwrap();

    wait_for(T, "node events", || nodes.events().len() == 6).await;
    assert_eq!(
        nodes.events()[3..],
        ["Apply(n1)", "Apply(n0)", "Delete(n1)"]
    );
    wait_for(T, "service events", || svcs.events().len() == 6).await;
    assert_eq!(
        svcs.events()[3..],
        ["Apply(b/s1)", "Apply(a/s0)", "Delete(a/s0)"]
    );
    wait_for(T, "slice events", || slices.events().len() == 6).await;
    assert_eq!(
        slices.events()[3..],
        ["Apply(b/s1-x)", "Apply(a/s0-x)", "Delete(a/s0-x)"]
    );
    for (m, kind) in [
        (&nodes, "Node"),
        (&svcs, "Service"),
        (&slices, "EndpointSlice"),
    ] {
        assert_eq!(m.snapshot(), server_state(&api, kind));
    }
    assert_eq!((api.lists("nodes"), api.watches("nodes")), (1, 1));
    let q = api.last_query("nodes", fakekube::Verb::Watch).unwrap();
    assert!(
        q.contains("allowWatchBookmarks=true") && q.contains("timeoutSeconds=290"),
        "{q}"
    );
}

#[tokio::test]
async fn bookmarks_arrive_and_carry_the_latest_rv() {
    let api = FakeApi::start().await.unwrap();
    api.set_bookmark_interval(Duration::from_millis(200));
    api.apply(node_json("n0")).unwrap();
    let nodes: Api<Node> = Api::all(client(&api).await);
    let rv = api.resource_version().to_string();
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    // Writes to other kinds advance the bookmark's RV (they are not node events).
    api.apply(gen::service("a", "s", &["10.96.0.1"], &[]))
        .unwrap();
    let latest = api.resource_version().to_string();
    let mut bookmarks = 0;
    let t = tokio::time::Instant::now();
    while bookmarks < 3 {
        match tokio::time::timeout(Duration::from_secs(3), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.metadata.resource_version, latest);
                assert_eq!(b.types.kind, "Node");
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(t.elapsed() >= Duration::from_millis(500));

    // Without allowWatchBookmarks there are none.
    let mut quiet = nodes
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(1),
            &latest,
        )
        .await
        .unwrap()
        .boxed();
    assert!(
        quiet.try_next().await.unwrap().is_none(),
        "closed after timeoutSeconds with no events"
    );
}

#[tokio::test]
async fn label_selector_transitions_are_added_and_deleted() {
    let api = FakeApi::start().await.unwrap();
    let mut n = node_json("n0");
    gen::label(&mut n, "role", "gateway");
    api.apply(n).unwrap();
    let nodes: Api<Node> = Api::all(client(&api).await);
    let rv = api.resource_version().to_string();
    let wp = WatchParams::default()
        .labels("role=gateway")
        .disable_bookmarks();
    let mut stream = nodes.watch(&wp, &rv).await.unwrap().boxed();
    api.merge(
        "Node",
        None,
        "n0",
        &json!({"metadata": {"labels": {"role": "worker"}}}),
    )
    .unwrap();
    api.merge(
        "Node",
        None,
        "n0",
        &json!({"metadata": {"annotations": {"ignored": "yes"}}}),
    )
    .unwrap();
    api.merge(
        "Node",
        None,
        "n0",
        &json!({"metadata": {"labels": {"role": "gateway"}}}),
    )
    .unwrap();
    api.merge(
        "Node",
        None,
        "n0",
        &json!({"metadata": {"annotations": {"seen": "yes"}}}),
    )
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = tokio::time::timeout(T, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(match ev {
            WatchEvent::Added(n) => format!("ADDED {}", n.labels()["role"]),
            WatchEvent::Modified(n) => format!("MODIFIED {}", n.annotations().contains_key("seen")),
            // Like the apiserver: the last matching content, at the event's RV.
            WatchEvent::Deleted(n) => format!(
                "DELETED {} {}",
                n.labels()["role"],
                n.resource_version().unwrap()
            ),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(got, ["DELETED gateway 3", "ADDED gateway", "MODIFIED true"]);
}

#[tokio::test]
async fn watcher_relists_after_compaction() {
    let api = FakeApi::start().await.unwrap();
    for i in 0..3 {
        api.apply(gen::service("a", &format!("s{i}"), &["10.96.0.1"], &[]))
            .unwrap();
    }
    let svcs = Mirror::start(
        Api::<Service>::all(client(&api).await),
        watcher::Config::default(),
    );
    wait_for(T, "initial sync", || svcs.count("InitDone") == 1).await;
    wait_for(T, "watching", || api.active_watches() == 1).await;
    assert_eq!(api.lists("services"), 1);

    // The open watch gets ERROR 410 Expired and the watcher starts over with a new LIST.
    api.compact();
    api.delete("svc", Some("a"), "s0").unwrap();
    api.merge(
        "svc",
        Some("a"),
        "s1",
        &json!({"metadata": {"labels": {"v": "2"}}}),
    )
    .unwrap();
    api.apply(gen::service("b", "s9", &["10.96.0.9"], &[]))
        .unwrap();
    wait_for(T, "re-list", || svcs.count("InitDone") == 2).await;
    wait_for(T, "convergence", || {
        svcs.snapshot() == server_state(&api, "Service")
    })
    .await;
    assert!(
        svcs.events()
            .iter()
            .any(|e| e.starts_with("Error(") && e.contains("Expired")),
        "{:?}",
        svcs.events()
    );
    assert_eq!(api.lists("services"), 2);
    wait_for(T, "second watch", || api.watches("services") == 2).await;

    // And it keeps following changes after the re-list.
    api.delete("svc", Some("b"), "s9").unwrap();
    wait_for(T, "post-relist event", || {
        !svcs.snapshot().contains_key("b/s9")
    })
    .await;
    assert_eq!(svcs.snapshot(), server_state(&api, "Service"));
}

#[tokio::test]
async fn watcher_survives_an_outage_and_a_compaction_during_it() {
    let api = FakeApi::start().await.unwrap();
    api.apply(node_json("n0")).unwrap();
    let nodes = Mirror::start(
        Api::<Node>::all(client(&api).await),
        watcher::Config::default(),
    );
    wait_for(T, "initial sync", || nodes.count("InitDone") == 1).await;
    wait_for(T, "watching", || api.active_watches() == 1).await;

    // Outage: the watch is cut, reconnects are reset.
    api.set_down(true);
    wait_for(T, "connections cut", || {
        api.open_connections() == 0 && api.active_watches() == 0
    })
    .await;
    api.apply(node_json("during-outage")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(nodes.count("Error(") >= 1, "{:?}", nodes.events());
    let watches_while_down = api.watches("nodes");
    api.set_down(false);
    api.apply(node_json("after-outage")).unwrap();
    wait_for(Duration::from_secs(20), "catch-up after outage", || {
        nodes.snapshot() == server_state(&api, "Node")
    })
    .await;
    // History was kept: it resumed the watch from its RV, no new LIST.
    assert_eq!(api.lists("nodes"), 1, "{:?}", api.request_log());
    assert!(api.watches("nodes") > watches_while_down);

    // Outage with compaction during it: the resumed watch gets 410 and the watcher re-lists.
    wait_for(T, "watching", || api.active_watches() == 1).await;
    api.set_down(true);
    wait_for(T, "connections cut", || api.active_watches() == 0).await;
    api.delete("Node", None, "n0").unwrap();
    api.compact();
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.set_down(false);
    api.apply(node_json("after-compaction")).unwrap();
    wait_for(Duration::from_secs(20), "re-list after compaction", || {
        nodes.count("InitDone") == 2 && nodes.snapshot() == server_state(&api, "Node")
    })
    .await;
    assert_eq!(api.lists("nodes"), 2);
    assert!(!nodes.snapshot().contains_key("n0"));
}

#[tokio::test]
async fn streaming_list_watcher_works_too() {
    let api = FakeApi::start().await.unwrap();
    for i in 0..3 {
        api.apply(node_json(&format!("n{i}"))).unwrap();
    }
    let nodes = Mirror::start(
        Api::<Node>::all(client(&api).await),
        watcher::Config::default().streaming_lists(),
    );
    wait_for(T, "initial events", || nodes.count("InitDone") == 1).await;
    assert_eq!(nodes.count("InitApply("), 3);
    api.apply(node_json("n3")).unwrap();
    wait_for(T, "apply", || {
        nodes.snapshot() == server_state(&api, "Node")
    })
    .await;
    assert_eq!(api.lists("nodes"), 0);
    assert!(api
        .last_query("nodes", fakekube::Verb::Watch)
        .unwrap()
        .contains("sendInitialEvents=true"));
    assert_eq!(
        nodes
            .snapshot()
            .keys()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        ["n0", "n1", "n2", "n3"]
    );
}
