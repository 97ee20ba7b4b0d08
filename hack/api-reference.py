#!/usr/bin/env python3
"""Regenerates the Meteor API reference table in README.md (between the api-reference markers) from
crds/meteor.zone_meteors.yaml, so the README never disagrees with the CRD. A test checks it is current."""
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- api-reference:begin (hack/api-reference.py) -->", "<!-- api-reference:end -->"


def rows(schema, path):
    props = schema.get("properties", {})
    if schema.get("type") == "array" and "items" in schema:
        yield from rows(schema["items"], path + "[]")
        return
    required = set(schema.get("required", []))
    for name, sub in props.items():
        p = f"{path}.{name}"
        kind = sub.get("type", "object")
        if kind == "array":
            kind = f"[]{sub.get('items', {}).get('type', 'object')}"
        rules = []
        if name in required:
            rules.append("required")
        for key in ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "maxItems", "default"):
            if key in sub:
                value = sub[key]
                rules.append(f"{key} `{value}`" if key != "enum" else "one of " + ", ".join(f"`{v}`" for v in value))
            elif kind.startswith("[]") and key == "enum" and "enum" in sub.get("items", {}):
                rules.append("items one of " + ", ".join(f"`{v}`" for v in sub["items"]["enum"]))
        desc = " ".join(sub.get("description", "").split()).replace("|", "\\|")
        rule_text = "; ".join(rules).replace("|", "\\|")
        yield f"| `{p}` | {kind} | {desc} | {rule_text} |"
        if sub.get("properties") or (sub.get("type") == "array" and sub.get("items", {}).get("properties")):
            yield from rows(sub, p)


def table():
    crd = yaml.safe_load((ROOT / "crds" / "meteor.zone_meteors.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = ["| field | type | meaning | rules |", "| --- | --- | --- | --- |"]
    for top in ("spec", "status"):
        lines += list(rows(schema["properties"][top], top))
    return "\n".join(lines)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    updated = before + BEGIN + "\n" + table() + "\n" + END + after
    if "--check" in sys.argv:
        sys.exit(0 if updated == text else 1)
    readme.write_text(updated)
    print("README.md API reference regenerated")
