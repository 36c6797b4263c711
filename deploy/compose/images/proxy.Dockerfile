# The sidecar: one static binary on an empty base image. uid 1337 is the uid
# `ferrule-proxy init` exempts from interception (transparent mode); explicit mode does
# not care, but one image serves both.
FROM scratch
COPY ferrule-proxy /ferrule-proxy
USER 1337:1337
ENTRYPOINT ["/ferrule-proxy"]
