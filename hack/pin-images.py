#!/usr/bin/env python3
"""Pins the images the Tekton manifests name to their digests: `registry/repo:tag` becomes `registry/repo:tag@sha256:…`,
the digest the registry serves for that tag now (the manifest list's, for multi-platform images), read with the
Registry API v2 (anonymous bearer tokens, as docker pull gets them). The tag stays for people; the digest is what a
node pulls. Run it online, review the diff, commit:

    python3 hack/pin-images.py                 # print each image and its digest
    python3 hack/pin-images.py --write         # rewrite manifests/tekton/*.yaml in place
    python3 hack/pin-images.py --insecure 127.0.0.1:5000 --write FILE...   # plain HTTP for that registry

Exits non-zero, naming the image, when a tag cannot be resolved or is `latest`.
"""
import argparse
import glob
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

IMAGE = re.compile(r"(?P<ref>(?:[a-z0-9.-]+(?::[0-9]+)?/)[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?P<digest>@sha256:[0-9a-f]{64})?")
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
])


def split(ref):
    host, rest = ref.split("/", 1)
    repository, tag = rest.rsplit(":", 1)
    if host == "docker.io":
        host = "registry-1.docker.io"
        if "/" not in repository:
            repository = "library/" + repository
    return host, repository, tag


def digest(ref, insecure):
    host, repository, tag = split(ref)
    if tag == "latest":
        raise SystemExit(f"pin-images: {ref}: name a version, not latest")
    scheme = "http" if host in insecure else "https"
    url = f"{scheme}://{host}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                found = response.headers.get("Docker-Content-Digest")
                if not found or not re.fullmatch(r"sha256:[0-9a-f]{64}", found):
                    raise SystemExit(f"pin-images: {ref}: the registry sent no digest")
                return found
        except urllib.error.HTTPError as e:
            challenge = e.headers.get("WWW-Authenticate", "")
            if e.code != 401 or not challenge.lower().startswith("bearer ") or "Authorization" in headers:
                raise SystemExit(f"pin-images: {ref}: {e.code} {e.reason}")
            fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            query = {"service": fields.get("service", ""), "scope": fields.get("scope", f"repository:{repository}:pull")}
            with urllib.request.urlopen(fields["realm"] + "?" + urllib.parse.urlencode(query), timeout=30) as t:
                token = json.load(t)
            headers["Authorization"] = "Bearer " + (token.get("token") or token.get("access_token"))
    raise SystemExit(f"pin-images: {ref}: not resolved")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=sorted(glob.glob("manifests/tekton/*.yaml")))
    parser.add_argument("--write", action="store_true", help="rewrite the files with the digests")
    parser.add_argument("--insecure", action="append", default=[], help="a registry host:port reached over plain HTTP")
    args = parser.parse_args()
    cache = {}
    for path in args.files:
        with open(path) as f:
            text = f.read()

        def pin(match):
            ref = match.group("ref")
            if ref not in cache:
                cache[ref] = digest(ref, set(args.insecure))
                print(f"{ref}@{cache[ref]}" + ("" if match.group("digest") in (None, "@" + cache[ref]) else f"  (was {match.group('digest')[1:]})"))
            return f"{ref}@{cache[ref]}"

        pinned = IMAGE.sub(pin, text)
        if args.write and pinned != text:
            with open(path, "w") as f:
                f.write(pinned)


if __name__ == "__main__":
    main()
