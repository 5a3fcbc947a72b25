#!/usr/bin/env bash
# The chart and deploy/ without a cluster: helm lint --strict (real helm), the rendered manifests and
# the chart's CRD copies are up to date, and the Grafana dashboard is valid JSON querying only metrics
# documented in deploy/README.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
die() { echo "FAIL $*" >&2; exit 1; }
bin=$("$repo/tests/tools/build.sh" | tail -n 1) || die "tests/tools/build.sh could not provide helm"
helm=$bin/helm
out=$("$helm" lint --strict "$repo/charts/cipherlane" --kube-version 1.34.0 --set clusterPodCIDR=10.244.0.0/16 2>&1) ||
  { echo "$out"; die "helm lint --strict failed"; }
echo "ok   helm lint --strict"
# a user's first commands: ports through --set (int64, not the float64 of a values file), lint on the
# defaults, template without --kube-version (helm's default Kubernetes version is the pinned one)
"$helm" template t "$repo/charts/cipherlane" --set clusterPodCIDR=10.244.0.0/16 --set agent.kexPort=9481 \
  --set agent.httpPort=9482 --set operator.httpPort=9483 > /dev/null || die "ports set with --set do not render"
out=$("$helm" template t "$repo/charts/cipherlane" --set clusterPodCIDR=10.244.0.0/16 --set agent.kexPort=9472 2>&1) &&
  die "equal agent ports set with --set rendered"
echo "$out" | grep -q 'agent.kexPort and agent.httpPort must differ (both are 9472)' || { echo "$out"; die "no clear message for equal ports"; }
echo "ok   ports set with --set render, and a collision says so"
out=$("$helm" lint "$repo/charts/cipherlane" 2>&1 || true)
echo "$out" | grep -q 'clusterPodCIDR is required' || { echo "$out"; die "helm lint on the defaults does not say that clusterPodCIDR is required"; }
echo "$out" | grep -q 'does not match pattern' && { echo "$out"; die "helm lint on the defaults prints the raw schema pattern"; }
conf=$(awk '$1 == "confName:" {print $2}' "$repo/charts/cipherlane/values.yaml")
grep -q "CONFLIST_FILE_NAME: &str = \"$conf\"" "$repo/crates/cni/src/conflist.rs" || die "the chart's cni.confName $conf is not the agent's default"
echo "ok   helm lint on the defaults says 'clusterPodCIDR is required' (no raw schema regex)"
HELM=$helm "$repo/deploy/render.sh" --check || die "deploy/ is stale: run deploy/render.sh"
echo "ok   deploy/cipherlane.yaml, deploy/uninstall.yaml and charts/cipherlane/crds match their sources"
python3 - "$repo/charts/cipherlane/values.yaml" <<'PY' || die "values.yaml has undocumented keys (each needs a '# --' comment above it or above a parent)"
import re, sys
keys = []  # (indent, key, has "# --" comment directly above)
comment = False
for line in open(sys.argv[1]).read().splitlines():
    s = line.strip()
    if s.startswith("# --"): comment = True; continue
    if s.startswith("#"): continue                      # continuation of a comment
    m = re.match(r"^( *)([A-Za-z0-9_]+):", line)
    if m: keys.append((len(m.group(1)), m.group(2), comment))
    comment = False
undocumented = []
for i, (ind, key, doc) in enumerate(keys):
    leaf = i + 1 == len(keys) or keys[i + 1][0] <= ind
    ancestors = [k for k in keys[:i] if k[0] < ind]
    chain, level = [], ind                            # the nearest ancestor at each lower indent
    for a in reversed(ancestors):
        if a[0] < level: chain.append(a); level = a[0]
    if leaf and not doc and not any(a[2] for a in chain):
        undocumented.append(".".join([a[1] for a in reversed(chain)] + [key]))
if undocumented: print("undocumented:", undocumented); sys.exit(1)
print(f"{sum(1 for _ in keys)} keys")
PY
echo "ok   every key in values.yaml is documented"
python3 - "$repo/deploy/grafana/cipherlane-agents.json" "$repo/deploy/README.md" <<'PY' || die "the dashboard is invalid or uses undocumented metrics"
import json, re, sys
dash = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
used = {re.sub(r"_bucket$", "", m) for e in exprs for m in re.findall(r"\bcipherlane_[a-z_]+", e)}
documented = set(re.findall(r"^\| `(cipherlane_[a-z_]+)`", open(sys.argv[2]).read(), re.M))
missing = sorted(used - documented)
if not exprs or missing:
    print("queries:", len(exprs), "undocumented metrics:", missing); sys.exit(1)
PY
echo "ok   the Grafana dashboard is valid JSON and every metric it queries is documented"
