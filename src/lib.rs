//! sdn-tunnel: connects the pod and service networks of Kubernetes clusters over a userspace
//! WireGuard mesh. Data flows one way: sources -> pure plan -> idempotent reconcilers -> kernel.

pub mod agent;
pub mod check_remote;
pub mod cidr;
pub mod cleanup;
pub mod config;
pub mod control;
pub mod diagnose;
pub mod dns;
pub mod health;
pub mod host;
pub mod http;
pub mod instance_lock;
pub mod keys;
pub mod link;
pub mod listen;
pub mod mcs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod port_owner;
pub mod probe;
pub mod proxy;
pub mod reconcile;
pub mod routes;
pub mod source;
pub mod status;
pub mod status_board;
pub mod tunnel;
