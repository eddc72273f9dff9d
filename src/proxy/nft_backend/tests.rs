use super::*;
use crate::model::Protocol;
use crate::proxy::model::{Backend, BackendState};
use std::net::SocketAddr;

fn be(addr: &str, state: BackendState) -> Backend {
    Backend {
        addr: addr.parse().unwrap(),
        node: Some("b1".into()),
        state,
    }
}

fn vs(
    name: &str,
    vip: &str,
    protocol: Protocol,
    affinity: Option<u32>,
    backends: Vec<Backend>,
) -> VirtualService {
    VirtualService {
        remote: "west".into(),
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        vip: vip.parse().unwrap(),
        protocol,
        affinity_timeout: affinity,
        backends,
    }
}

fn active(addrs: &[&str]) -> Vec<Backend> {
    addrs.iter().map(|a| be(a, BackendState::Active)).collect()
}

/// The text of chain `name` (its lines between `chain name {` and the closing tab-brace).
fn chain<'a>(script: &'a str, name: &str) -> Option<&'a str> {
    let start = script.find(&format!("\tchain {name} {{\n"))?;
    let rest = &script[start..];
    let end = rest.find("\n\t}\n")?;
    Some(&rest[..end + 4])
}

/// The service chain for service id `id` (`<vip>-<proto>-<port>`): its full name and text.
fn svc<'a>(script: &'a str, id: &str) -> Option<(&'a str, &'a str)> {
    let prefix = format!("\tchain svc-{id}-");
    let start = script.find(&prefix)?;
    let rest = &script[start + 7..];
    let name = &rest[..rest.find(' ').unwrap()];
    // Hash: 16 hex digits.
    let hash = name.rsplit('-').next().unwrap();
    assert_eq!(hash.len(), 16, "{name}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    Some((name, chain(script, name).unwrap()))
}

fn map<'a>(script: &'a str, name: &str) -> &'a str {
    let start = script
        .find(&format!("\tmap {name} {{\n"))
        .unwrap_or_else(|| panic!("no map {name}"));
    let rest = &script[start..];
    let end = rest.find("\n\t}\n").unwrap();
    &rest[..end + 4]
}

/// The example in the module docs / report: one round-robin TCP service, one UDP service with
/// ClientIP affinity, one without Active backends.
fn example() -> Vec<VirtualService> {
    vec![
        vs(
            "web",
            "172.31.0.10:80",
            Protocol::Tcp,
            None,
            vec![
                be("10.132.1.5:8080", BackendState::Active),
                be("10.132.2.5:8080", BackendState::Draining),
                be("10.132.3.5:8080", BackendState::Active),
            ],
        ),
        vs(
            "dns",
            "172.31.0.53:53",
            Protocol::Udp,
            Some(10800),
            active(&["10.132.1.9:5353", "10.132.2.9:5353"]),
        ),
        vs(
            "gone",
            "[fd00:31::20]:443",
            Protocol::Tcp,
            None,
            vec![be("[fd00:132::7]:8443", BackendState::PeerDown)],
        ),
    ]
}

const EXAMPLE: &str = "\
table inet sdn_proxy {}
delete table inet sdn_proxy
table inet sdn_proxy {
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain nat-output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}
\tchain filter-input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state new jump no-endpoints
\t}
\tchain filter-forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state new jump no-endpoints
\t}
\tchain filter-output {
\t\ttype filter hook output priority filter; policy accept;
\t\tct state new jump no-endpoints
\t}
\tchain services {
\t\tip daddr . meta l4proto . th dport vmap @service-ips4
\t\tip6 daddr . meta l4proto . th dport vmap @service-ips6
\t}
\tchain no-endpoints {
\t\tip daddr . meta l4proto . th dport vmap @no-endpoints4
\t\tip6 daddr . meta l4proto . th dport vmap @no-endpoints6
\t}
\tchain reject-new {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmpx port-unreachable
\t}
\tchain svc-172.31.0.10-tcp-80-bffb44d3c8b86e24 {
\t\tmeta l4proto tcp numgen inc mod 2 0 dnat ip to 10.132.1.5:8080 comment \"west/default/web:http\"
\t\tmeta l4proto tcp dnat ip to 10.132.3.5:8080
\t}
\tchain svc-172.31.0.53-udp-53-69bc28aabdd3ceed {
\t\tip saddr @aff-172.31.0.53-udp-53-10.132.1.9-5353 goto ep-172.31.0.53-udp-53-10.132.1.9-5353
\t\tip saddr @aff-172.31.0.53-udp-53-10.132.2.9-5353 goto ep-172.31.0.53-udp-53-10.132.2.9-5353
\t\tnumgen inc mod 2 0 goto ep-172.31.0.53-udp-53-10.132.1.9-5353 comment \"west/default/dns:http\"
\t\tgoto ep-172.31.0.53-udp-53-10.132.2.9-5353
\t}
\tset aff-172.31.0.53-udp-53-10.132.1.9-5353 {
\t\ttype ipv4_addr; flags dynamic,timeout; timeout 10800s;
\t}
\tchain ep-172.31.0.53-udp-53-10.132.1.9-5353 {
\t\tupdate @aff-172.31.0.53-udp-53-10.132.1.9-5353 { ip saddr } meta l4proto udp dnat ip to 10.132.1.9:5353 comment \"west/default/dns:http\"
\t}
\tset aff-172.31.0.53-udp-53-10.132.2.9-5353 {
\t\ttype ipv4_addr; flags dynamic,timeout; timeout 10800s;
\t}
\tchain ep-172.31.0.53-udp-53-10.132.2.9-5353 {
\t\tupdate @aff-172.31.0.53-udp-53-10.132.2.9-5353 { ip saddr } meta l4proto udp dnat ip to 10.132.2.9:5353 comment \"west/default/dns:http\"
\t}
\tmap service-ips4 {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t\telements = {
\t\t\t172.31.0.10 . tcp . 80 comment \"west/default/web:http\" : goto svc-172.31.0.10-tcp-80-bffb44d3c8b86e24,
\t\t\t172.31.0.53 . udp . 53 comment \"west/default/dns:http\" : goto svc-172.31.0.53-udp-53-69bc28aabdd3ceed,
\t\t}
\t}
\tmap service-ips6 {
\t\ttype ipv6_addr . inet_proto . inet_service : verdict
\t}
\tmap no-endpoints4 {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t}
\tmap no-endpoints6 {
\t\ttype ipv6_addr . inet_proto . inet_service : verdict
\t\telements = {
\t\t\tfd00:31::20 . tcp . 443 comment \"west/default/gone:http\" : goto reject-new,
\t\t}
\t}
}
";

#[test]
fn example_exact_text() {
    let got = render("sdn_proxy", &example());
    if got != EXAMPLE {
        println!("{got}");
    }
    assert_eq!(got, EXAMPLE);
}

#[test]
fn replaces_only_our_table_in_one_transaction() {
    let r = render("sdn_proxy_x", &example());
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines[0], "table inet sdn_proxy_x {}");
    assert_eq!(lines[1], "delete table inet sdn_proxy_x");
    assert_eq!(lines[2], "table inet sdn_proxy_x {");
    for l in &lines {
        let t = l.trim_start();
        if t.starts_with("table") || t.starts_with("delete") || t.starts_with("flush") {
            assert!(l.contains("inet sdn_proxy_x"), "{l}");
        }
    }
    assert!(!r.contains("ruleset"));
    // No marks, no masquerade, no SNAT: only DNAT and reject.
    for word in ["mark", "masquerade", "snat", " drop"] {
        assert!(!r.contains(word), "{word}");
    }
    assert_eq!(
        r.matches("type nat hook prerouting priority dstnat")
            .count(),
        1
    );
    assert_eq!(r.matches("type nat hook output priority -100").count(), 1);
    for hook in ["input", "forward", "output"] {
        assert_eq!(
            r.matches(&format!("type filter hook {hook} priority filter"))
                .count(),
            1
        );
    }
}

#[test]
fn round_robin_over_active_backends_only_as_a_cascade() {
    let s = vs(
        "web",
        "172.31.0.10:80",
        Protocol::Tcp,
        None,
        vec![
            be("10.132.1.5:8080", BackendState::Active),
            be("10.132.1.6:8080", BackendState::Draining),
            be("10.132.1.7:8081", BackendState::Active),
            be("10.132.1.8:8080", BackendState::PeerDown),
            be("10.132.1.9:8080", BackendState::Active),
        ],
    );
    let r = render("t", &[s]);
    let (name, c) = svc(&r, "172.31.0.10-tcp-80").unwrap();
    let rules: Vec<&str> = c.lines().skip(1).filter(|l| *l != "\t}").collect();
    let tail = " comment \"west/default/web:http\"";
    assert_eq!(
        rules,
        [
            format!("\t\tmeta l4proto tcp numgen inc mod 3 0 dnat ip to 10.132.1.5:8080{tail}"),
            "\t\tmeta l4proto tcp numgen inc mod 2 0 dnat ip to 10.132.1.7:8081".to_string(),
            "\t\tmeta l4proto tcp dnat ip to 10.132.1.9:8080".to_string(),
        ]
    );
    for absent in ["10.132.1.6", "10.132.1.8"] {
        assert!(!r.contains(absent), "{absent}");
    }
    assert!(map(&r, SERVICE_IPS4).contains(&format!(
        "172.31.0.10 . tcp . 80 comment \"west/default/web:http\" : goto {name},"
    )));
    assert!(!map(&r, NO_ENDPOINTS4).contains("elements"));
    // No anonymous sets (they make big loads quadratic in the kernel).
    assert!(!r.contains("map {") && !r.contains("vmap {"));
}

/// Simulates the cascade: rule k of n matches when its own counter (advanced only by
/// connections reaching it) is 0 mod (n-k).
#[test]
fn the_cascade_is_exact_round_robin() {
    for n in 1..=12usize {
        let mut counters = vec![0usize; n];
        let mut picks = Vec::new();
        for _ in 0..n * 5 {
            let mut chosen = n - 1;
            for (k, counter) in counters.iter_mut().enumerate().take(n - 1) {
                let hit = *counter % (n - k) == 0;
                *counter += 1;
                if hit {
                    chosen = k;
                    break;
                }
            }
            picks.push(chosen);
        }
        for block in picks.chunks(n) {
            let mut sorted = block.to_vec();
            sorted.sort();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n={n}: {picks:?}");
        }
    }
}

#[test]
fn single_backend_is_a_plain_dnat() {
    let r = render(
        "t",
        &[vs(
            "web",
            "172.31.0.10:80",
            Protocol::Sctp,
            None,
            active(&["10.132.1.5:8080"]),
        )],
    );
    let (_, c) = svc(&r, "172.31.0.10-sctp-80").unwrap();
    assert!(c.contains("\t\tmeta l4proto sctp dnat ip to 10.132.1.5:8080 comment"));
    assert!(!c.contains("numgen"));
}

#[test]
fn services_without_active_backends_are_rejected_not_dropped() {
    let services = [
        vs("none", "172.31.0.11:80", Protocol::Tcp, None, vec![]),
        vs(
            "draining",
            "172.31.0.12:53",
            Protocol::Udp,
            Some(60),
            vec![
                be("10.132.1.5:53", BackendState::Draining),
                be("10.132.1.6:53", BackendState::PeerDown),
            ],
        ),
    ];
    let r = render("t", &services);
    let m = map(&r, NO_ENDPOINTS4);
    assert!(
        m.contains("172.31.0.11 . tcp . 80 comment \"west/default/none:http\" : goto reject-new,")
    );
    assert!(m.contains(
        "172.31.0.12 . udp . 53 comment \"west/default/draining:http\" : goto reject-new,"
    ));
    assert!(!map(&r, SERVICE_IPS4).contains("elements"));
    assert!(!r.contains("chain svc-"));
    assert!(
        !r.contains("set aff-"),
        "no affinity sets without Active backends"
    );
    let reject = chain(&r, "reject-new").unwrap();
    assert!(reject.contains("meta l4proto tcp reject with tcp reset\n"));
    assert!(reject.contains("reject with icmpx port-unreachable\n"));
    // Looked up from filter chains on all three hooks, for new connections only.
    assert_eq!(r.matches("ct state new jump no-endpoints\n").count(), 3);
}

#[test]
fn client_ip_affinity_uses_per_backend_sets() {
    let s = vs(
        "web",
        "172.31.0.10:80",
        Protocol::Tcp,
        Some(300),
        vec![
            be("10.132.1.5:8080", BackendState::Active),
            be("10.132.1.6:8080", BackendState::Draining),
            be("10.132.1.7:8080", BackendState::Active),
        ],
    );
    let r = render("t", &[s]);
    let (_, c) = svc(&r, "172.31.0.10-tcp-80").unwrap();
    let lines: Vec<&str> = c.lines().collect();
    let id = "172.31.0.10-tcp-80";
    assert_eq!(
        lines[1],
        format!("\t\tip saddr @aff-{id}-10.132.1.5-8080 goto ep-{id}-10.132.1.5-8080")
    );
    assert_eq!(
        lines[2],
        format!("\t\tip saddr @aff-{id}-10.132.1.7-8080 goto ep-{id}-10.132.1.7-8080")
    );
    assert!(lines[3].starts_with(&format!(
        "\t\tnumgen inc mod 2 0 goto ep-{id}-10.132.1.5-8080 comment"
    )));
    assert_eq!(lines[4], format!("\t\tgoto ep-{id}-10.132.1.7-8080"));
    assert!(r.contains(&format!(
        "\tset aff-{id}-10.132.1.5-8080 {{\n\
         \t\ttype ipv4_addr; flags dynamic,timeout; timeout 300s;\n\t}}\n"
    )));
    let ep = chain(&r, &format!("ep-{id}-10.132.1.7-8080")).unwrap();
    assert!(ep.contains(&format!(
        "update @aff-{id}-10.132.1.7-8080 {{ ip saddr }} \
         meta l4proto tcp dnat ip to 10.132.1.7:8080"
    )));
    // The draining backend has neither set nor chain.
    assert!(!r.contains("10.132.1.6"));
}

#[test]
fn affinity_with_one_backend_still_remembers() {
    let r = render(
        "t",
        &[vs(
            "web",
            "[fd00:31::10]:80",
            Protocol::Tcp,
            Some(0),
            active(&["[fd00:132::5]:80"]),
        )],
    );
    let id = "fd00.31.0.0.0.0.0.10-tcp-80";
    let ep = format!("ep-{id}-fd00.132.0.0.0.0.0.5-80");
    let (_, c) = svc(&r, id).unwrap();
    assert!(c.contains(&format!(
        "\t\tip6 saddr @aff-{id}-fd00.132.0.0.0.0.0.5-80 goto {ep}\n"
    )));
    assert!(c.contains(&format!("\t\tgoto {ep} comment")));
    // A zero timeout would mean "no timeout" to nft: use the smallest real one.
    assert!(r.contains("type ipv6_addr; flags dynamic,timeout; timeout 1s;"));
    assert!(chain(&r, &ep).unwrap().contains(&format!(
        "update @aff-{id}-fd00.132.0.0.0.0.0.5-80 {{ ip6 saddr }} \
         meta l4proto tcp dnat ip6 to [fd00:132::5]:80"
    )));
}

#[test]
fn ipv6_services() {
    let services = [
        vs(
            "web",
            "[fd00:31::10]:80",
            Protocol::Tcp,
            None,
            active(&["[fd00:132::5]:8080", "[fd00:132::6]:8080"]),
        ),
        vs(
            "one",
            "[fd00:31::11]:53",
            Protocol::Udp,
            None,
            active(&["[fd00:132::5]:53"]),
        ),
    ];
    let r = render("t", &services);
    let (_, c) = svc(&r, "fd00.31.0.0.0.0.0.10-tcp-80").unwrap();
    assert!(c.contains("meta l4proto tcp numgen inc mod 2 0 dnat ip6 to [fd00:132::5]:8080"));
    assert!(c.contains("meta l4proto tcp dnat ip6 to [fd00:132::6]:8080\n"));
    let (name, c) = svc(&r, "fd00.31.0.0.0.0.0.11-udp-53").unwrap();
    assert!(c.contains("meta l4proto udp dnat ip6 to [fd00:132::5]:53 comment"));
    let m = map(&r, SERVICE_IPS6);
    assert!(m.contains("fd00:31::10 . tcp . 80 comment"));
    assert!(m.contains(&format!(": goto {name},")));
    assert!(!map(&r, SERVICE_IPS4).contains("elements"));
}

#[test]
fn mixed_families_duplicates_and_odd_labels_cannot_break_the_transaction() {
    let mut odd = vs(
        "web",
        "172.31.0.10:80",
        Protocol::Tcp,
        None,
        active(&["10.132.1.5:80", "[fd00:132::5]:80", "10.132.1.5:80"]),
    );
    odd.namespace = "a\"; flush ruleset; \"".into();
    odd.name = "x".repeat(300);
    let dup = vs(
        "dup",
        "172.31.0.10:80",
        Protocol::Tcp,
        None,
        active(&["10.132.9.9:80"]),
    );
    let udp = vs(
        "udp",
        "172.31.0.10:80",
        Protocol::Udp,
        None,
        active(&["10.132.9.9:80"]),
    );
    let r = render("t", &[odd, dup, udp]);
    // One backend left (family and duplicate filtered) -> plain dnat.
    let (_, c) = svc(&r, "172.31.0.10-tcp-80").unwrap();
    assert!(c.contains("\t\tmeta l4proto tcp dnat ip to 10.132.1.5:80 comment"));
    assert_eq!(c.lines().count(), 3);
    assert!(!r.contains("fd00"));
    // The second service with the same VIP/port/protocol is ignored; another protocol is not.
    assert!(!r.contains("west/default/dup"));
    assert!(svc(&r, "172.31.0.10-udp-80").is_some());
    assert_eq!(map(&r, SERVICE_IPS4).matches(" : goto ").count(), 2);
    // Comments: no quotes, bounded length.
    assert!(!r.contains("; flush ruleset"));
    assert!(r.contains("comment \"west/a__ flush ruleset_ _/xxx"));
    for l in r.lines().filter(|l| l.contains("comment \"")) {
        let c = l.split("comment \"").nth(1).unwrap();
        let c = &c[..c.find('"').unwrap()];
        assert!(c.len() <= 120, "{c}");
        assert_eq!(l.matches('"').count(), 2, "{l}");
    }
}

#[test]
fn many_services_dispatch_through_one_vmap() {
    let services: Vec<VirtualService> = (0..1000u32)
        .map(|i| {
            let vip = format!("172.31.{}.{}:80", i / 250, i % 250 + 1);
            let backends: Vec<String> = (0..10)
                .map(|b| format!("10.132.{b}.{}:8080", i % 250))
                .collect();
            let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
            vs(&format!("s{i}"), &vip, Protocol::Tcp, None, active(&refs))
        })
        .collect();
    let r = render("t", &services);
    // A constant number of rules outside the per-service chains.
    assert_eq!(r.matches("vmap @service-ips4").count(), 1);
    assert_eq!(r.matches("vmap @service-ips6").count(), 1);
    assert_eq!(r.matches("jump services").count(), 2);
    assert_eq!(map(&r, SERVICE_IPS4).matches(" : goto svc-").count(), 1000);
    assert_eq!(r.matches("\tchain svc-").count(), 1000);
    assert_eq!(r.matches("numgen inc mod 10 0 dnat").count(), 1000);
    assert_eq!(r.matches("numgen inc mod 2 0 dnat").count(), 1000);
}

#[test]
fn invalid_table_names_make_nft_refuse() {
    for t in ["", "a b", "x;flush ruleset", "1abc", "a-b"] {
        assert!(
            render(t, &example()).starts_with(render::REFUSE_LINE),
            "{t:?}"
        );
        assert!(render_update(t, &example(), &Existing::default()).starts_with(render::REFUSE_LINE));
        assert!(matches!(apply(t, &[]), Err(NftError::InvalidTableName(_))));
        assert!(matches!(delete(t), Err(NftError::InvalidTableName(_))));
    }
    assert!(!render("sdn_proxy", &[]).starts_with(render::REFUSE_LINE));
}

#[test]
fn chain_names_follow_the_content() {
    let base = example();
    let name = |services: &[VirtualService]| {
        svc(&render("t", services), "172.31.0.10-tcp-80")
            .unwrap()
            .0
            .to_string()
    };
    let n0 = name(&base);
    assert_eq!(n0, name(&example()), "stable");
    // Another table, another service elsewhere: same chain.
    assert!(render("other", &base[..1]).contains(&format!("\tchain {n0} {{")));
    // Anything the chain says changes its name.
    let mut changed = base.clone();
    changed[0].backends[1].state = BackendState::Active;
    assert_ne!(name(&changed), n0);
    let mut changed = base.clone();
    changed[0].backends[0].addr.set_port(8081);
    assert_ne!(name(&changed), n0);
    let mut changed = base.clone();
    changed[0].affinity_timeout = Some(10);
    assert_ne!(name(&changed), n0);
    let mut changed = base.clone();
    changed[0].name = "web2".into();
    assert_ne!(name(&changed), n0);
    let mut changed = base.clone();
    changed[0].backends.swap(0, 2);
    assert_ne!(name(&changed), n0, "order is round robin order");
    // A backend that is not Active anyway changes nothing.
    let mut changed = base.clone();
    changed[0].backends[1].state = BackendState::PeerDown;
    assert_eq!(name(&changed), n0);
}

#[test]
fn map_keys_are_recovered_from_service_ids() {
    for (vip, proto) in [
        ("172.31.0.10:80", "tcp"),
        ("[fd00:31::10]:443", "udp"),
        ("[::ffff:1.2.3.4]:1", "sctp"),
        ("[::]:65535", "tcp"),
    ] {
        let p = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => Protocol::Sctp,
        };
        let r = render("t", &[vs("x", vip, p, None, vec![])]);
        let vip: SocketAddr = vip.parse().unwrap();
        let key = format!("{} . {proto} . {}", vip.ip(), vip.port());
        assert!(r.contains(&format!("\t\t\t{key} comment")), "{r}");
        let id = format!(
            "{}-{proto}-{}",
            super::render::name_ip_for_test(vip.ip()),
            vip.port()
        );
        assert_eq!(render::test_map_key_of_id(&id), Some((vip.is_ipv6(), key)));
    }
    for bad in [
        "1.2.3-tcp",
        "1.2.3.4-icmp-1",
        "1.2.3.4-tcp-99999",
        "1.2.3.4-tcp-1-2",
        "zz-tcp-1",
    ] {
        assert_eq!(render::test_map_key_of_id(bad), None, "{bad}");
    }
}

fn existing_of(script: &str) -> Existing {
    // What the kernel would hold after loading `script` (a full render).
    let mut e = Existing::default();
    for l in script.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("chain"), Some(n)) => e.chains.insert(n.to_string()),
            (Some("set"), Some(n)) => e.sets.insert(n.to_string()),
            (Some("map"), Some(n)) => e.maps.insert(n.to_string()),
            _ => false,
        };
    }
    e
}

#[test]
fn update_without_changes_only_refreshes_the_fixed_part() {
    let services = example();
    let e = existing_of(&render("t", &services));
    let u = render_update("t", &services, &e);
    assert!(!u.contains("delete"), "{u}");
    assert!(!u.contains("chain svc-"), "{u}");
    assert!(!u.contains("set aff-"), "{u}");
    assert!(!u.contains("service-ips4 {\n"), "{u}");
    assert_eq!(u.matches("flush chain inet t ").count(), 8);
    // The no-endpoints maps are rewritten whole.
    assert!(u.contains("flush map inet t no-endpoints6\n"));
    assert!(u.contains("add element inet t no-endpoints6 {\n\t\t\tfd00:31::20 . tcp . 443"));
}

#[test]
fn update_replaces_changed_services_and_keeps_affinity_sets() {
    let id = "172.31.0.53-udp-53";
    let mut services = example();
    let old = render("t", &services);
    let mut e = existing_of(&old);
    e.chains.insert("stray".into());
    e.maps.insert("old-map".into());
    e.sets.insert("aff-old".into());
    let old_web = svc(&old, "172.31.0.10-tcp-80").unwrap().0.to_string();
    let old_dns = svc(&old, id).unwrap().0.to_string();

    // dns: one backend goes, one comes; web: gone (no Active backend); new service.
    services[1].backends[0].state = BackendState::Draining;
    services[1]
        .backends
        .push(be("10.132.3.9:5353", BackendState::Active));
    services[0]
        .backends
        .iter_mut()
        .for_each(|b| b.state = BackendState::Draining);
    services.push(vs(
        "new",
        "[fd00:31::30]:80",
        Protocol::Tcp,
        None,
        active(&["[fd00:132::9]:80"]),
    ));
    let new = render("t", &services);
    let new_dns = svc(&new, id).unwrap().0.to_string();
    let new_v6 = svc(&new, "fd00.31.0.0.0.0.0.30-tcp-80")
        .unwrap()
        .0
        .to_string();

    let u = render_update("t", &services, &e);
    println!("{u}");
    let lines: Vec<&str> = u.lines().collect();
    let pos = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("no {l:?} in\n{u}"))
    };
    let del_elems = pos(
        "delete element inet t service-ips4 { 172.31.0.10 . tcp . 80, 172.31.0.53 . udp . 53 }",
    );
    let del_web = pos(&format!("delete chain inet t {old_web}"));
    let del_dns = pos(&format!("delete chain inet t {old_dns}"));
    let del_ep = pos(&format!("delete chain inet t ep-{id}-10.132.1.9-5353"));
    let flush_ep = pos(&format!("flush chain inet t ep-{id}-10.132.2.9-5353"));
    let del_set = pos(&format!("delete set inet t aff-{id}-10.132.1.9-5353"));
    pos("delete chain inet t stray");
    pos("delete set inet t aff-old");
    pos("delete map inet t old-map");
    let block = pos("table inet t {");
    assert!(del_elems < del_web && del_web < del_ep && del_dns < del_ep && del_ep < block);
    assert!(del_dns < del_set && flush_ep < block);
    // Kept: the set of the backend that stays (declared again, which keeps its elements).
    assert!(!u.contains(&format!("delete set inet t aff-{id}-10.132.2.9-5353")));
    let body = &u[u.find("table inet t {\n").unwrap()..];
    for name in [&new_dns, &new_v6] {
        assert!(body.contains(&format!("\tchain {name} {{\n")), "{name}");
    }
    for obj in [
        format!("\tset aff-{id}-10.132.2.9-5353 {{"),
        format!("\tset aff-{id}-10.132.3.9-5353 {{"),
        format!("\tchain ep-{id}-10.132.2.9-5353 {{"),
        format!("\tchain ep-{id}-10.132.3.9-5353 {{"),
    ] {
        assert!(body.contains(&obj), "{obj}");
    }
    assert!(u.contains(&format!("add element inet t service-ips4 {{\n\t\t\t172.31.0.53 . udp . 53 comment \"west/default/dns:http\" : goto {new_dns},\n}}\n")));
    assert!(u.contains(&format!("add element inet t service-ips6 {{\n\t\t\tfd00:31::30 . tcp . 80 comment \"west/default/new:http\" : goto {new_v6},\n}}\n")));
    assert!(u.contains("add element inet t no-endpoints4 {\n\t\t\t172.31.0.10 . tcp . 80 comment"));
    // Fixed chains refilled.
    assert_eq!(body.matches("jump services").count(), 2);
}

#[test]
fn update_of_a_table_without_our_skeleton_is_a_full_replacement() {
    let services = example();
    let mut e = existing_of(&render("t", &services));
    e.chains.remove("reject-new");
    assert_eq!(render_update("t", &services, &e), render("t", &services));
    let mut e = existing_of(&render("t", &services));
    e.maps.remove(NO_ENDPOINTS4);
    assert_eq!(render_update("t", &services, &e), render("t", &services));
    assert_eq!(
        render_update("t", &services, &Existing::default()),
        render("t", &services)
    );
}

#[test]
fn parses_nft_listings() {
    let text = "\
table inet other {
\tchain svc-x {
\t}
}
table inet sdn_proxy {
\tchain svc-172.31.0.10-tcp-80 {
\t\tcomment \"x\"
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
}
table ip sdn_proxy {
\tchain not-ours {
\t}
}
table inet sdn_proxy {
\tset aff-a {
\t\ttype ipv4_addr
\t\tflags dynamic,timeout
\t}
}
table inet sdn_proxy {
\tmap service-ips4 {
\t\ttype ipv4_addr . inet_proto . inet_service : verdict
\t}
}
";
    let e = parse_listing("sdn_proxy", text).unwrap();
    assert_eq!(
        e.chains.iter().collect::<Vec<_>>(),
        ["nat-prerouting", "svc-172.31.0.10-tcp-80"]
    );
    assert_eq!(e.sets.iter().collect::<Vec<_>>(), ["aff-a"]);
    assert_eq!(e.maps.iter().collect::<Vec<_>>(), ["service-ips4"]);
    assert!(parse_listing("missing", text).is_none());
    assert!(parse_listing("sdn_proxy", "").is_none());
}

// ---- With root and the nft binary: let the real nft parse and check our output. ----

/// Whether the real nft can be asked (`nft -c` needs root to read the ruleset). Otherwise
/// skips, or fails with SDN_TUNNEL_REQUIRE_PRIVILEGED=1 (the integration tests' policy).
fn nft_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && nft {
        return true;
    }
    let why = if root { "the nft binary" } else { "root" };
    if std::env::var("SDN_TUNNEL_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("needs {why}, and SDN_TUNNEL_REQUIRE_PRIVILEGED=1 makes that a failure");
    }
    eprintln!("SKIPPED: needs {why}");
    false
}

/// `n` services over 172.16.0.0/12 VIPs: mostly TCP round robin over `backends`, every 7th
/// with affinity, every 11th UDP, every 13th IPv6, every 17th without Active backends.
pub(super) fn generated(n: u32, backends: u32) -> Vec<VirtualService> {
    (0..n)
        .map(|i| {
            let v6 = i % 13 == 0;
            let vip: SocketAddr = if v6 {
                format!("[fd00:31::{:x}]:80", i + 1).parse().unwrap()
            } else {
                format!("172.{}.{}.{}:80", 16 + i / 65536, (i / 256) % 256, i % 256)
                    .parse()
                    .unwrap()
            };
            let state = if i % 17 == 0 {
                BackendState::Draining
            } else {
                BackendState::Active
            };
            let backends = (0..backends)
                .map(|b| Backend {
                    addr: if v6 {
                        format!("[fd00:132::{:x}:{b:x}]:8080", i + 1)
                            .parse()
                            .unwrap()
                    } else {
                        format!("10.{}.{}.{}:8080", 128 + b, (i / 256) % 256, i % 256)
                            .parse()
                            .unwrap()
                    },
                    node: None,
                    state,
                })
                .collect();
            VirtualService {
                remote: "bench".into(),
                namespace: format!("ns{}", i % 50),
                name: format!("svc{i}"),
                port_name: String::new(),
                vip,
                protocol: if i % 11 == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                affinity_timeout: (i % 7 == 0).then_some(10800),
                backends,
            }
        })
        .collect()
}

#[test]
fn real_nft_accepts_the_example() {
    if !nft_available() {
        return;
    }
    check("sdn_tunnel_nftcheck_example", &example()).unwrap();
    check("sdn_tunnel_nftcheck_empty", &[]).unwrap();
}

#[test]
fn real_nft_accepts_2000_services_x_10_backends() {
    if !nft_available() {
        return;
    }
    let services = generated(2000, 10);
    let t = std::time::Instant::now();
    check("sdn_tunnel_nftcheck_big", &services).unwrap();
    eprintln!("nft -c of 2000 services x 10 backends: {:?}", t.elapsed());
}

#[test]
fn real_nft_rejects_an_invalid_table_name_before_running() {
    // No root needed: refused before nft runs.
    assert!(matches!(
        check("bad name", &example()),
        Err(NftError::InvalidTableName(_))
    ));
}
