//! This cluster's MCS controller (issue 17, items 2 and 3): while this agent holds the Lease
//! ([`super::mcs_lease`]), it writes what the plan's clusterset says into the local API:
//!
//! - the `Valid` and `Conflict` conditions of every local ServiceExport (KEP-1645's conflict
//!   resolution, the same on every cluster; `Valid` False `NoService` or `InvalidServiceType`
//!   for an export without a usable Service), only when they change;
//! - one ServiceImport per exported service of the set, in its namespace (type, ports,
//!   ClusterSetIPs, session affinity; status: the clusters behind it), labelled as ours;
//!   ours that no cluster exports any more are deleted. A ServiceImport someone else made is
//!   never touched.
//!
//! It writes on every plan change and every 30 s (repairing manual edits), and only once the
//! local exports and every remote have synced since start: before that, an export not seen
//! yet would delete a ServiceImport.

use super::mcs_lease::{Leadership, LeaseLoop, LEASE_NAME};
use super::remotes::Plan;
use crate::config::Config;
use crate::control::McsControllerStatus;
use crate::mcs::clusterset::ClusterSetService;
use crate::mcs::conflict;
use crate::mcs::objects::{self, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL};
use crate::source::kube_client::{self, LocalApi};
use crate::source::now_unix;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const RESYNC: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(10);
/// Lets a burst of plans settle into one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);
const GROUP: &str = "multicluster.x-k8s.io";

pub struct McsController {
    pub cfg: Arc<Config>,
    pub api: LocalApi,
    pub plans: watch::Receiver<Arc<Plan>>,
    pub status: watch::Sender<Option<McsControllerStatus>>,
}

/// The API versions the cluster serves for the two kinds.
struct Versions {
    exports: ApiResource,
    imports: ApiResource,
}

impl McsController {
    pub async fn run(mut self) -> std::io::Result<()> {
        let client = self.client().await;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "sdn-tunnel".into());
        let lease = LeaseLoop {
            client: client.clone(),
            namespace: namespace.clone(),
            name: LEASE_NAME.into(),
            me: self.cfg.node_name().to_string(),
        };
        self.status.send_replace(Some(McsControllerStatus {
            lease: lease.lease(),
            ..Default::default()
        }));
        let (lead_tx, mut lead_rx) = watch::channel(Leadership::default());
        tokio::spawn(lease.run(lead_tx));
        let mut versions: Option<Versions> = None;
        let mut resync = tokio::time::interval(RESYNC);
        // What the last successful pass wrote from: endpoint churn changes every plan but
        // nothing we write, and must not cost the API server two lists each time.
        let mut written: Option<u64> = None;
        loop {
            let forced = tokio::select! {
                r = self.plans.changed() => {
                    if r.is_err() {
                        return Err(std::io::Error::other("the planner ended"));
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    false
                }
                r = lead_rx.changed() => {
                    if r.is_err() {
                        return Err(std::io::Error::other("the MCS lease loop ended"));
                    }
                    true
                }
                _ = resync.tick() => true,
            };
            let lead = lead_rx.borrow_and_update().clone();
            self.update(|s| {
                s.holder = lead.holder.clone();
                s.leader = lead.leader;
            });
            if !lead.leader {
                continue;
            }
            if versions.is_none() {
                versions = discover(&client).await;
                if versions.is_none() {
                    self.update(|s| {
                        s.last_error = Some(format!(
                            "the cluster serves no ServiceExport/ServiceImport API ({GROUP}): \
                             install deploy/crds"
                        ))
                    });
                    continue;
                }
            }
            let plan = self.plans.borrow_and_update().clone();
            if !synced(&plan) {
                continue;
            }
            let fp = fingerprint(&plan);
            if !forced && written == Some(fp) {
                continue;
            }
            let v = versions.as_ref().expect("discovered above");
            match self.pass(&client, v, &plan).await {
                Ok(done) => {
                    written = (!done.incomplete).then_some(fp);
                    self.update(|s| {
                        s.last_sync_unix = Some(now_unix());
                        s.service_imports = done.imports;
                        s.conditions_written = done.conditions;
                        s.skipped = done.skipped;
                        s.last_error = None;
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing the cluster's MCS objects");
                    // A CRD removed under us: look again next time.
                    versions = None;
                    self.update(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
    }

    async fn client(&self) -> Client {
        loop {
            match kube_client::local_client(&self.api).await {
                Ok(c) => return c,
                Err(e) => {
                    tracing::warn!(error = %e, "MCS controller: no client for the local API; retrying in 10s");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut McsControllerStatus)) {
        self.status.send_if_modified(|s| {
            let Some(s) = s.as_mut() else { return false };
            let before = s.clone();
            f(s);
            *s != before
        });
    }

    /// One write pass: conditions, then ServiceImports.
    async fn pass(&self, client: &Client, v: &Versions, plan: &Plan) -> Result<Done, kube::Error> {
        let me = &self.cfg.cluster.name;
        let by_key: BTreeMap<(&str, &str), &ClusterSetService> = plan
            .clusterset
            .iter()
            .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
            .collect();
        let mut done = Done::default();
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
            .to_string();

        // Conditions of our own ServiceExports.
        let exports_api: Api<DynamicObject> = Api::all_with(client.clone(), &v.exports);
        for e in exports_api.list(&ListParams::default()).await? {
            let (Some(ns), Some(name)) = (e.metadata.namespace.clone(), e.metadata.name.clone())
            else {
                continue;
            };
            let want = match by_key.get(&(ns.as_str(), name.as_str())) {
                Some(cs) if cs.exported_by.iter().any(|c| c == me) => cs.conditions.clone(),
                _ => match self.invalid(client, &ns, &name).await? {
                    Some(c) => vec![c],
                    // A valid Service the plan does not have yet: nothing to claim now.
                    None => continue,
                },
            };
            let have = &e.data["status"]["conditions"];
            if let Some(conditions) = objects::merged_conditions(have, &want, &now) {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &v.exports);
                let patch = json!({"status": {"conditions": conditions}});
                let r = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                if done.skip_or_fail(r, || format!("ServiceExport {ns}/{name}"))? {
                    tracing::info!(export = %format!("{ns}/{name}"),
                        conditions = %summary(&want), "ServiceExport conditions written");
                    done.conditions += 1;
                }
            }
        }

        // ServiceImports.
        let imports_api: Api<DynamicObject> = Api::all_with(client.clone(), &v.imports);
        let existing: BTreeMap<(String, String), DynamicObject> = imports_api
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter_map(|o| {
                let k = (o.metadata.namespace.clone()?, o.metadata.name.clone()?);
                Some((k, o))
            })
            .collect();
        let api_version = v.imports.api_version.clone();
        for cs in plan.clusterset.iter().filter(|s| !s.members.is_empty()) {
            let key = (cs.namespace.clone(), cs.name.clone());
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &cs.namespace, &v.imports);
            let want = objects::service_import(cs, &api_version);
            let want_status = objects::service_import_status(cs, &api_version);
            let have = existing
                .get(&key)
                .map(|o| serde_json::to_value(o).unwrap_or_default());
            if let Some(h) = &have {
                if h["metadata"]["labels"][MANAGED_BY_LABEL] != MANAGED_BY {
                    done.skipped.push(format!(
                        "ServiceImport {}/{}: exists and is not ours (another MCS implementation?)",
                        cs.namespace, cs.name
                    ));
                    continue;
                }
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let what = || format!("ServiceImport {}/{}", cs.namespace, cs.name);
            if !have
                .as_ref()
                .is_some_and(|h| objects::import_up_to_date(h, &want))
            {
                let r = api.patch(&cs.name, &params, &Patch::Apply(&want)).await;
                if !done.skip_or_fail(r, what)? {
                    continue;
                }
                tracing::info!(import = %what(), ips = ?cs.ips, "ServiceImport written");
            }
            if !have
                .as_ref()
                .is_some_and(|h| objects::import_status_up_to_date(h, &want_status))
            {
                let r = api
                    .patch_status(&cs.name, &params, &Patch::Apply(&want_status))
                    .await;
                if !done.skip_or_fail(r, what)? {
                    continue;
                }
            }
            done.imports += 1;
        }
        for ((ns, name), o) in &existing {
            let ours = o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|v| v == MANAGED_BY);
            let wanted = by_key
                .get(&(ns.as_str(), name.as_str()))
                .is_some_and(|s| !s.members.is_empty());
            if ours && !wanted {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &v.imports);
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(import = %format!("{ns}/{name}"),
                        "ServiceImport deleted: no cluster exports it any more"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// The `Valid` = False condition of an export whose Service is missing or cannot be
    /// exported; None if the Service is fine.
    async fn invalid(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<conflict::Condition>, kube::Error> {
        let svc = Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?;
        let spec = svc.as_ref().and_then(|s| s.spec.as_ref());
        let service_type = svc
            .as_ref()
            .map(|_| spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP"));
        let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref());
        Ok(conflict::import_type_of(service_type, cluster_ip).err())
    }
}

#[derive(Default)]
struct Done {
    imports: usize,
    conditions: usize,
    skipped: Vec<String>,
    /// Some object could not be written this pass: try again on the next plan, not only at
    /// the resync.
    incomplete: bool,
}

impl Done {
    /// One object's write: Ok(true) written; Ok(false) skipped for a reason of that object
    /// alone (its namespace missing or being deleted, the object gone), recorded, so the pass
    /// goes on; Err for anything that concerns every object (the API down, RBAC).
    fn skip_or_fail<T>(
        &mut self,
        r: Result<T, kube::Error>,
        what: impl FnOnce() -> String,
    ) -> Result<bool, kube::Error> {
        match r {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if object_only(&s) => {
                self.skipped.push(format!("{}: {}", what(), s.message));
                self.incomplete = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// An API error about one object: not found (namespace sameness: no such namespace here; or
/// deleted meanwhile), a namespace being deleted (403 whose message says so), a conflict, or
/// an invalid object.
fn object_only(s: &kube::core::Status) -> bool {
    match s.code {
        404 | 409 | 422 => true,
        403 => s.message.contains("being terminated"),
        _ => false,
    }
}

/// A hash of what the writer derives its objects from (not the endpoints): the clusterset,
/// and the local exports' counts (an export without a usable Service is in no clusterset).
fn fingerprint(plan: &Plan) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(l) = &plan.local {
        format!("{} {:?} {:?}", l.services, l.import, l.rejected).hash(&mut h);
    }
    for s in &plan.clusterset {
        let members: Vec<&str> = s.members.iter().map(|m| m.cluster.as_str()).collect();
        format!(
            "{}/{} {} {:?} {:?} {:?} {:?} {:?} {:?}",
            s.namespace,
            s.name,
            s.headless,
            s.ips,
            s.ports,
            s.session_affinity,
            members,
            s.exported_by,
            s.conditions
        )
        .hash(&mut h);
    }
    h.finish()
}

/// Every source has delivered a complete snapshot since start.
fn synced(plan: &Plan) -> bool {
    plan.local.as_ref().is_some_and(|l| l.synced) && plan.remotes.iter().all(|r| r.synced)
}

fn summary(c: &[conflict::Condition]) -> String {
    c.iter()
        .map(|c| format!("{}={} ({})", c.type_, c.status.as_str(), c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ServiceExport and ServiceImport at the newest version the cluster serves (v1beta1, else
/// v1alpha1), or None without the CRDs.
async fn discover(client: &Client) -> Option<Versions> {
    for version in ["v1beta1", "v1alpha1"] {
        let gv = format!("{GROUP}/{version}");
        let Ok(list) = client.list_api_group_resources(&gv).await else {
            continue;
        };
        let has = |plural: &str| list.resources.iter().any(|r| r.name == plural);
        if has("serviceexports") && has("serviceimports") {
            let ar = |kind: &str, plural: &str| ApiResource {
                group: GROUP.into(),
                version: version.into(),
                api_version: gv.clone(),
                kind: kind.into(),
                plural: plural.into(),
            };
            return Some(Versions {
                exports: ar("ServiceExport", "serviceexports"),
                imports: ar("ServiceImport", "serviceimports"),
            });
        }
    }
    None
}

/// The controller runs where ClusterSetIPs are on, `mcs.controller` is true and the local API
/// is known.
pub fn wanted(cfg: &Config) -> Option<LocalApi> {
    if !cfg.mcs.enabled() || !cfg.mcs.controller {
        return None;
    }
    cfg.local_api()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: u16, message: &str) -> kube::core::Status {
        serde_json::from_value(json!({
            "status": "Failure", "message": message, "reason": "", "code": code
        }))
        .unwrap()
    }

    #[test]
    fn errors_of_one_object_skip_it_others_end_the_pass() {
        let terminating = "unable to create new content in namespace mcs-conformance-x because \
                           it is being terminated";
        assert!(object_only(&err(403, terminating)));
        assert!(object_only(&err(404, "namespaces \"shop\" not found")));
        assert!(!object_only(&err(
            403,
            "serviceimports is forbidden: User ..."
        )));
        assert!(!object_only(&err(500, "etcdserver: request timed out")));
        let mut done = Done::default();
        let r: Result<(), kube::Error> = Err(kube::Error::Api(Box::new(err(403, terminating))));
        assert!(!done.skip_or_fail(r, || "ServiceImport a/b".into()).unwrap());
        assert!(done.incomplete && done.skipped[0].starts_with("ServiceImport a/b: unable"));
        let r: Result<(), kube::Error> = Err(kube::Error::Api(Box::new(err(401, "Unauthorized"))));
        assert!(done.skip_or_fail(r, || "x".into()).is_err());
    }
}
