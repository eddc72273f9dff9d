//! The Lease that elects this cluster's MCS controller: one agent writes the ServiceExport
//! conditions and ServiceImports, not every node. kube-rs has no leader election, so this is a
//! small loop over [`crate::mcs::lease_rules`]: read the Lease, then create it or replace it
//! with the resourceVersion read (the API server refuses a replace based on a stale read, so
//! two agents never both win a round).

use crate::mcs::lease_rules::{self, Decision, Held};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::watch;

/// Name of the Lease, in the agent's namespace.
pub const LEASE_NAME: &str = "sdn-tunnel-mcs";
/// A leader that stops renewing is replaced after this long.
pub const DURATION_S: i32 = 15;
/// How often the leader renews, and followers look.
const RENEW: Duration = Duration::from_secs(5);
/// Bound on one API call: a hung call must not outlast the lease.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// What the loop publishes: the holder as last read, and whether it is us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub holder: Option<String>,
    pub leader: bool,
}

pub struct LeaseLoop {
    pub client: Client,
    pub namespace: String,
    /// The Lease's name ([`LEASE_NAME`] in the agent).
    pub name: String,
    /// This agent's identity: its node name (unique in the cluster).
    pub me: String,
}

impl LeaseLoop {
    /// Runs forever: every 5 s one round; publishes every change of leadership.
    pub async fn run(self, tx: watch::Sender<Leadership>) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        // When we last renewed successfully (Unix ms), while leader.
        let mut renewed_ms: Option<i64> = None;
        let mut last_error: Option<String> = None;
        loop {
            let now = now_ms();
            let round = tokio::time::timeout(CALL_TIMEOUT, self.round(&api, now)).await;
            let next = match round {
                Ok(Ok(l)) => {
                    last_error = None;
                    renewed_ms = l.leader.then_some(now);
                    l
                }
                failed => {
                    let msg = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {CALL_TIMEOUT:?}"),
                    };
                    if last_error.as_deref() != Some(&msg) {
                        tracing::warn!(lease = %self.lease(), error = %msg, "MCS controller lease");
                        last_error = Some(msg);
                    }
                    // Could not renew: keep leading only while our last renewal holds.
                    let still =
                        renewed_ms.is_some_and(|t| !lease_rules::expired(t, DURATION_S, now_ms()));
                    if !still {
                        renewed_ms = None;
                    }
                    Leadership {
                        holder: tx.borrow().holder.clone(),
                        leader: still,
                    }
                }
            };
            let was = tx.borrow().clone();
            if next != was {
                if next.leader != was.leader {
                    if next.leader {
                        tracing::info!(lease = %self.lease(), "this agent now writes the cluster's MCS objects");
                    } else {
                        tracing::info!(lease = %self.lease(), holder = ?next.holder,
                            "this agent no longer writes the cluster's MCS objects");
                    }
                }
                tx.send_replace(next);
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// One read and at most one write.
    async fn round(&self, api: &Api<Lease>, now: i64) -> Result<Leadership, kube::Error> {
        let current = api.get_opt(&self.name).await?;
        let held = current.as_ref().map(held);
        match lease_rules::decide(held.as_ref(), &self.me, now) {
            Decision::Follow { holder } => Ok(Leadership {
                holder: Some(holder),
                leader: false,
            }),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, 0)),
                };
                self.write(api.create(&PostParams::default(), &lease).await)
            }
            decision => {
                let mut lease = current.expect("a decision other than Create has a Lease");
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    LeaseSpec {
                        renew_time: Some(micro(now)),
                        lease_duration_seconds: Some(DURATION_S),
                        ..old
                    }
                } else {
                    tracing::debug!(lease = %self.lease(), ?decision, "taking over");
                    self.spec(now, transitions + 1)
                });
                // resourceVersion as read: a concurrent writer makes this fail with 409.
                self.write(
                    api.replace(&self.name, &PostParams::default(), &lease)
                        .await,
                )
            }
        }
    }

    fn spec(&self, now: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(DURATION_S),
            acquire_time: Some(micro(now)),
            renew_time: Some(micro(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// A create or replace: won, lost to another writer (409), or an error.
    fn write(&self, r: Result<Lease, kube::Error>) -> Result<Leadership, kube::Error> {
        match r {
            Ok(l) => Ok(Leadership {
                holder: l.spec.and_then(|s| s.holder_identity),
                leader: true,
            }),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Leadership {
                holder: None,
                leader: false,
            }),
            Err(e) => Err(e),
        }
    }
}

fn held(l: &Lease) -> Held {
    let spec = l.spec.clone().unwrap_or_default();
    Held {
        holder: spec.holder_identity,
        renewed_ms: spec
            .renew_time
            .or(spec.acquire_time)
            .map(|t| t.0.as_millisecond()),
        duration_s: spec.lease_duration_seconds,
    }
}

fn micro(ms: i64) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
