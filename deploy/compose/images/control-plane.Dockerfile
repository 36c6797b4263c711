# The control plane: one static binary on an empty base image (no shell, no libc, no
# package manager). Built by deploy/compose/demo.sh from a context holding only the binary
# and an empty directory; `FROM scratch` is not an image, so nothing is ever pulled.
FROM scratch
COPY ferrule-control-plane /ferrule-control-plane
# Mount points for the named volumes, owned by the process user. Docker copies a mount
# point's owner and mode into an empty named volume the first time it is mounted, so the
# non-root control plane can create its 0700 data directory (/var/lib/ferrule/data) and
# write the trust bundle without a root init step.
COPY --chown=65532:65532 empty/ /var/lib/ferrule/
COPY --chown=65532:65532 empty/ /run/ferrule/bundle/
USER 65532:65532
ENTRYPOINT ["/ferrule-control-plane"]
