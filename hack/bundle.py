#!/usr/bin/env python3
"""Generates bundle/, the operator's OLM bundle (registry+v1), from config/: the ClusterServiceVersion with the owned
CRDs, the ServiceAccount's permissions, the Deployment, install modes, icon and descriptions, `alm-examples` from
config/samples; the CRDs and the other objects OLM can install as manifests; metadata/annotations.yaml.

    python3 hack/bundle.py            # write bundle/
    python3 hack/bundle.py --check    # exit 1, naming the file, when bundle/ is not what config/ makes

What a bundle cannot carry is said in the CSV's description: Roles in other namespaces (Argo CD's) ship as
ClusterRoles of the same rules, for the cluster admin to bind there.
"""
import argparse
import base64
import json
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "meteor-operator"
VERSION = "0.1.0"
CHANNEL = "alpha"


def render(directory):
    """config/ as kustomize renders it: resources in order, directories recursed."""
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    out = []
    for entry in kustomization.get("resources", []):
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            out += render(path)
        else:
            with open(path) as f:
                out += [d for d in yaml.safe_load_all(f) if d]
    return out


def image():
    with open(os.path.join(ROOT, "config/default/kustomization.yaml")) as f:
        images = yaml.safe_load(f).get("images", [])
    for i in images:
        if i["name"] == "quay.io/thoth-station/meteor-operator":
            return f"{i.get('newName', i['name'])}:{i.get('newTag', 'latest')}"
    return "quay.io/thoth-station/meteor-operator:latest"


def strip_namespace(doc):
    doc = json.loads(json.dumps(doc))
    doc.get("metadata", {}).pop("namespace", None)
    return doc


def bound_to(binding, account, namespace):
    return any(s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace", namespace) == namespace
               for s in binding.get("subjects", []))


def bundle():
    docs = render(os.path.join(ROOT, "config/default"))
    samples = render(os.path.join(ROOT, "config/samples"))
    by_kind = lambda kind: [d for d in docs if d.get("kind") == kind]
    account = by_kind("ServiceAccount")[0]
    sa, home = account["metadata"]["name"], account["metadata"]["namespace"]
    cluster_roles = {r["metadata"]["name"]: r for r in by_kind("ClusterRole")}
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind("Role")}

    cluster_permissions, permissions, manifests, elsewhere = [], [], {}, []
    bound_cluster_roles = set()
    for b in by_kind("ClusterRoleBinding"):
        if bound_to(b, sa, home) and b["roleRef"]["kind"] == "ClusterRole":
            bound_cluster_roles.add(b["roleRef"]["name"])
            cluster_permissions.append({"serviceAccountName": sa, "rules": cluster_roles[b["roleRef"]["name"]]["rules"]})
    for b in by_kind("RoleBinding"):
        ns = b["metadata"]["namespace"]
        if not bound_to(b, sa, home) or b["roleRef"]["kind"] != "Role":
            continue
        role = roles[(ns, b["roleRef"]["name"])]
        if ns == home:
            permissions.append({"serviceAccountName": sa, "rules": role["rules"]})
        else:
            # OLM installs a bundle's objects in the operator's namespace only: the rules ship as a ClusterRole.
            cr = strip_namespace(role)
            cr["kind"] = "ClusterRole"
            manifests[f"{cr['metadata']['name']}_rbac.authorization.k8s.io_v1_clusterrole.yaml"] = cr
            elsewhere.append((ns, cr["metadata"]["name"]))
    for name, role in cluster_roles.items():
        if name not in bound_cluster_roles:
            manifests[f"{name}_rbac.authorization.k8s.io_v1_clusterrole.yaml"] = strip_namespace(role)
    for service in by_kind("Service"):
        manifests[f"{service['metadata']['name']}_v1_service.yaml"] = strip_namespace(service)

    owned = []
    for crd in by_kind("CustomResourceDefinition"):
        spec = crd["spec"]
        manifests[f"{spec['group']}_{spec['names']['plural']}.yaml"] = crd
        for v in spec["versions"]:
            if v.get("served"):
                owned.append({
                    "name": crd["metadata"]["name"], "version": v["name"], "kind": spec["names"]["kind"],
                    "displayName": spec["names"]["kind"],
                    "description": v.get("schema", {}).get("openAPIV3Schema", {}).get("description", spec["names"]["kind"]),
                })

    deployment = by_kind("Deployment")[0]
    spec = json.loads(json.dumps(deployment["spec"]))
    for c in spec["template"]["spec"]["containers"]:
        if c["image"].split(":")[0].split("@")[0] == "quay.io/thoth-station/meteor-operator":
            c["image"] = image()
    with open(os.path.join(ROOT, "config/manifests/icon.svg"), "rb") as f:
        icon = base64.b64encode(f.read()).decode()
    description = (
        "Meteor turns a git repository into running things: a JupyterBook site, a JupyterHub notebook image listed in "
        "Open Data Hub, and for edge projects signed per-architecture images that Argo CD deploys, pinned by digest, "
        "to MicroShift devices. Describe a repository with one Meteor; its status says what was built and where.\n\n"
        "Edge delivery needs Argo CD. OLM installs objects in the operator's namespace only: bind these ClusterRoles "
        "with a RoleBinding to the meteor-operator ServiceAccount in the namespaces named: "
        + ", ".join(f"{name} in {ns}" for ns, name in elsewhere) + "."
    )
    csv = {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{VERSION}",
            "annotations": {
                "alm-examples": json.dumps(samples, indent=2),
                "capabilities": "Basic Install",
                "categories": "AI/Machine Learning, Developer Tools",
                "containerImage": image(),
                "description": "Builds JupyterBooks, notebook images and signed edge images from git repositories.",
                "repository": "https://github.com/thoth-station/meteor-operator",
                "operators.operatorframework.io/builder": "hack/bundle.py",
            },
        },
        "spec": {
            "displayName": "Meteor",
            "description": description,
            "version": VERSION,
            "maturity": CHANNEL,
            "provider": {"name": "Meteor"},
            "keywords": ["jupyter", "jupyterbook", "notebook", "tekton", "argocd", "edge", "opendatahub"],
            "links": [{"name": "Source", "url": "https://github.com/thoth-station/meteor-operator"}],
            "maintainers": [{"name": "Meteor", "email": "meteor@thoth-station.ninja"}],
            "icon": [{"base64data": icon, "mediatype": "image/svg+xml"}],
            "minKubeVersion": "1.27.0",
            # The operator watches every namespace (its Deployment passes no --namespace).
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {"owned": owned},
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": cluster_permissions,
                    "permissions": permissions,
                    "deployments": [{"name": deployment["metadata"]["name"], "label": deployment["metadata"].get("labels", {}), "spec": spec}],
                },
            },
        },
    }
    manifests[f"{PACKAGE}.clusterserviceversion.yaml"] = csv
    annotations = {"annotations": {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
    }}
    files = {f"manifests/{name}": doc for name, doc in manifests.items()}
    files["metadata/annotations.yaml"] = annotations
    header = "# Generated by hack/bundle.py from config/: edit config/ and run it again.\n"
    return {path: header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120) for path, doc in sorted(files.items())}


class Dumper(yaml.SafeDumper):
    """Multi-line strings (alm-examples, the description) as literal blocks."""


Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with bundle/ instead of writing it")
    args = parser.parse_args()
    out = os.path.join(ROOT, "bundle")
    files = bundle()
    existing = set()
    for d, _, names in os.walk(out):
        existing |= {os.path.relpath(os.path.join(d, n), out) for n in names}
    if args.check:
        for path, text in files.items():
            try:
                with open(os.path.join(out, path)) as f:
                    if f.read() != text:
                        sys.exit(f"bundle/{path} is not what config/ makes: run python3 hack/bundle.py")
            except FileNotFoundError:
                sys.exit(f"bundle/{path} is missing: run python3 hack/bundle.py")
        for extra in sorted(existing - set(files)):
            sys.exit(f"bundle/{extra} is not made from config/: run python3 hack/bundle.py")
        return
    for extra in existing - set(files):
        os.remove(os.path.join(out, extra))
    for path, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(out, path)), exist_ok=True)
        with open(os.path.join(out, path), "w") as f:
            f.write(text)
    print(f"wrote {len(files)} files to bundle/")


if __name__ == "__main__":
    main()
