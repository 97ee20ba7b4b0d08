#!/usr/bin/env bash
# Installs the operator (config/default) with IMAGE on the current kubectl context: a kind cluster, a MicroShift
# device or any cluster with Tekton Pipelines (and, for edge delivery, Argo CD).
#
#   hack/deploy.sh IMAGE                    install on the current context
#   hack/deploy.sh --kind NAME IMAGE        load IMAGE into kind cluster NAME first, then install there
#   hack/deploy.sh --namespace NS IMAGE     also install the Tekton Pipelines/Tasks into NS (where Meteors live)
#   hack/deploy.sh --dry-run IMAGE          print what would be applied
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
kind="" namespace="" dry=""
while [ $# -gt 1 ]; do
  case "$1" in
    --kind) kind="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "hack/deploy.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: hack/deploy.sh [--kind NAME] [--namespace NS] [--dry-run] IMAGE" >&2; exit 2; }
image="$1"
name="${image%:*}" tag="${image##*:}"
if [ "$name" = "$image" ] || [[ "$tag" == */* ]]; then name="$image" tag="latest"; fi

overlay="$(mktemp -d "$repo/.deploy.XXXXXX")"
trap 'rm -rf "$overlay"' EXIT
cat > "$overlay/kustomization.yaml" <<YAML
resources:
  - ../config/default
images:
  - name: quay.io/thoth-station/meteor-operator
    newName: $name
    newTag: "$tag"
YAML

if [ -n "$dry" ]; then
  kubectl kustomize "$overlay"
  [ -z "$namespace" ] || kubectl kustomize manifests/tekton
  exit 0
fi
if [ -n "$kind" ]; then kind load docker-image "$image" --name "$kind"; fi
kubectl apply -k "$overlay"
if [ -n "$namespace" ]; then kubectl -n "$namespace" apply -k manifests/tekton; fi
kubectl -n meteor-operator-system rollout status deployment/meteor-operator --timeout=120s
