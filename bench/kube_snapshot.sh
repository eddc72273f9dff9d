#!/usr/bin/env bash
# Benchmark (issue #3): one fake remote cluster with 1,000 nodes and 10,000 Services x 5
# endpoints. Reports the time to the first full snapshot (`sdn-tunnel check-remote`, the agent's
# own source code) and the RSS of a real agent after it programmed all 1,000 peers.
# Targets: first snapshot < 5 s, agent RSS < 100 MB. Needs root (the agent runs in a netns).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-1000}
SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-5}
ROUNDS=${ROUNDS:-3}
# The agent as deployed with remote ClusterIPs on: DNS (default on) and a service proxy.
# IPVS needs a kernel with it (not this lab's); nftables works everywhere.
PROXY=${PROXY:-nftables}

[[ $(id -u) -eq 0 ]] || { echo "kube_snapshot.sh: needs root (network namespace)" >&2; exit 1; }
cargo build --release -q -p sdn-tunnel -p fakekube --bins
bin=target/release
dir=$(mktemp -d /tmp/sdn-bench-kube.XXXXXX)
ns=sdnbench$$
cleanup() {
    # Each step may fail (already gone; `wait` returns the killed process's status): under
    # set -e that must not end the trap before the namespace is deleted.
    local pid
    for pid in ${agent:-} ${api:-}; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up

# The remote ("west", generated as cluster 1): pods 10.4.0.0/14, services 10.97.0.0/16.
ip netns exec "$ns" "$bin/fakekube" --listen 127.0.0.1:6443 --kubeconfig-out "$dir/west.kubeconfig" \
    --context west --gen-nodes "$NODES" --gen-services "$SERVICES" --gen-endpoints "$ENDPOINTS" \
    --gen-cluster 1 --gen-keys >"$dir/fakekube.log" 2>&1 &
api=$!
for _ in $(seq 100); do [[ -s $dir/west.kubeconfig ]] && break; sleep 0.1; done
[[ -s $dir/west.kubeconfig ]] || { cat "$dir/fakekube.log"; exit 1; }

"$bin/sdn-tunnel" keygen >"$dir/key" && chmod 600 "$dir/key"
cat >"$dir/config.yaml" <<YAML
cluster: {name: east, podCIDRs: [10.128.0.0/14], serviceCIDRs: [172.30.0.0/16]}
node: {name: bench, podCIDRs: [10.128.0.0/24], advertise: never}
tunnel: {device: sdnbench0, listenPort: 51999, privateKeyFile: $dir/key, runDir: $dir/run}
proxy: {backend: $PROXY}
remotes:
  - {name: west, podCIDRs: [10.4.0.0/14], serviceCIDRs: [10.97.0.0/16], kubeconfig: $dir/west.kubeconfig}
YAML

echo "fake remote: $NODES nodes, $SERVICES services x $ENDPOINTS endpoints"
echo "agent: DNS on (10053), service proxy $PROXY, metrics/probes on (9477)"
printf '%-6s %22s %16s %8s %9s %10s\n' round "first snapshot (s)" "check RSS (MB)" peers services endpoints
for r in $(seq "$ROUNDS"); do
    out=$(ip netns exec "$ns" "$bin/sdn-tunnel" check-remote --config "$dir/config.yaml" --remote west --json)
    python3 - "$r" "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
print(f"{sys.argv[1]:<6} {r['secondsToSnapshot']:>22.2f} {r['peakRssBytes']/2**20:>16.1f} "
      f"{r['peers']:>8} {r['services']:>9} {r['endpoints']:>10}")
PY
done

# The real agent: all peers and (with a proxy) all virtual services programmed, then its RSS.
# AGENT_ENV ("VAR=value ...") and AGENT_WRAP (e.g. "heaptrack -o /tmp/agent") for profiling.
read -ra agent_env <<<"${AGENT_ENV:-}"
read -ra agent_wrap <<<"${AGENT_WRAP:-}"
ip netns exec "$ns" env NO_COLOR=1 "${agent_env[@]}" "${agent_wrap[@]}" "$bin/sdn-tunnel" agent --config "$dir/config.yaml" >"$dir/agent.log" 2>&1 &
agent=$!
start=$(date +%s.%N)
for _ in $(seq 600); do
    read -r peers vs < <(ip netns exec "$ns" "$bin/sdn-tunnel" status --config "$dir/config.yaml" --json 2>/dev/null |
        python3 -c 'import json,sys; a=json.load(sys.stdin).get("agent") or {}; print(len(a.get("peers", [])), (a.get("proxy") or {}).get("virtualServices", 0))' 2>/dev/null || echo 0 0)
    [[ $peers -ge $NODES && ( $PROXY == none || $vs -ge $SERVICES ) ]] && break
    sleep 0.1
done
end=$(date +%s.%N)
sleep 5 # a few proxy ticks and DNS queries' worth of steady state
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent/status")
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$agent/status")
echo "agent: $peers peers, $vs virtual services after $(python3 -c "print(f'{$end-$start:.2f}')") s (start to all programmed, polled);" \
    "RSS $((rss_kb / 1024)) MB, peak $((hwm_kb / 1024)) MB (target < 100 MB)"
