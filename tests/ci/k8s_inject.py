"""The example's pods through the real injection webhook, as the API server would send
them (run by tests/ci/k8s-validate.sh against a control plane it started).

For each Deployment in the given manifests, the pod its ReplicaSet would create (the
template, the namespace, a generateName and no name yet) goes to POST /inject in an
AdmissionReview v1 over TLS that trusts only the control plane's trust bundle (what
`caBundle` holds) and checks the name the API server checks
(ferrule-webhook.ferrule-system.svc). The JSON Patch in the answer is applied with an
RFC 6902 implementation independent of the webhook's, and the injected pod must then
pass the Kubernetes schemas strictly, carry the sidecar and the marker annotation, and
come back unchanged when sent again (idempotence).

Usage: k8s_inject.py BUNDLE_PEM HOST:PORT K8S_VERSION[,K8S_VERSION...] MANIFEST...
"""

import base64
import copy
import json
import socket
import ssl
import sys
import uuid

import kubernetes_validate.utils as kv
import yaml

SERVER_NAME = "ferrule-webhook.ferrule-system.svc"


def pointer(path):
    if path == "":
        return []
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def resolve(doc, parts):
    for p in parts:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc


def apply_patch(doc, ops):
    """RFC 6902 add, remove, replace, test, copy, move."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op["op"], pointer(op["path"])
        if kind == "test":
            assert resolve(doc, parts) == op["value"], f"test failed: {op}"
            continue
        if kind in ("copy", "move"):
            src = pointer(op["from"])
            value = copy.deepcopy(resolve(doc, src))
            if kind == "move":
                parent = resolve(doc, src[:-1])
                del parent[int(src[-1]) if isinstance(parent, list) else src[-1]]
        else:
            value = op.get("value")
        parent, last = resolve(doc, parts[:-1]), parts[-1] if parts else None
        if kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = value
            else:
                assert last in parent, f"replace of a missing member: {op}"
                parent[last] = value
        elif kind in ("add", "copy", "move"):
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), value)
            else:
                parent[last] = value
        else:
            raise AssertionError(f"unknown op {kind}")
    return doc


def post(address, bundle, body):
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=bundle)
    raw = socket.create_connection((host, int(port)), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        data = json.dumps(body).encode()
        tls.sendall(b"POST /inject HTTP/1.1\r\nHost: " + SERVER_NAME.encode() +
                    b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode()
    assert " 200 " in status + " ", f"webhook answered {status}: {payload[:300]!r}"
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", payload
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        payload = out
    return json.loads(payload)


def review(address, bundle, pod, namespace):
    uid = str(uuid.uuid4())
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    answer = post(address, bundle, {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk,
            "requestResource": gvr, "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert response["uid"] == uid, "the answer does not echo the request's uid"
    assert response["allowed"], f"refused: {response.get('status')}"
    if "patch" not in response:
        return pod, 0
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return apply_patch(pod, ops), len(ops)


def main():
    bundle, address, versions, *manifests = sys.argv[1:]
    versions = [kv.latest_version() if v == "latest" else v for v in versions.split(",")]
    problems = 0
    for path in manifests:
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != "Deployment":
                continue
            meta, template = doc["metadata"], doc["spec"]["template"]
            namespace = meta["namespace"]
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": dict(copy.deepcopy(template["metadata"]),
                                    generateName=f"{meta['name']}-", namespace=namespace),
                   "spec": copy.deepcopy(template["spec"])}
            injected, n_ops = review(address, bundle, pod, namespace)
            where = f"{path} {meta['name']}"
            init = {c["name"]: c for c in injected["spec"].get("initContainers", [])}
            checks = [
                (n_ops > 0, "no patch"),
                (injected["metadata"].get("annotations", {}).get("ferrule.dev/injected") == "true",
                 "no ferrule.dev/injected marker"),
                (init.get("ferrule-proxy", {}).get("restartPolicy") == "Always",
                 "no native ferrule-proxy sidecar"),
                ("ferrule-init" in init, "no ferrule-init container"),
                # The examples probe with exec, so no application port bypasses the proxy,
                # not even for the node (--probe-ports).
                (not {"--skip-inbound-ports", "--probe-ports"}
                 & set(init.get("ferrule-init", {}).get("args", [])),
                 "an inbound port bypasses the proxy (an httpGet/tcpSocket probe?)"),
                ([c["name"] for c in injected["spec"]["containers"]]
                 == [c["name"] for c in pod["spec"]["containers"]], "the app containers changed"),
            ]
            for ok, what in checks:
                if not ok:
                    print(f"ERROR {where}: {what}")
                    problems += 1
            for version in versions:
                try:
                    kv.validate(injected, version, strict=True)
                except kv.ValidationError as e:
                    print(f"ERROR {where}: injected pod, Kubernetes {version}: "
                          f"{'.'.join(map(str, e.path))}: {e.message}")
                    problems += 1
            again, n_again = review(address, bundle, injected, namespace)
            if n_again or again != injected:
                print(f"ERROR {where}: injecting an injected pod changed it ({n_again} ops)")
                problems += 1
            print(f"inject: {where}: {n_ops} patch operations; the injected pod is valid for "
                  f"Kubernetes {', '.join(versions)}; a second pass changes nothing")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
