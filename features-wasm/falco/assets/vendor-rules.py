#!/usr/bin/env python3
"""Regenerate the vendored Falco rule files of this directory from a clone of
falcosecurity/rules (https://github.com/falcosecurity/rules):

    python3 vendor-rules.py /path/to/falcosecurity/rules

- falco-incubating_rules.yaml: the incubating rules in INCUBATING_RULES with
  every macro and list they use that the stable file does not define, copied
  unchanged (entries in the order of the upstream file).
- falco_rules.names: the rule names of the stable falco_rules.yaml that the
  Falco image ships, one per line: what the feature's tests treat as loaded
  by `/etc/falco/falco_rules.yaml`.
"""
import re
import subprocess
import sys

import yaml

STABLE_TAG = "falco-rules-4.0.0"  # shipped in the Falco 0.41 image
INCUBATING_TAG = "falco-incubating-rules-5.0.1"  # same engine (0.50.0)
INCUBATING_RULES = ["Schedule Cron Jobs", "Change thread namespace"]


def show(repo, tag, path):
    return subprocess.check_output(["git", "-C", repo, "show", f"{tag}:{path}"]).decode()


def entries(text):
    """Top-level YAML list entries as (kind, name, verbatim text)."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("- ")]
    out = []
    for j, start in enumerate(starts):
        block = lines[start : starts[j + 1] if j + 1 < len(starts) else len(lines)]
        while block and (not block[-1].strip() or block[-1].startswith("#")):
            block.pop()
        m = re.match(r"- (macro|list|rule): (.*)", block[0])
        if m:
            out.append((m.group(1), m.group(2).strip(), "\n".join(block)))
    return out


def main(repo):
    stable = yaml.safe_load(show(repo, STABLE_TAG, "rules/falco_rules.yaml"))
    incubating_text = show(repo, INCUBATING_TAG, "rules/falco-incubating_rules.yaml")
    incubating = entries(incubating_text)
    stable_defs = {e.get("macro") or e.get("list") for e in stable if "macro" in e or "list" in e}
    defs = {name: text for kind, name, text in incubating if kind in ("macro", "list")}
    conditions = {name: yaml.safe_load(text)[0] for name, text in defs.items()}
    needed, seen = set(), set()

    def visit(condition):
        for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", condition):
            if token in seen or token in stable_defs or token not in defs:
                continue
            seen.add(token)
            needed.add(token)
            entry = conditions[token]
            visit(entry.get("condition") or " ".join(map(str, entry.get("items", []))))

    rules = {name: text for kind, name, text in incubating if kind == "rule" and name in INCUBATING_RULES}
    for name in INCUBATING_RULES:
        visit(yaml.safe_load(rules[name])[0]["condition"])
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", f"{INCUBATING_TAG}^{{commit}}"]).decode().strip()
    header = f"""# Incubating Falco rules that the MITRE scenarios of test/scenarios need,
# with every macro and list they use that falco_rules.yaml does not define.
# Copied unchanged from falcosecurity/rules, rules/falco-incubating_rules.yaml
# at tag {INCUBATING_TAG} (commit {commit}),
# the incubating release for the same engine (0.50.0) as {STABLE_TAG},
# which the Falco 0.41 image ships. Apache License 2.0, Copyright (C) 2023
# The Falco Authors. Loaded after /etc/falco/falco_rules.yaml, whose macros
# (open_write, spawned_process, container, proc_name_exists, never_true,
# docker_binaries) these use. Regenerate: see features-wasm/falco/assets/vendor-rules.py.
"""
    body = [text for kind, name, text in incubating if kind in ("macro", "list") and name in needed]
    body += [text for kind, name, text in incubating if kind == "rule" and name in INCUBATING_RULES]
    with open("falco-incubating_rules.yaml", "w") as f:
        f.write(header + "\n" + "\n\n".join(body) + "\n")
    stable_commit = subprocess.check_output(["git", "-C", repo, "rev-parse", f"{STABLE_TAG}^{{commit}}"]).decode().strip()
    with open("falco_rules.names", "w") as f:
        f.write(f"# Rule names of falcosecurity/rules rules/falco_rules.yaml at {STABLE_TAG} ({stable_commit}),\n")
        f.write("# the stable rules file of the Falco 0.41 image. Regenerate with vendor-rules.py.\n")
        for e in stable:
            if "rule" in e:
                f.write(e["rule"] + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
