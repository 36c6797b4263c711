#!/usr/bin/env bash
# Validates the Kubernetes install (deploy/kubernetes) without a cluster. Called by
# tests/run.sh after the debug build; runs on its own too (build the binaries first).
#
# 1. Schemas (tests/ci/k8s_validate.py): every manifest, strictly, against the Kubernetes
#    OpenAPI schemas of the oldest Kubernetes Ferrule supports (1.29: native sidecars on
#    by default) and the newest kubernetes-validate knows; the CRD's structural schema;
#    AuthorizationPolicy resources against the CRD; the kustomizations' resource lists;
#    and, when kubectl is installed, the same for `kubectl kustomize` output (base,
#    example, and the README's overlay).
# 2. The Deployment's flags and FERRULE_* variables against `ferrule-control-plane --help`,
#    and the image tags against the workspace version.
# 3. The CRD schema and the policy engine agree: policy fixtures the CRD schema accepts
#    are accepted by the real control plane (`ferrulectl validate`), and those it
#    refuses are refused by the control plane too.
# 4. install.sh's kubectl commands, against a recording stand-in for kubectl.
# 5. The example's pods through the real injection webhook (tests/ci/k8s_inject.py): the
#    TLS name and trust the API server would check, the JSON Patch applied, the injected
#    pods valid against the Kubernetes schemas, a second pass changing nothing.
# 6. checkov on deploy/kubernetes: no finding unless suppressed with a reason
#    (checkov.io/skipN annotations on the object).
#
# Python tools come from tests/ci/python-tools.sh (FERRULE_TOOLS_BIN when tests/run.sh
# has set it up already). Everything runs on loopback; checkov is told not to download.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
started=$SECONDS
BIN=${FERRULE_TOOLS_BIN:-$(tests/ci/python-tools.sh)}
PY=$BIN/python
# The binaries tests/run.sh just built (absolute: some steps run from other directories).
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
CP=$TARGET/debug/ferrule-control-plane
CTL=$TARGET/debug/ferrulectl
for b in "$CP" "$CTL"; do
  [ -x "$b" ] || { echo "k8s-validate.sh: $b is missing: run 'cargo build --workspace --bins' first" >&2; exit 1; }
done

tmp=$(mktemp -d)
cp_pid=
cleanup() {
  if [ -n "$cp_pid" ]; then kill "$cp_pid" 2>/dev/null || true; wait "$cp_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== k8s-validate: schemas"
rendered=()
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/kubernetes >"$tmp/base.yaml"
  kubectl kustomize deploy/kubernetes/examples >"$tmp/examples.yaml"
  # The overlay shown in README.md ("Install on Kubernetes"), against this checkout.
  # (Kustomize refuses absolute paths: the base is named relative to the overlay.)
  mkdir "$tmp/overlay"
  cat >"$tmp/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$tmp/overlay" deploy/kubernetes)
configMapGenerator:
  - name: ferrule-control-plane-config
    namespace: ferrule-system
    behavior: merge
    literals:
      - FERRULE_TRUST_DOMAIN=prod.example.com
      - FERRULE_INJECT_PROXY_IMAGE=registry.example.com/ferrule/proxy:0.1.0
images:
  - name: ferrule/control-plane
    newName: registry.example.com/ferrule/control-plane
EOF
  kubectl kustomize "$tmp/overlay" >"$tmp/overlay.yaml"
  grep -q 'FERRULE_TRUST_DOMAIN: prod.example.com' "$tmp/overlay.yaml" \
    || { echo "ERROR the README overlay did not change the trust domain" >&2; exit 1; }
  grep -q 'image: registry.example.com/ferrule/control-plane:0.1.0' "$tmp/overlay.yaml" \
    || { echo "ERROR the README overlay did not change the image" >&2; exit 1; }
  rendered=(--rendered "$tmp/base.yaml" --rendered "$tmp/examples.yaml" --rendered "$tmp/overlay.yaml")
else
  echo "kubectl not installed: the kustomize output is not rendered (the files are still validated)"
fi
"$CP" --help >"$tmp/help.txt"
"$PY" tests/ci/k8s_validate.py . --k8s-version 1.29 --k8s-version latest \
  --control-plane-help "$tmp/help.txt" "${rendered[@]}"

echo "== k8s-validate: the CRD schema and the policy engine agree"
n_invalid=$("$PY" tests/ci/k8s_validate.py . --engine-documents "$tmp/valid.yaml" "$tmp/invalid.yaml")
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
webhook=127.0.0.1:$(port)
"$CP" --data-dir "$tmp/cp" --trust-domain cluster.local --listen "127.0.0.1:$(port)" \
  --metrics-listen "127.0.0.1:$(port)" --webhook-listen "$webhook" \
  --inject-proxy-image ferrule/proxy:0.1.0 >"$tmp/cp.log" 2>&1 &
cp_pid=$!
up() { [ -S "$tmp/cp/admin.sock" ] && (exec 3<>"/dev/tcp/${webhook%:*}/${webhook#*:}") 2>/dev/null; }
for _ in $(seq 100); do
  up && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$tmp/cp.log" >&2; exit 1; }
  sleep 0.1
done
up || { echo "ERROR the control plane did not start" >&2; cat "$tmp/cp.log" >&2; exit 1; }
ctl() { "$CTL" --socket "$tmp/cp/admin.sock" "$@"; }
if ! ctl validate -f "$tmp/valid.yaml" >"$tmp/valid.out" 2>&1; then
  echo "ERROR the policy engine refuses documents the CRD schema accepts:" >&2
  cat "$tmp/valid.out" >&2
  exit 1
fi
for i in $(seq 0 $((n_invalid - 1))); do
  if ctl validate -f "$tmp/invalid.yaml.$i" >/dev/null 2>&1; then
    echo "ERROR the policy engine accepts what the CRD schema refuses: $(head -1 "$tmp/invalid.yaml.$i")" >&2
    exit 1
  fi
done
echo "engine: $(grep -c ' valid$' "$tmp/valid.out") documents accepted, $n_invalid refused, as the CRD schema says"

echo "== k8s-validate: install.sh's commands"
# No API server here: a stand-in kubectl records what install.sh asks of it, answers
# "not found" for the KEK Secret, and answers `exec ... /ferrulectl webhook ca-bundle` by
# running the real ferrulectl against the control plane started above. The caBundle
# patched into the webhook must decode to that control plane's trust bundle.
mkdir "$tmp/kubectl"
cat >"$tmp/kubectl/kubectl" <<STUB
#!/usr/bin/env bash
printf '%s\n' "\$*" >>"$tmp/kubectl/calls"
last= file= patch=
for a in "\$@"; do
  case \$a in --from-file=kek=*) file=\${a#--from-file=kek=} ;; esac
  [ "\$last" = -p ] && patch=\$a
  last=\$a
done
case "\$*" in
  *"get secret ferrule-ca-kek"*) exit 1 ;;
  *"create secret generic ferrule-ca-kek"*)
    stat -c %a "\$file" >"$tmp/kubectl/kek.mode"; cp "\$file" "$tmp/kubectl/kek" ;;
  *"exec deploy/ferrule-control-plane -c control-plane -- /ferrulectl webhook ca-bundle"*)
    exec "$CTL" --socket "$tmp/cp/admin.sock" webhook ca-bundle ;;
  *"patch mutatingwebhookconfiguration ferrule-sidecar-injector --type=json -p "*)
    printf '%s' "\$patch" >"$tmp/kubectl/patch.json" ;;
esac
STUB
chmod +x "$tmp/kubectl/kubectl"
KUBECTL="$tmp/kubectl/kubectl" deploy/kubernetes/install.sh >"$tmp/install.out"
"$PY" - "$tmp" <<'CHECK'
import base64, json, sys
tmp = sys.argv[1]
calls = open(f"{tmp}/kubectl/calls").read().splitlines()
order = ["apply -f", "get secret", "create secret", "apply -k", "rollout status", "exec", "patch"]
seen = [next(i for i, c in enumerate(calls) if c.startswith(o) or f" {o}" in c) for o in order]
assert seen == sorted(seen), f"install.sh ran its steps out of order: {calls}"
assert open(f"{tmp}/kubectl/kek.mode").read().strip() == "600", "KEK temp file not private"
assert len(base64.b64decode(open(f"{tmp}/kubectl/kek").read().strip(), validate=True)) == 32
(patch,) = json.loads(open(f"{tmp}/kubectl/patch.json").read())
assert patch["op"] == "add" and patch["path"] == "/webhooks/0/clientConfig/caBundle", patch
bundle = open(f"{tmp}/cp/bundle.pem", "rb").read()
assert base64.b64decode(patch["value"], validate=True) == bundle, "caBundle is not the bundle"
assert bundle.startswith(b"-----BEGIN CERTIFICATE-----")
print(f"install.sh: {len(calls)} kubectl calls in order; KEK 32 bytes via a 0600 file; "
      "caBundle = the control plane's trust bundle")
CHECK

echo "== k8s-validate: the example's pods through the injection webhook"
"$PY" tests/ci/k8s_inject.py "$tmp/cp/bundle.pem" "$webhook" 1.29,latest \
  deploy/kubernetes/examples/api.yaml deploy/kubernetes/examples/web.yaml

echo "== k8s-validate: checkov"
"$BIN/checkov" --directory deploy/kubernetes --framework kubernetes --skip-download \
  --compact --quiet
echo "k8s-validate: ok ($((SECONDS - started)) s)"
