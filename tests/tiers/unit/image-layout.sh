#!/usr/bin/env bash
# The lab's images (tests/cluster/images.sh, umoci, no Docker) have the layout of the release build
# (deploy/Dockerfile): the same files, user, entrypoint and command per target, and the chart runs
# the paths that are in them. Builds the images into a temporary folder from target/debug.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
die() { echo "FAIL $*" >&2; exit 1; }
command -v umoci >/dev/null || die "umoci is missing: run tests/setup.sh"
[ -x "$repo/target/debug/cipherlane-agent" ] || (cd "$repo" && cargo build -q --bins) || die "cargo build --bins"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
CLUSTER_TAG=layout CLUSTER_IMAGES="agent operator" "$repo/tests/cluster/images.sh" "$work/images" >/dev/null 2>"$work/err" ||
  { cat "$work/err"; die "tests/cluster/images.sh failed"; }
python3 - "$repo" "$work" <<'PY'
import json, os, re, subprocess, sys, tarfile
repo, work = sys.argv[1], sys.argv[2]
# deploy/Dockerfile: per target stage, the files COPY puts in, USER, ENTRYPOINT and CMD
stages, cur = {}, None
for line in open(f"{repo}/deploy/Dockerfile").read().replace("\\\n", " ").splitlines():
    m = re.match(r"FROM \S+ AS (\w+)", line)
    if m: cur = stages.setdefault(m.group(1), {"files": [], "user": None, "entry": None, "cmd": None}); continue
    if cur is None: continue
    m = re.match(r"COPY --from=build (.+)", line)
    if m:
        *srcs, dest = m.group(1).split()
        cur["files"] += [dest.rstrip("/") + "/" + os.path.basename(s) for s in srcs]
    if line.startswith("USER "): cur["user"] = line.split()[1]
    if line.startswith("ENTRYPOINT "): cur["entry"] = json.loads(line[len("ENTRYPOINT "):])
    if line.startswith("CMD "): cur["cmd"] = json.loads(line[len("CMD "):])
problems = []
for target in ("agent", "operator"):
    want = stages.get(target) or sys.exit(f"deploy/Dockerfile has no target {target}")
    lay = f"{work}/{target}"; os.makedirs(lay)
    tarfile.open(f"{work}/images/{target}-layout.tar").extractall(lay)
    blob = lambda d: json.load(open(f"{lay}/blobs/sha256/{d.split(':')[1]}"))
    index = json.load(open(f"{lay}/index.json"))
    manifest = blob(index["manifests"][0]["digest"])
    cfg = blob(manifest["config"]["digest"])["config"]
    files = set()
    for layer in manifest["layers"]:
        with tarfile.open(f"{lay}/blobs/sha256/{layer['digest'].split(':')[1]}") as t:
            for m in t.getmembers():
                if m.isfile() and m.mode & 0o111: files.add("/" + m.name.lstrip("./"))
    for f in want["files"]:
        if f not in files: problems.append(f"{target}: {f} (deploy/Dockerfile) is not an executable in the lab image")
    for key, got in (("user", cfg.get("User")), ("entry", cfg.get("Entrypoint")), ("cmd", cfg.get("Cmd"))):
        if want[key] != got: problems.append(f"{target}: {key} is {got!r} in the lab image, {want[key]!r} in deploy/Dockerfile")
    print(f"ok   {target}: {', '.join(want['files'])}, user {cfg.get('User')}, entrypoint {cfg.get('Entrypoint')}, cmd {cfg.get('Cmd')}")
# the chart runs what the images hold
out = subprocess.run([f"{repo}/tests/tools/build.sh"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
rendered = subprocess.run([f"{out}/helm", "template", "t", f"{repo}/charts/cipherlane", "--set", "clusterPodCIDR=10.244.0.0/16"],
                          capture_output=True, text=True, check=True).stdout
shipped = set(stages["agent"]["files"] + stages["operator"]["files"])
for path in sorted(set(re.findall(r'(/usr/local/bin/[a-z-]+)', rendered))):
    if path not in shipped: problems.append(f"the chart runs {path}, which no image ships")
if problems: print("\n".join(problems)); sys.exit(1)
print("ok   every /usr/local/bin path the chart runs is in the images")
PY
