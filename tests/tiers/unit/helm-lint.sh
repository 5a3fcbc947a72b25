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
HELM=$helm "$repo/deploy/render.sh" --check || die "deploy/ is stale: run deploy/render.sh"
echo "ok   deploy/cipherlane.yaml, deploy/uninstall.yaml and charts/cipherlane/crds match their sources"
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
