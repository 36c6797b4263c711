#!/usr/bin/env bash
# Installs (or upgrades) Ferrule on the cluster of the current kubectl context. These are
# the steps of README.md, "Install on Kubernetes"; each is a plain kubectl command you can
# also run by hand:
#
#   deploy/kubernetes/install.sh              namespace, KEK Secret (once), apply -k, wait, caBundle
#   deploy/kubernetes/install.sh ca-bundle    only set the webhook's caBundle again (after
#                                             `ferrulectl ca prepare`, before `ca activate`)
#
# Environment: KUBECTL (default kubectl), FERRULE_KUSTOMIZATION (default this directory:
# point it at your overlay), FERRULE_ROLLOUT_TIMEOUT (default 180s).
#
# The images must already be in a registry the nodes can pull from, or loaded into the
# nodes (build-images.sh --kind NAME).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KUBECTL=${KUBECTL:-kubectl}
KUSTOMIZATION=${FERRULE_KUSTOMIZATION:-$HERE}
TIMEOUT=${FERRULE_ROLLOUT_TIMEOUT:-180s}
NS=ferrule-system
DEPLOY=deploy/ferrule-control-plane
WEBHOOK=ferrule-sidecar-injector
KEK_SECRET=ferrule-ca-kek

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
k() { "$KUBECTL" "$@"; }

# The KEK: 32 random bytes, base64. Created once and never replaced: the CA keys in the
# control plane's database are sealed with it, and without it the control plane refuses
# to start. The value goes through a private temporary file, never a command line.
ensure_kek() {
  if k -n "$NS" get secret "$KEK_SECRET" >/dev/null 2>&1; then
    log "Secret $NS/$KEK_SECRET exists: kept"
    return
  fi
  log "creating Secret $NS/$KEK_SECRET (the CA key-encryption key; back it up with the state volume)"
  local tmp
  tmp=$(mktemp -d)
  (umask 077; head -c 32 /dev/urandom | base64 >"$tmp/kek")
  k -n "$NS" create secret generic "$KEK_SECRET" --from-file=kek="$tmp/kek" >/dev/null \
    || { rm -rf "$tmp"; die "could not create the Secret"; }
  rm -rf "$tmp"
  k -n "$NS" label secret "$KEK_SECRET" app.kubernetes.io/part-of=ferrule >/dev/null
}

# caBundle = the control plane's trust bundle (its CA roots), base64, read where the
# control plane writes it: /ferrulectl in the control-plane image reads
# /var/lib/ferrule/data/bundle.pem next to the admin socket and checks it holds only
# certificates.
set_ca_bundle() {
  log "setting the caBundle of MutatingWebhookConfiguration $WEBHOOK"
  local bundle
  bundle=$(k -n "$NS" exec "$DEPLOY" -c control-plane -- /ferrulectl webhook ca-bundle) \
    || die "could not read the trust bundle from the control plane"
  [[ $bundle =~ ^[A-Za-z0-9+/]+=*$ ]] || die "the trust bundle is not base64: ${bundle:0:40}..."
  k patch mutatingwebhookconfiguration "$WEBHOOK" --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$bundle\"}]" >/dev/null
  log "caBundle set: pods created in namespaces labelled ferrule.dev/inject=enabled now get the sidecar"
}

case ${1:-install} in
  install)
    log "namespace $NS"
    k apply -f "$HERE/namespace.yaml" >/dev/null
    ensure_kek
    log "kubectl apply -k $KUSTOMIZATION"
    k apply -k "$KUSTOMIZATION"
    log "waiting for the control plane (up to $TIMEOUT)"
    k -n "$NS" rollout status "$DEPLOY" --timeout="$TIMEOUT"
    set_ca_bundle
    log "health: kubectl -n $NS exec $DEPLOY -- /ferrulectl check"
    ;;
  ca-bundle) set_ca_bundle ;;
  -h|--help) sed -n '2,15p' "$0" ;;
  *) die "unknown command $1 (install, ca-bundle)" ;;
esac
