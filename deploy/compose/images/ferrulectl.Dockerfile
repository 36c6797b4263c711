# ferrulectl: the admin CLI (the bootstrap step, as the control plane's user) and the demo
# applications (`demo serve`, `demo call`, as nobody). One static binary, empty base image.
FROM scratch
COPY ferrulectl /ferrulectl
USER 65534:65534
ENTRYPOINT ["/ferrulectl"]
