//! `fakekube`: run the fake Kubernetes API server by hand or for benchmarks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use fakekube::gen::{cluster, ClusterSpec};
use fakekube::FakeApi;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "fakekube",
    about = "Fake Kubernetes API server (HTTP, list/watch semantics) for tests and benchmarks"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Context (and cluster and user) name in the kubeconfig.
    #[arg(long, default_value = "fakekube")]
    context: String,
    /// JSON file to load: an object, an array of objects, or a List with `items`. Repeatable.
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Generate a synthetic cluster with this many nodes.
    #[arg(long, default_value_t = 0)]
    gen_nodes: usize,
    /// ... and this many services (one EndpointSlice each).
    #[arg(long, default_value_t = 0)]
    gen_services: usize,
    /// ... with this many endpoints per service.
    #[arg(long, default_value_t = 5)]
    gen_endpoints: usize,
    /// ... spread over this many namespaces.
    #[arg(long, default_value_t = 10)]
    gen_namespaces: usize,
    /// Cluster number for generated addresses (0..16 are disjoint).
    #[arg(long, default_value_t = 0)]
    gen_cluster: u8,
    /// Annotate generated nodes as sdn-tunnel agents would (public key, endpoint :51820).
    #[arg(long)]
    gen_keys: bool,
    /// Interval of watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    bookmark_interval_ms: u64,
}

fn objects_of(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Object(mut m) if m.get("items").is_some_and(Value::is_array) => {
            match m.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

#[tokio::main]
async fn main() -> anyhow_like::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listener = std::net::TcpListener::bind(&args.listen)
        .map_err(|e| format!("bind {}: {e}", args.listen))?;
    let api = FakeApi::start_on(listener).await?;
    api.set_bookmark_interval(Duration::from_millis(args.bookmark_interval_ms));

    for path in &args.load {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
        let n = api
            .apply_all(objects_of(v))
            .map_err(|e| format!("load {}: {e}", path.display()))?;
        tracing::info!("loaded {n} objects from {}", path.display());
    }
    if args.gen_nodes > 0 || args.gen_services > 0 {
        let spec = ClusterSpec {
            cluster: args.gen_cluster,
            nodes: args.gen_nodes,
            services: args.gen_services,
            endpoints_per_service: args.gen_endpoints,
            namespaces: args.gen_namespaces,
        };
        let t = Instant::now();
        let mut objs = cluster(&spec);
        if args.gen_keys {
            fakekube::gen::advertise_all(&mut objs);
        }
        let n = api.apply_all(objs).map_err(|e| format!("generate: {e}"))?;
        tracing::info!("generated {n} objects in {:?}", t.elapsed());
    }
    if let Some(path) = &args.kubeconfig_out {
        api.write_kubeconfig(path, &args.context)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        tracing::info!("kubeconfig written to {}", path.display());
    }
    println!(
        "fakekube serving {} (resourceVersion {})",
        api.url(),
        api.resource_version()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Errors as messages, without pulling in an error crate.
mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}
