#!/usr/bin/env python3
"""Fill benches/README.tmpl.md's <!-- TABLE:x --> markers with sections of results/latest.md
(so the README's tables are exactly the command's output), and <!-- TABLE:runs --> with RUNS_MD
(tools/compare.py's table of several runs). Usage: readme.py TEMPLATE LATEST_MD OUT [RUNS_MD]"""
import re, sys

tmpl, latest, out = sys.argv[1:4]
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
    if k == "runs":
        return open(sys.argv[4]).read() if len(sys.argv) > 4 else "(no runs table given)\n"
    for title, body in sections.items():
        if title.startswith(keys[k]):
            return re.sub(r"(?m)^## ", "### ", body)
    return f"(no '{keys[k]}' section in {latest})\n"
res = re.sub(r"<!-- TABLE:(\w+) -->", lambda m: section(m.group(1)).rstrip(), open(tmpl).read())
open(out, "w").write(res)
