//! Helpers shared by the integration tests: a kube-rs client built from the kubeconfig the
//! fake server writes, a mirror of a kube-runtime watcher, and polling.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fakekube::FakeApi;
use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A client configured exactly as the agent would be: from a kubeconfig file.
pub async fn client(api: &FakeApi) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, "fake").unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let opts = KubeConfigOptions {
        context: Some("fake".into()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &opts).await.unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        api.url()
    );
    Client::try_from(config).unwrap()
}

/// Polls `cond` every 20 ms until it holds, or panics after `timeout` with `what`.
pub async fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The state a kube-runtime watcher (default config, default backoff) builds, and the log of
/// events it produced ("Init", "InitApply(x)", "InitDone", "Apply(x)", "Delete(x)", "Error").
pub struct Mirror {
    /// "ns/name" (or "name") -> resourceVersion
    pub state: Arc<Mutex<BTreeMap<String, String>>>,
    pub events: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key<K: ResourceExt>(o: &K) -> String {
    match o.namespace() {
        Some(ns) => format!("{ns}/{}", o.name_any()),
        None => o.name_any(),
    }
}

impl Mirror {
    pub fn start<K>(api: Api<K>, config: watcher::Config) -> Mirror
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let state = Arc::new(Mutex::new(BTreeMap::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (st, ev) = (state.clone(), events.clone());
        let task = tokio::spawn(async move {
            let mut buffer = BTreeMap::new();
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(e) = stream.next().await {
                let rv = |o: &K| o.resource_version().unwrap_or_default();
                let line = match e {
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        "Init".to_string()
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        buffer.insert(key(&o), rv(&o));
                        format!("InitApply({})", key(&o))
                    }
                    Ok(watcher::Event::InitDone) => {
                        *st.lock().unwrap() = std::mem::take(&mut buffer);
                        "InitDone".to_string()
                    }
                    Ok(watcher::Event::Apply(o)) => {
                        st.lock().unwrap().insert(key(&o), rv(&o));
                        format!("Apply({})", key(&o))
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        st.lock().unwrap().remove(&key(&o));
                        format!("Delete({})", key(&o))
                    }
                    Err(e) => format!("Error({e})"),
                };
                ev.lock().unwrap().push(line);
            }
        });
        Mirror {
            state,
            events,
            task,
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.state.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
}

/// What the server holds for a kind, in the Mirror's format.
pub fn server_state(api: &FakeApi, kind: &str) -> BTreeMap<String, String> {
    api.list(kind)
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            let name = m["name"].as_str().unwrap().to_string();
            let key = match m["namespace"].as_str() {
                Some(ns) => format!("{ns}/{name}"),
                None => name,
            };
            (key, m["resourceVersion"].as_str().unwrap().to_string())
        })
        .collect()
}
