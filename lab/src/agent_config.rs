//! The labs' agent configs as data, not string templates: built as JSON values (the agent's
//! config is YAML, and JSON is YAML) with one builder for every lab and test, so a field is
//! spelled once and a test adds a remote or a section without knowing the file's layout.

use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    comment: Option<String>,
    doc: Map<String, Value>,
    remotes: Vec<Value>,
}

impl AgentConfig {
    /// `cluster`, `node` and `tunnel` sections; no remotes yet.
    pub fn new(cluster: Value, node: Value, tunnel: Value) -> AgentConfig {
        let mut doc = Map::new();
        doc.insert("cluster".into(), cluster);
        doc.insert("node".into(), node);
        doc.insert("tunnel".into(), tunnel);
        AgentConfig {
            comment: None,
            doc,
            remotes: Vec::new(),
        }
    }

    /// A first line `# <comment>`.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Sets (replaces) a top-level section, e.g. `proxy`.
    pub fn set(mut self, section: &str, value: Value) -> Self {
        self.doc.insert(section.into(), value);
        self
    }

    /// Sets one field of a section (creating the section), e.g. `tunnel.offloads`.
    pub fn set_field(mut self, section: &str, key: &str, value: Value) -> Self {
        let entry = self
            .doc
            .entry(section.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry[key] = value;
        self
    }

    /// Sets every top-level section of `sections` (an object; `null` sets nothing).
    pub fn set_all(mut self, sections: Value) -> Self {
        if let Value::Object(m) = sections {
            self.doc.extend(m);
        }
        self
    }

    pub fn add_remote(mut self, remote: Value) -> Self {
        self.remotes.push(remote);
        self
    }

    /// The config file's text.
    pub fn render(&self) -> String {
        let mut doc = self.doc.clone();
        doc.insert("remotes".into(), Value::Array(self.remotes.clone()));
        let body = serde_json::to_string_pretty(&Value::Object(doc)).expect("JSON values render");
        match &self.comment {
            Some(c) => format!("# {c}\n{body}\n"),
            None => format!("{body}\n"),
        }
    }
}

/// A remote read from its API.
pub fn kube_remote(name: &str, pod_cidr: &str, service_cidr: &str, kubeconfig: &str) -> Value {
    json!({
        "name": name,
        "podCIDRs": [pod_cidr],
        "serviceCIDRs": [service_cidr],
        "kubeconfig": kubeconfig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sections_and_remotes_as_yaml_compatible_json() {
        let text = AgentConfig::new(
            json!({"name": "east", "podCIDRs": ["10.128.0.0/14"]}),
            json!({"name": "e1"}),
            json!({"device": "sdn0"}),
        )
        .with_comment("lab x")
        .set("proxy", json!({"backend": "nftables"}))
        .set_all(json!({"http": {"readyTimeoutSeconds": 10}}))
        .set_all(Value::Null)
        .set_field("tunnel", "offloads", json!(false))
        .add_remote(kube_remote("west", "10.132.0.0/14", "172.31.0.0/16", "/k"))
        .render();
        assert!(text.starts_with("# lab x\n{"), "{text}");
        let v: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
        assert_eq!(v["proxy"]["backend"], "nftables");
        assert_eq!(v["http"]["readyTimeoutSeconds"], 10);
        assert_eq!(v["remotes"][0]["kubeconfig"], "/k");
        assert_eq!(v["cluster"]["podCIDRs"][0], "10.128.0.0/14");
        assert_eq!(v["tunnel"], json!({"device": "sdn0", "offloads": false}));
    }
}
