# The control plane for Kubernetes: the control-plane binary plus ferrulectl, both static,
# on an empty base image (no shell, no libc, no package manager). ferrulectl is here so
# that an operator can administer the control plane where its admin socket is, with
# `kubectl exec`, as the control plane's own user:
#
#   kubectl exec -n ferrule-system deploy/ferrule-control-plane -- /ferrulectl check
#   kubectl exec -n ferrule-system deploy/ferrule-control-plane -- /ferrulectl webhook ca-bundle
#
# (FERRULE_ADMIN_SOCKET is set in the Deployment.) Built by deploy/kubernetes/build-images.sh
# from a context holding only the two binaries; `FROM scratch` pulls nothing.
FROM scratch
COPY ferrule-control-plane /ferrule-control-plane
COPY ferrulectl /ferrulectl
USER 65532:65532
ENTRYPOINT ["/ferrule-control-plane"]
