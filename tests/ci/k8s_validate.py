"""Validates deploy/kubernetes without a cluster (run by tests/ci/k8s-validate.sh).

Every YAML document under deploy/kubernetes is checked, none is skipped:

* built-in kinds against the Kubernetes OpenAPI schemas of kubernetes-validate, strict
  (unknown fields are errors, as with `kubectl apply`'s default server-side field
  validation), for each requested Kubernetes version;
* the CRD against apiextensions.k8s.io/v1, plus the structural-schema rules the API
  server enforces on it (which no JSON schema expresses);
* AuthorizationPolicy resources against the CRD's own openAPIV3Schema, with unknown
  fields refused;
* every kustomization.yaml: each resource exists, and no manifest in its directory is
  forgotten.

It also checks the CRD schema against policy fixtures (tests/ci/k8s-fixtures): the valid
ones must pass it, the invalid ones must fail it. Whether the policy engine agrees is
checked by the shell script with the real ferrulectl (it writes the documents this
script extracts with --engine-documents).

Usage: k8s_validate.py ROOT --k8s-version V|latest [--k8s-version ...] [--rendered FILE ...]
                        [--control-plane-help FILE]
       k8s_validate.py ROOT --engine-documents OUT_VALID OUT_INVALID
"""

import argparse
import copy
import os
import re
import sys

import jsonschema
import kubernetes_validate.utils as kv
import yaml

BASE = "deploy/kubernetes"
CRD_FILE = "deploy/kubernetes/crd-authorizationpolicies.yaml"
FIXTURES = "tests/ci/k8s-fixtures"
POLICY_GROUP = "ferrule.dev"
# Manifests kept next to a kustomization on purpose without being one of its resources.
NOT_IN_KUSTOMIZATION = {"deploy/kubernetes/examples/deny-web.yaml"}
# Keys a structural schema must not set inside allOf/anyOf/oneOf/not.
JUNCTOR_FORBIDDEN = {"type", "description", "default", "additionalProperties", "nullable"}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(root):
    out = []
    for dirpath, _, names in os.walk(os.path.join(root, BASE)):
        for n in sorted(names):
            if n.endswith((".yaml", ".yml")):
                out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def crd_schema(root):
    (crd,) = load_documents(os.path.join(root, CRD_FILE))
    (version,) = crd["spec"]["versions"]
    return crd, version["schema"]["openAPIV3Schema"]


def closed(schema):
    """The schema with unknown fields refused, as kubectl's strict field validation does
    (the API server would otherwise prune them silently)."""
    s = copy.deepcopy(schema)

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if "properties" in node and path != ("metadata",) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key, child in node.get("properties", {}).items():
            walk(child, path + (key,))
        if "items" in node:
            walk(node["items"], path + ("[]",))

    walk(s, ())
    return s


def structural_problems(schema, where, problems, path="", in_junctor=False):
    """The API server's structural-schema rules, enough to catch what would make it refuse
    the CRD: every node has a type (outside junctors), junctors carry only value
    validations, properties and additionalProperties are exclusive, and metadata is only
    restricted in name/generateName."""
    if not isinstance(schema, dict):
        return
    here = f"{where} {path or '/'}"
    if in_junctor:
        bad = JUNCTOR_FORBIDDEN & schema.keys()
        if bad:
            problems.add(here, f"{sorted(bad)} inside allOf/anyOf/oneOf/not")
    elif "type" not in schema and not schema.get("x-kubernetes-int-or-string") \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.add(here, "no type (structural schemas need one on every node)")
    if "properties" in schema and "additionalProperties" in schema:
        problems.add(here, "properties and additionalProperties together")
    if path == "/properties/metadata":
        extra = set(schema.get("properties", {})) - {"name", "generateName"}
        if extra or set(schema) - {"type", "properties", "description"}:
            problems.add(here, "metadata may only restrict name and generateName")
    for key, child in schema.get("properties", {}).items():
        structural_problems(child, where, problems, f"{path}/properties/{key}", in_junctor)
    if "items" in schema:
        structural_problems(schema["items"], where, problems, f"{path}/items", in_junctor)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, child in enumerate(schema.get(junctor, [])):
            structural_problems(child, where, problems, f"{path}/{junctor}/{i}", True)
    if "not" in schema:
        structural_problems(schema["not"], where, problems, f"{path}/not", True)
    if "enum" in schema and schema.get("type") and not in_junctor:
        kind = {"string": str, "boolean": bool, "integer": int}.get(schema["type"])
        if kind and not all(isinstance(v, kind) for v in schema["enum"]):
            problems.add(here, f"enum values are not all {schema['type']}")


def schema_errors(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))


def check_builtin(doc, where, versions, problems):
    for version in versions:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.add(where, f"Kubernetes {version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            # Fail closed: a kind nobody validates is an error, not a warning.
            problems.add(where, e.message)


def check_kustomization(root, path, problems):
    (k,) = load_documents(os.path.join(root, path))
    d = os.path.dirname(path)
    listed = set()
    for r in k.get("resources", []):
        target = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(os.path.join(root, target)):
            continue
        listed.add(target)
        if not os.path.isfile(os.path.join(root, target)):
            problems.add(path, f"resource {r} does not exist")
    for name in sorted(os.listdir(os.path.join(root, d))):
        f = os.path.join(d, name)
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" \
                and f not in listed and f not in NOT_IN_KUSTOMIZATION:
            problems.add(path, f"{name} is in the directory but not in resources")


def validate_tree(root, versions, rendered):
    problems = Problems()
    crd, schema = crd_schema(root)
    structural_problems(schema, CRD_FILE, problems)
    policy_validator = jsonschema.Draft202012Validator(closed(schema))
    counts = {"builtin": 0, "policy": 0}

    def check(doc, where):
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            problems.add(where, "not a Kubernetes object (no apiVersion/kind)")
            return
        name = doc.get("metadata", {}).get("name", "?")
        here = f"{where} {doc['kind']}/{name}"
        if doc["apiVersion"].split("/")[0] == POLICY_GROUP:
            if doc["apiVersion"] != f"{POLICY_GROUP}/v1alpha1" or doc["kind"] != "AuthorizationPolicy":
                problems.add(here, "unknown ferrule.dev kind or version")
            for e in schema_errors(policy_validator, doc):
                problems.add(here, f"{'.'.join(map(str, e.absolute_path))}: {e.message}")
            counts["policy"] += 1
        else:
            check_builtin(doc, here, versions, problems)
            counts["builtin"] += 1

    for path in yaml_files(root):
        if os.path.basename(path) == "kustomization.yaml":
            check_kustomization(root, path, problems)
            continue
        for doc in load_documents(os.path.join(root, path)):
            check(doc, path)
    for path in rendered:
        for doc in load_documents(path):
            check(doc, f"rendered:{os.path.basename(path)}")

    # The CRD schema against the fixtures: never stricter than the engine on what it
    # accepts, and not vacuous either.
    valid, invalid = fixtures(root)
    for where, doc in valid:
        for e in schema_errors(policy_validator, doc):
            problems.add(where, f"valid fixture refused by the CRD schema: "
                                f"{'.'.join(map(str, e.absolute_path))}: {e.message}")
    for where, doc in invalid:
        if not schema_errors(policy_validator, doc):
            problems.add(where, "invalid fixture accepted by the CRD schema")

    for p in problems.items:
        print(f"ERROR {p}")
    print(f"k8s_validate: {counts['builtin']} built-in objects x {len(versions)} Kubernetes "
          f"versions, {counts['policy']} AuthorizationPolicy resources, {len(valid)} valid and "
          f"{len(invalid)} invalid policy fixtures: {len(problems.items)} problems")
    return 1 if problems.items else 0


def workspace_version(root):
    in_section = False
    with open(os.path.join(root, "Cargo.toml")) as f:
        for line in f:
            if line.startswith("["):
                in_section = line.strip() == "[workspace.package]"
            elif in_section and line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("no [workspace.package] version in Cargo.toml")


def check_flags(root, help_file):
    """The Deployment's flags and FERRULE_* variables exist in this control plane (so a
    renamed flag fails here, not as a crash loop in a cluster), and the image tags are
    the workspace version (the tag the binary injects by default)."""
    problems = Problems()
    with open(help_file) as f:
        help_text = f.read()
    flags = set(re.findall(r"(?m)^\s*(?:-\w, )?(--[a-z0-9-]+)", help_text))
    variables = set(re.findall(r"\[env: ([A-Z0-9_]+)=", help_text))
    if not flags or not variables:
        raise SystemExit(f"{help_file}: no flags or variables found in the help text")
    (deploy, _pvc) = load_documents(os.path.join(root, BASE, "control-plane.yaml"))
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    where = f"{BASE}/control-plane.yaml"
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        if flag not in flags:
            problems.add(where, f"{flag}: not a flag of ferrule-control-plane --help")
    (kustomization,) = load_documents(os.path.join(root, BASE, "kustomization.yaml"))
    names = [e["name"] for e in container.get("env", [])]
    for generator in kustomization.get("configMapGenerator", []):
        names += [lit.split("=", 1)[0] for lit in generator.get("literals", [])]
    for name in names:
        if name.startswith("FERRULE_") and name not in variables:
            problems.add(where, f"{name}: no flag of ferrule-control-plane reads it")
        elif not name.startswith("FERRULE_") and name != "RUST_LOG":
            problems.add(where, f"{name}: not a FERRULE_ variable")
    version = workspace_version(root)
    tags = [(f"{BASE}/kustomization.yaml images", i["newTag"]) for i in kustomization["images"]]
    tags.append((where, container["image"].rsplit(":", 1)[1]))
    for generator in kustomization.get("configMapGenerator", []):
        for lit in generator.get("literals", []):
            if lit.startswith("FERRULE_INJECT_PROXY_IMAGE="):
                tags.append(("FERRULE_INJECT_PROXY_IMAGE", lit.rsplit(":", 1)[1]))
    (examples,) = load_documents(os.path.join(root, BASE, "examples/kustomization.yaml"))
    tags += [("examples/kustomization.yaml images", i["newTag"]) for i in examples["images"]]
    for what, tag in tags:
        if tag != version:
            problems.add(what, f"image tag {tag} is not the workspace version {version}")
    for p in problems.items:
        print(f"ERROR {p}")
    print(f"k8s_validate: {len(container['args'])} flags, {len(names)} variables, {len(tags)} "
          f"image tags checked against ferrule-control-plane {version}: {len(problems.items)} problems")
    return 1 if problems.items else 0


def api_calls(root):
    """(group, resource, verbs) the control plane's source asks of the API server: the
    watched collections (`const PATH` in kubernetes/watch/, list+watch) and the
    TokenReview POST (create); plus any other API path literal in non-test code, with
    no verb known (it must be covered by some rule)."""
    calls = []
    src = os.path.join(root, "control-plane/src")
    literal = re.compile(r'"(/apis?/[a-z0-9./-]+)[?"]')
    for dirpath, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs") or n == "tests.rs" or "/tests" in dirpath:
                continue
            text = open(os.path.join(dirpath, n)).read()
            text = text.split("#[cfg(test)]")[0]
            for line in text.splitlines():
                if line.lstrip().startswith("//"):
                    continue
                for path in literal.findall(line):
                    parts = path.strip("/").split("/")
                    if parts[0] == "api" and len(parts) == 3:
                        group, resource = "", parts[2]
                    elif parts[0] == "apis" and len(parts) == 4:
                        group, resource = parts[1], parts[3]
                    else:
                        continue
                    if "const PATH" in line:
                        verbs = {"list", "watch"}
                    elif "TOKEN_REVIEW_PATH" in line:
                        verbs = {"create"}
                    else:
                        verbs = set()
                    calls.append((group, resource, verbs, f"{os.path.relpath(dirpath, root)}/{n}"))
    return calls


def check_rbac(root):
    """The ClusterRole grants what the code uses and nothing it does not: every API
    path in the source is covered, and every rule is used by some path."""
    problems = Problems()
    docs = load_documents(os.path.join(root, BASE, "rbac.yaml"))
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    rules = [(g, r, set(rule["verbs"])) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]]
    calls = api_calls(root)
    if not calls:
        problems.add("control-plane/src", "no Kubernetes API paths found (has the code moved?)")
    for group, resource, verbs, where in calls:
        granted = set().union(*[v for g, r, v in rules if g == group and r == resource])
        if not granted or not verbs <= granted:
            problems.add(where, f"uses {group or 'core'}/{resource} {sorted(verbs) or ''}, "
                                f"rbac.yaml grants {sorted(granted)}")
    for group, resource, verbs in rules:
        if not any(g == group and r == resource for g, r, _, _ in calls):
            problems.add(f"{BASE}/rbac.yaml", f"grants {group or 'core'}/{resource} that no code uses")
    for p in problems.items:
        print(f"ERROR {p}")
    print(f"k8s_validate: RBAC against {len(calls)} API paths in control-plane/src: "
          f"{len(problems.items)} problems")
    return 1 if problems.items else 0


def as_resource(doc, namespace="ferrule-demo"):
    """A policy document as an AuthorizationPolicy resource (what kubectl would send)."""
    return {
        "apiVersion": doc["apiVersion"],
        "kind": doc["kind"],
        "metadata": {"name": doc["metadata"]["name"], "namespace": namespace},
        "spec": doc["spec"],
    }


def fixtures(root):
    """(where, resource) pairs: valid ones (the fixtures, the compose demo's policy
    documents, the example resources) and invalid ones."""
    valid, invalid = [], []
    for i, doc in enumerate(load_documents(os.path.join(root, FIXTURES, "policies-valid.yaml"))):
        valid.append((f"{FIXTURES}/policies-valid.yaml document {i} ({doc['metadata']['name']})", doc))
    compose = os.path.join(root, "deploy/compose/policies")
    for name in sorted(os.listdir(compose)):
        for doc in load_documents(os.path.join(compose, name)):
            valid.append((f"deploy/compose/policies/{name}", as_resource(doc)))
    for path in yaml_files(root):
        for doc in load_documents(os.path.join(root, path)):
            if isinstance(doc, dict) and doc.get("kind") == "AuthorizationPolicy":
                valid.append((path, doc))
    for i, doc in enumerate(load_documents(os.path.join(root, FIXTURES, "policies-invalid.yaml"))):
        invalid.append((f"{FIXTURES}/policies-invalid.yaml document {i} ({doc['metadata']['name']})", doc))
    return valid, invalid


def engine_documents(root, out_valid, out_invalid):
    """Writes the fixtures as policy documents for `ferrulectl validate`, the way the
    control plane turns a resource into a document (apiVersion, kind, name, spec): the
    valid ones as one stream, renamed fixture-N since names must be unique in a stream
    (the examples reuse the compose demo's names), the invalid ones one per file
    (OUT_INVALID.N) with their own names, since a name can be what is wrong."""
    valid, invalid = fixtures(root)

    def document(doc, name):
        return {"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                "metadata": {"name": name}, "spec": doc["spec"]}

    with open(out_valid, "w") as f:
        yaml.safe_dump_all([document(d, f"fixture-{i}") for i, (_, d) in enumerate(valid)], f)
    for i, (where, doc) in enumerate(invalid):
        with open(f"{out_invalid}.{i}", "w") as f:
            f.write(f"# {where}\n")
            yaml.safe_dump(document(doc, doc["metadata"]["name"]), f)
    print(len(invalid))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--k8s-version", action="append", default=[])
    ap.add_argument("--rendered", action="append", default=[])
    ap.add_argument("--engine-documents", nargs=2, metavar=("OUT_VALID", "OUT_INVALID"))
    ap.add_argument("--control-plane-help", metavar="FILE",
                    help="`ferrule-control-plane --help` output: check the manifests' flags")
    args = ap.parse_args()
    if args.engine_documents:
        return engine_documents(args.root, *args.engine_documents)
    if not args.k8s_version:
        ap.error("give at least one --k8s-version")
    versions = [kv.latest_version() if v == "latest" else v for v in args.k8s_version]
    code = validate_tree(args.root, versions, args.rendered)
    if args.control_plane_help:
        code |= check_flags(args.root, args.control_plane_help)
    code |= check_rbac(args.root)
    return code


if __name__ == "__main__":
    sys.exit(main())
