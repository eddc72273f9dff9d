//! Config loading (`config::Config::parse`: YAML -> serde -> `validate`) on arbitrary text,
//! with `$NODE_NAME` set.
//!
//! Asserts:
//! - never an I/O error (parse touches no file); a parse error has a message;
//! - a validation error lists at least one problem, each with a reason and a field: a YAML path
//!   of the config's own keys (`remotes[1].static.peers[0].podCIDRs[2]`) that exists in the
//!   document, except for fields that may be missing or defaulted by design (`node.name`
//!   missing, `http.listen` / `proxy.device` clashing through another field's value); the
//!   message has one line per problem unless a reason quotes a value with a newline;
//! - an accepted config has a node name, serialises back to YAML that parses (without
//!   `$NODE_NAME`) to the same config, and its static remotes become snapshots without
//!   rejections (the source agrees with the validator); planning them holds every invariant
//!   of common/plan_check.rs, and refuses nothing but endpoints (which the validator does not
//!   check for class).
#![no_main]

#[path = "common/plan_check.rs"]
mod plan_check;

use libfuzzer_sys::fuzz_target;
use sdn_tunnel::config::{Config, ConfigError};
use sdn_tunnel::model::KeyOwners;
use sdn_tunnel::source::static_source::snapshots as static_snapshots;
use serde_norway::Value;

const TOP: &[&str] = &[
    "cluster", "node", "tunnel", "proxy", "remotes", "dns", "http", "limits",
];

/// Fields an error may name although the document does not spell them out.
fn may_be_absent(field: &str) -> bool {
    matches!(field, "node.name" | "http.listen" | "proxy.device")
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        v => v,
    }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match untag(v) {
        Value::Mapping(m) => m
            .iter()
            .find_map(|(k, v)| (untag(k).as_str() == Some(key)).then_some(v))
            // A key written as another YAML scalar (`.NAN`, `0x1f`, `yes`) is a float, int or
            // bool in the document but its text in the config's string-keyed maps.
            .or_else(|| {
                m.keys()
                    .any(|k| !matches!(untag(k), Value::String(_)))
                    .then_some(&Value::Null)
            }),
        _ => None,
    }
}

/// Walks `a.b[2].c` through the document. `...ports.<name>` takes the rest as one key (a
/// service port name may contain dots).
fn resolve<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    let mut rest = path;
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (key, mut tail) = rest.split_at(end);
        cur = get(cur, key)?;
        while let Some(t) = tail.strip_prefix('[') {
            let close = t.find(']')?;
            let i: usize = t[..close].parse().ok()?;
            cur = match untag(cur) {
                Value::Sequence(s) => s.get(i)?,
                _ => return None,
            };
            tail = &t[close + 1..];
        }
        if key == "ports" && tail.starts_with('.') {
            return get(cur, &tail[1..]);
        }
        rest = tail.strip_prefix('.').unwrap_or(tail);
        if !tail.is_empty() && !tail.starts_with('.') {
            return None;
        }
    }
    Some(cur)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Some("node-a")) {
        Err(ConfigError::Io { .. }) => panic!("parse read a file"),
        Err(ConfigError::Parse(msg)) => assert!(!msg.trim().is_empty(), "empty parse error"),
        Err(e @ ConfigError::Invalid(_)) => {
            let ConfigError::Invalid(errs) = &e else {
                unreachable!()
            };
            assert!(!errs.is_empty(), "invalid without a reason");
            let doc: Value =
                serde_norway::from_str(&text).expect("a config that parsed is a YAML document");
            for fe in errs {
                assert!(!fe.reason.trim().is_empty(), "{fe:?}: no reason");
                let top = fe.field.split(['.', '[']).next().unwrap_or("");
                assert!(TOP.contains(&top), "{fe:?}: not a config field");
                // (fuzz/regressions/config_parse/cluster_ips_error_names_clusterIP: an
                // address of `clusterIPs` was once reported on `clusterIP`; fixed.)
                assert!(
                    may_be_absent(&fe.field) || resolve(&doc, &fe.field).is_some(),
                    "{fe:?}: the field is not in the document"
                );
            }
            let shown = e.to_string();
            if !errs
                .iter()
                .any(|fe| fe.reason.contains('\n') || fe.field.contains('\n'))
            {
                assert_eq!(shown.lines().count(), errs.len(), "{shown}");
            }
        }
        Ok(cfg) => {
            assert!(
                !cfg.node_name().trim().is_empty(),
                "accepted without a node name"
            );
            cfg.validate().expect("parse returned an invalid config");
            let yaml = serde_norway::to_string(&cfg).expect("a config serialises");
            match Config::parse(&yaml, None) {
                Ok(back) => assert_eq!(back, cfg, "YAML round trip changed the config:\n{yaml}"),
                Err(e) => panic!("own YAML refused: {e}\n{yaml}"),
            }
            let snaps = static_snapshots(&cfg);
            for (remote, s) in &snaps {
                assert!(
                    s.rejected.is_empty(),
                    "validated static remote {remote} has rejected peers: {:?}",
                    s.rejected
                );
            }
            let d = plan_check::check_plan(&cfg, &snaps, &KeyOwners::new());
            for r in &d.rejected {
                assert!(
                    r.reason.starts_with("endpoint "),
                    "a valid config's static {} refused: {}",
                    r.object,
                    r.reason
                );
            }
        }
    }
});
