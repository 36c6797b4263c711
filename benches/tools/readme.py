#!/usr/bin/env python3
"""Fill benches/README.tmpl.md's <!-- TABLE:x --> markers with sections of results/latest.md
(so the README's tables are exactly the command's output), and <!-- TABLE:runs --> with RUNS_MD
(tools/compare.py's table of several runs), and <!-- TABLE:name --> with the file of a NAME=PATH
argument. Usage: readme.py TEMPLATE LATEST_MD OUT [RUNS_MD] [NAME=PATH...]"""
import re, sys

tmpl, latest, out = sys.argv[1:4]
extra = {}
for a in sys.argv[4:]:
    name, eq, path = a.partition("=")
    if eq:
        extra[name] = path
    elif "runs" not in extra:
        extra["runs"] = a
    else:
        sys.exit(f"readme.py: a second table without a name: {a}")
text = open(latest).read()
sections = {}
for block in re.split(r"(?m)^(?=## )", text):
    if block.startswith("## "):
        sections[block.splitlines()[0][3:].strip()] = block.rstrip() + "\n"
keys = {
    "headline": "Configuration × metric", "targets": "Targets", "idle": "Idle established",
    "cp": "Control plane", "propagate": "Policy propagation", "micro": "Micro-benchmarks",
    "physical": "Physical limits",
}
def section(k):
    if k in extra:
        return open(extra[k]).read()
    if k not in keys:
        sys.exit(f"readme.py: no table given for <!-- TABLE:{k} --> (pass {k}=PATH)")
    for title, body in sections.items():
        if title.startswith(keys[k]):
            return re.sub(r"(?m)^## ", "### ", body)
    return f"(no '{keys[k]}' section in {latest})\n"
res = re.sub(r"<!-- TABLE:(\w+) -->", lambda m: section(m.group(1)).rstrip(), open(tmpl).read())
open(out, "w").write(res)
