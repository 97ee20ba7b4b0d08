#!/usr/bin/env python3
"""Regenerates the API reference tables in README.md (between each pair of api-reference markers) from the CRDs:
the Meteor's from crds/meteor.zone_meteors.yaml, the CustomRuntimeEnvironment's from
crds/meteor.zone_customruntimeenvironments.yaml, so the README never disagrees with them. A test checks they are
current."""
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLES = [
    ("meteor.zone_meteors.yaml", "<!-- api-reference:begin (hack/api-reference.py) -->", "<!-- api-reference:end -->"),
    (
        "meteor.zone_customruntimeenvironments.yaml",
        "<!-- api-reference:customruntimeenvironment:begin (hack/api-reference.py) -->",
        "<!-- api-reference:customruntimeenvironment:end -->",
    ),
]


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


def table(file):
    crd = yaml.safe_load((ROOT / "crds" / file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = ["| field | type | meaning | rules |", "| --- | --- | --- | --- |"]
    for top in ("spec", "status"):
        lines += list(rows(schema["properties"][top], top))
    return "\n".join(lines)


if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = readme.read_text()
    updated = text
    for file, begin, end in TABLES:
        before, rest = updated.split(begin, 1)
        _, after = rest.split(end, 1)
        updated = before + begin + "\n" + table(file) + "\n" + end + after
    if "--check" in sys.argv:
        sys.exit(0 if updated == text else 1)
    readme.write_text(updated)
    print("README.md API reference regenerated")
