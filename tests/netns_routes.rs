//! Route reconciler, link ops, sysctls and the nftables table against a real kernel, inside a
//! throw-away network namespace (root only; see `common::require_root`).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::Netns;
use ipnetwork::IpNetwork;
use sdn_tunnel::routes::{RouteError, Routes};
use sdn_tunnel::{host, link, nft};

const PROTO: u8 = 93;
const DEV: &str = "sdn-test0";

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> BTreeSet<IpNetwork> {
    v.iter().map(|s| net(s)).collect()
}

/// Destinations of `ip [-6] route show <args>` (first word of each line).
fn ip_route_dests(ns: &Netns, v6: bool, args: &[&str]) -> BTreeSet<IpNetwork> {
    let mut all = vec![if v6 { "-6" } else { "-4" }, "route", "show"];
    all.extend_from_slice(args);
    ns.ip(&all)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|d| d.parse().unwrap_or_else(|e| panic!("parse {d:?}: {e}")))
        .collect()
}

fn ours_in_kernel(ns: &Netns) -> BTreeSet<IpNetwork> {
    let p = PROTO.to_string();
    let mut s = ip_route_dests(ns, false, &["proto", &p]);
    s.extend(ip_route_dests(ns, true, &["proto", &p]));
    s
}

fn setup(ns: &Netns) {
    // veth pairs (both ends up, so they have carrier) rather than dummies: not every test
    // kernel has the dummy driver.
    for dev in [DEV, "sdn-src0"] {
        let peer = format!("{dev}p");
        ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);
    }
    ns.ip(&["addr", "add", "10.128.0.1/24", "dev", "sdn-src0"]);
    ns.ip(&["addr", "add", "fd00:128::1/64", "dev", "sdn-src0", "nodad"]);
    // Foreign routes: one outside, two inside our desired set (same device and another one).
    ns.ip(&[
        "route",
        "add",
        "10.200.0.0/16",
        "dev",
        DEV,
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.210.0.0/16",
        "dev",
        DEV,
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.211.0.0/16",
        "dev",
        "sdn-src0",
        "proto",
        "94",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:300::/48",
        "dev",
        "sdn-src0",
        "proto",
        "static",
    ]);
    // Stale ours (e.g. left by a crashed run): not desired; desired but without src; desired
    // but on the wrong device; and a duplicate pair (same destination, two metrics).
    let p = PROTO.to_string();
    ns.ip(&["route", "add", "10.220.0.0/16", "dev", DEV, "proto", &p]);
    ns.ip(&["route", "add", "10.230.0.0/16", "dev", DEV, "proto", &p]);
    ns.ip(&[
        "route",
        "add",
        "10.231.0.0/16",
        "dev",
        "sdn-src0",
        "proto",
        &p,
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.232.0.0/16",
        "dev",
        DEV,
        "proto",
        &p,
        "src",
        "10.128.0.1",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.232.0.0/16",
        "dev",
        DEV,
        "proto",
        &p,
        "src",
        "10.128.0.1",
        "metric",
        "5",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:220::/48",
        "dev",
        DEV,
        "proto",
        &p,
    ]);
}

#[test]
fn routes_links_sysctls_and_nft_in_a_netns() {
    if !common::require_root() || !common::require_program("ip") {
        return;
    }
    let ns = Netns::new("sdn-rt");
    setup(&ns);
    let foreign_v4 = nets(&["10.200.0.0/16", "10.210.0.0/16"]);

    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let routes = Routes::new(PROTO).unwrap();
            routes_scenario(&routes, &ns, &foreign_v4).await;
            link_scenario(&routes).await;
        });
        sysctl_scenario();
        nft_scenario(&ns);
    });
}

async fn routes_scenario(routes: &Routes, ns: &Netns, foreign_v4: &BTreeSet<IpNetwork>) {
    let src4: Ipv4Addr = "10.128.0.1".parse().unwrap();
    let src6: Ipv6Addr = "fd00:128::1".parse().unwrap();

    // Source discovery: first CIDR order, per family; nothing for CIDRs without local addresses.
    let found = routes
        .find_local_source(&[
            net("10.99.0.0/16"),
            net("10.128.0.0/14"),
            net("fd00:128::/48"),
        ])
        .await
        .unwrap();
    assert_eq!(found, (Some(src4), Some(src6)));
    assert_eq!(
        routes
            .find_local_source(&[net("10.99.0.0/16")])
            .await
            .unwrap(),
        (None, None)
    );

    let desired = vec![
        net("10.210.0.0/16"), // a foreign route to it exists: keep it, add ours next to it
        net("10.230.0.0/16"), // ours exists without src: replace
        net("10.231.0.0/16"), // ours exists on the wrong device: replace
        net("10.232.0.0/16"), // ours exists twice: keep one
        net("10.240.0.0/16"),
        net("10.250.0.5/16"), // host bits: normalised to 10.250.0.0/16
        net("10.250.0.0/16"), // duplicate after normalisation
        net("fd00:200::/48"),
    ];
    let want = nets(&[
        "10.210.0.0/16",
        "10.230.0.0/16",
        "10.231.0.0/16",
        "10.232.0.0/16",
        "10.240.0.0/16",
        "10.250.0.0/16",
        "fd00:200::/48",
    ]);

    // A src that is not local: refused up front, nothing changed.
    let before = routes.list_ours().await.unwrap();
    let err = routes
        .reconcile(
            DEV,
            &desired,
            Some("10.99.0.1".parse().unwrap()),
            Some(src6),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::SourceNotLocal(_)), "{err}");
    assert!(
        err.to_string().contains("10.99.0.1") && err.to_string().contains("local"),
        "{err}"
    );
    assert_eq!(routes.list_ours().await.unwrap(), before);

    // Missing device: clear error.
    let err = routes
        .reconcile("nonexistent0", &desired, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::DeviceNotFound(_)), "{err}");

    // First reconcile.
    let ch = routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap();
    let added: BTreeSet<_> = ch.added.iter().copied().collect();
    assert_eq!(
        added,
        nets(&[
            "10.210.0.0/16",
            "10.230.0.0/16",
            "10.231.0.0/16",
            "10.240.0.0/16",
            "10.250.0.0/16",
            "fd00:200::/48"
        ]),
        "{ch:?}"
    );
    let removed: BTreeSet<_> = ch.removed.iter().copied().collect();
    assert_eq!(
        removed,
        nets(&[
            "10.220.0.0/16",
            "10.230.0.0/16",
            "10.231.0.0/16",
            "10.232.0.0/16",
            "fd00:220::/48"
        ]),
        "{ch:?}"
    );
    assert_eq!(
        ch.removed.len(),
        5,
        "one of the two 10.232.0.0/16 routes stays: {ch:?}"
    );

    // Second reconcile: nothing to do.
    let ch2 = routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap();
    assert!(ch2.added.is_empty() && ch2.removed.is_empty(), "{ch2:?}");

    // list_ours sees exactly ours, all correct.
    let ours = routes.list_ours().await.unwrap();
    assert_eq!(ours.len(), want.len(), "{ours:#?}");
    for r in &ours {
        assert!(want.contains(&r.destination), "{r:?}");
        assert_eq!(r.device, DEV);
        assert_eq!(r.protocol, PROTO);
        assert_eq!(r.table, 254);
        let expected_src: IpAddr = if r.destination.is_ipv4() {
            src4.into()
        } else {
            src6.into()
        };
        assert_eq!(r.source, Some(expected_src), "{r:?}");
    }

    // Ours and the foreign route to 10.210.0.0/16 coexist (ours first, i.e. active).
    let both = ns.ip(&["-4", "route", "show", "10.210.0.0/16"]);
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2, "{both}");
    assert!(lines[0].contains(&format!("proto {PROTO}")), "{both}");
    assert!(lines[1].contains("proto static"), "{both}");

    // The kernel agrees, and foreign routes are all still there.
    assert_eq!(ours_in_kernel(ns), want);
    let v4_ours = ns.ip(&["-4", "route", "show", "proto", &PROTO.to_string()]);
    assert!(
        v4_ours.contains("10.240.0.0/16 dev sdn-test0 scope link src 10.128.0.1"),
        "{v4_ours}"
    );
    assert!(ip_route_dests(ns, false, &["proto", "static"]).is_superset(foreign_v4));
    assert!(ip_route_dests(ns, false, &["proto", "94"]).contains(&net("10.211.0.0/16")));
    assert!(ip_route_dests(ns, true, &["proto", "static"]).contains(&net("fd00:300::/48")));

    // A desired CIDR taken by a foreign IPv6 route on the same device and metric: the kernel
    // refuses ours (EEXIST); the foreign one stays; everything else is still applied.
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:400::/48",
        "dev",
        DEV,
        "proto",
        "static",
        "metric",
        "1024",
    ]);
    let mut with_conflict = desired.clone();
    with_conflict.push(net("fd00:400::/48"));
    with_conflict.push(net("10.241.0.0/16"));
    let err = routes
        .reconcile(DEV, &with_conflict, Some(src4), Some(src6))
        .await
        .unwrap_err();
    match &err {
        RouteError::Incomplete { changes, failures } => {
            assert_eq!(changes.added, vec![net("10.241.0.0/16")], "{err}");
            assert_eq!(failures.len(), 1, "{err}");
            let msg = failures[0].to_string();
            assert!(
                msg.contains("fd00:400::/48") && msg.contains("EEXIST"),
                "{msg}"
            );
            assert!(msg.contains("not ours"), "{msg}");
        }
        other => panic!("expected Incomplete, got {other}"),
    }
    assert!(ip_route_dests(ns, true, &["proto", "static"]).contains(&net("fd00:400::/48")));
    // Back to the plain desired set: only our 10.241.0.0/16 goes, the foreign route stays.
    let ch = routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap();
    assert_eq!(ch.removed, vec![net("10.241.0.0/16")]);
    assert!(ch.added.is_empty());
    assert!(ip_route_dests(ns, true, &["proto", "static"]).contains(&net("fd00:400::/48")));

    // Someone deletes one of ours: restored.
    ns.ip(&["route", "del", "10.240.0.0/16", "proto", &PROTO.to_string()]);
    let ch = routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap();
    assert_eq!(ch.added, vec![net("10.240.0.0/16")]);
    assert!(ch.removed.is_empty());

    // Device down: refused with a clear error, nothing removed.
    ns.ip(&["link", "set", DEV, "down"]);
    let err = routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::DeviceDown(_)), "{err}");
    ns.ip(&["link", "set", DEV, "up"]);
    // Taking the device down made the kernel itself flush the IPv4 routes via it (ours and
    // the foreign ones); put the foreign ones back and let the reconciler restore ours.
    ns.ip(&[
        "route",
        "add",
        "10.200.0.0/16",
        "dev",
        DEV,
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.210.0.0/16",
        "dev",
        DEV,
        "proto",
        "static",
    ]);
    routes
        .reconcile(DEV, &desired, Some(src4), Some(src6))
        .await
        .unwrap();
    assert_eq!(ours_in_kernel(ns), want);

    // remove_all: all ours gone, foreign untouched.
    let n = routes.remove_all().await.unwrap();
    assert_eq!(n, want.len());
    assert!(routes.list_ours().await.unwrap().is_empty());
    assert!(ours_in_kernel(ns).is_empty());
    assert!(ip_route_dests(ns, false, &["proto", "static"]).is_superset(foreign_v4));
    assert!(ip_route_dests(ns, false, &["proto", "94"]).contains(&net("10.211.0.0/16")));
    assert!(ip_route_dests(ns, true, &["proto", "static"]).contains(&net("fd00:300::/48")));
    assert_eq!(routes.remove_all().await.unwrap(), 0);

    // Desired empty: removes nothing foreign either.
    let ch = routes.reconcile(DEV, &[], None, None).await.unwrap();
    assert!(ch.added.is_empty() && ch.removed.is_empty());
}

async fn link_scenario(routes: &Routes) {
    let h = routes.handle();
    assert!(link::get(h, "nope0").await.unwrap().is_none());
    assert!(link::get(h, "").await.unwrap().is_none());
    assert!(link::get(h, "averyveryverylongname")
        .await
        .unwrap()
        .is_none());

    let l = link::get(h, DEV).await.unwrap().unwrap();
    assert_eq!(l.name, DEV);
    assert_eq!(l.kind.as_deref(), Some("veth"));
    assert!(l.index > 0);

    // A second, shared connection works too.
    let h2 = link::connect().unwrap();
    // A TUN device, like the agent's (created from this thread: in the namespace).
    common::run("ip", &["tuntap", "add", "sdn-link0", "mode", "tun"]);
    link::set_up_with_mtu(&h2, "sdn-link0", 1380).await.unwrap();
    let l = link::get(&h2, "sdn-link0").await.unwrap().unwrap();
    assert_eq!(l.kind.as_deref(), Some("tun"));
    assert!(l.up);
    assert_eq!(l.mtu, 1380);
    link::set_up_with_mtu(&h2, "sdn-link0", 1380).await.unwrap(); // no-op
    let err = link::set_up_with_mtu(&h2, "nope0", 1380).await.unwrap_err();
    assert!(matches!(err, link::LinkError::NotFound(_)), "{err}");

    assert!(link::delete(&h2, "sdn-link0").await.unwrap());
    assert!(!link::delete(&h2, "sdn-link0").await.unwrap());
    assert!(link::get(&h2, "sdn-link0").await.unwrap().is_none());
}

fn sysctl_scenario() {
    // Forwarding off to begin with. Set, not assumed: a new namespace inherits the host's
    // value where net.core.devconf_inherit_init_net says so, and container tooling (buildah,
    // containerd, Docker) turns the host's on.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/forwarding").exists() {
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "0").unwrap();
    }
    assert_eq!(host::read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
    assert!(host::enable_ip_forward(true).unwrap());
    assert_eq!(host::read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/forwarding").exists() {
        assert_eq!(
            host::read_sysctl("net/ipv6/conf/all/forwarding").unwrap(),
            "1"
        );
    }
    assert!(!host::enable_ip_forward(true).unwrap());

    host::set_rp_filter_loose(DEV).unwrap();
    assert_eq!(
        host::read_sysctl(&format!("net/ipv4/conf/{DEV}/rp_filter")).unwrap(),
        "2"
    );
    assert!(host::set_rp_filter_loose("nope0").is_err());
}

fn nft_scenario(ns: &Netns) {
    if !common::require_program("nft") {
        return;
    }
    let table = "sdn_tunnel_sdn_test0";
    // Someone else's table, which we must never touch.
    ns.exec("nft", &["add", "table", "inet", "other"]);
    ns.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "other",
            "c",
            "{ type filter hook forward priority 0; }",
        ],
    );
    ns.exec(
        "nft",
        &["add", "rule", "inet", "other", "c", "counter", "accept"],
    );
    let other_before = ns.exec("nft", &["list", "table", "inet", "other"]);

    assert!(!nft::table_exists(table).unwrap());
    assert_eq!(nft::list_table(table).unwrap(), None);
    assert!(!nft::delete_table(table).unwrap());

    let ruleset = nft::mss_clamp_ruleset(table, DEV, 1420);
    nft::apply(&ruleset).unwrap();
    nft::apply(&ruleset).unwrap(); // idempotent: replaces, no duplicate

    let tables = ns.exec("nft", &["list", "tables"]);
    assert_eq!(
        tables.matches(&format!("table inet {table}\n")).count(),
        1,
        "{tables}"
    );
    let all = ns.exec("nft", &["list", "ruleset"]);
    assert_eq!(
        all.matches("hook forward priority mangle").count(),
        1,
        "{all}"
    );
    assert_eq!(all.matches("maxseg size set 1380").count(), 3, "{all}");
    assert_eq!(all.matches("maxseg size set 1360").count(), 3, "{all}");
    assert!(all.contains(r#"oifname "sdn-test0" tcp flags syn / syn,rst tcp option maxseg size > 1380 tcp option maxseg size set 1380"#), "{all}");
    assert_eq!(
        ns.exec("nft", &["list", "table", "inet", "other"]),
        other_before
    );

    assert!(nft::table_exists(table).unwrap());
    let listed = nft::list_table(table).unwrap().unwrap();
    assert!(listed.contains("hook output priority mangle"), "{listed}");

    // A new MTU replaces the rules atomically.
    nft::apply(&nft::mss_clamp_ruleset(table, DEV, 1280)).unwrap();
    let listed = nft::list_table(table).unwrap().unwrap();
    assert!(
        listed.contains("size set 1240") && !listed.contains("size set 1380"),
        "{listed}"
    );

    // A broken ruleset changes nothing and says why.
    let err = nft::apply(&nft::mss_clamp_ruleset(table, "bad\"name", 1420)).unwrap_err();
    assert!(err.to_string().contains("refuses-an-unsafe"), "{err}");
    assert!(nft::list_table(table)
        .unwrap()
        .unwrap()
        .contains("size set 1240"));

    assert!(nft::delete_table(table).unwrap());
    assert!(!nft::delete_table(table).unwrap());
    assert!(!nft::table_exists(table).unwrap());
    assert_eq!(
        ns.exec("nft", &["list", "table", "inet", "other"]),
        other_before
    );
}
