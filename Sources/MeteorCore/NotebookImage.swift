import Foundation
import KubeModels
import KubeRuntime

/// Publishing a notebook image to JupyterHub on Open Data Hub: an `image.openshift.io/v1` ImageStream labelled
/// `opendatahub.io/notebook-image: "true"` is what the spawner lists.
public enum NotebookImage {
    public static let imageStreamType = ResourceType(
        group: "image.openshift.io", version: "v1", kind: "ImageStream", plural: "imagestreams", namespaced: true)

    /// The ImageStream's name: `<meteor>-notebook` beside the Meteor; `<namespace>-<meteor>-notebook` in a shared
    /// namespace (Open Data Hub's), where Meteors of several namespaces publish.
    public static func name(_ meteor: Meteor, in namespace: String) -> String {
        let own = meteor.namespace ?? "default"
        return namespace == own ? "\(meteor.name)-notebook" : PipelineRunBuilder.boundedName("\(own)-\(meteor.name)", suffix: "-notebook")
    }

    /// The ImageStream for `image` in `namespace` (nil: the Meteor's). Beside the Meteor it is owned by it; in
    /// another namespace an ownerReference cannot reach, it carries the Meteor's namespace and uid as labels and
    /// the Meteor's finalizer deletes it.
    public static func imageStream(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?, namespace: String? = nil) -> JSONValue {
        let own = meteor.namespace ?? "default"
        let target = namespace ?? own
        let reference =
            digest.map { d in
                let repository = image.split(separator: "@").first.map(String.init) ?? image
                let withoutTag =
                    repository.range(of: ":", options: .backwards).flatMap { r in
                        repository[r.upperBound...].contains("/") ? nil : String(repository[..<r.lowerBound])
                    } ?? repository
                return "\(withoutTag)@\(d)"
            } ?? image
        var labels: JSONObject = [
            "opendatahub.io/notebook-image": "true", "opendatahub.io/dashboard": "true", MeteorLabels.meteor: .string(meteor.name),
            MeteorLabels.pipeline: "jupyterhub", MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
        ]
        var metadata: JSONObject = [
            "name": .string(name(meteor, in: target)),
            "namespace": .string(target),
            "annotations": [
                "opendatahub.io/notebook-image-name": .string("\(meteor.name) (Meteor)"),
                "opendatahub.io/notebook-image-desc": .string("Built by Meteor from \(meteor.spec.url) at \(meteor.spec.ref)"),
                "opendatahub.io/notebook-image-url": .string(meteor.spec.url),
                "opendatahub.io/notebook-image-creator": "meteor-operator",
            ],
        ]
        if target == own {
            if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        } else {
            labels[MeteorLabels.meteorNamespace] = .string(own)
            if let uid = meteor.metadata.uid { labels[MeteorLabels.meteorUID] = .string(uid) }
        }
        metadata["labels"] = .object(labels)
        let tag = "g\(meteor.metadata.generation ?? 1)"
        return [
            "apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": .object(metadata),
            "spec": [
                "lookupPolicy": ["local": true],
                "tags": [
                    [
                        "name": .string(tag),
                        "annotations": [
                            "openshift.io/imported-from": .string(reference), "opendatahub.io/notebook-build-commit": .string(meteor.spec.ref),
                        ],
                        "from": ["kind": "DockerImage", "name": .string(reference)],
                        "referencePolicy": ["type": "Local"],
                    ]
                ],
            ],
        ]
    }

    public static let roleBindingType = ResourceType(
        group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", namespaced: true)
    /// OpenShift's ClusterRole for pulling from a namespace's repositories of the internal registry.
    public static let imagePullerRole = "system:image-puller"
    /// Where OpenShift's internal registry is reached in the cluster (the builds' default `imageRepositoryPrefix`).
    public static let openShiftRegistryHost = "image-registry.openshift-image-registry.svc:5000"

    /// Whether the image lives in OpenShift's internal registry, under a namespace's repositories.
    public static func isInOpenShiftRegistry(_ image: String) -> Bool { image.hasPrefix(openShiftRegistryHost + "/") }

    /// Lets the ServiceAccounts of the namespace the ImageStream is in (Open Data Hub's: its spawner's and its
    /// notebooks') pull the image from the Meteor's namespace of the internal registry, where the build pushed it:
    /// `system:image-puller` bound in the Meteor's namespace to the group `system:serviceaccounts:<that namespace>`.
    /// Owned by the Meteor, so it goes with it.
    public static func imagePullerRoleBinding(_ meteor: Meteor, owner: JSONValue, pullersNamespace: String) -> JSONValue {
        var metadata: JSONObject = [
            "name": .string(PipelineRunBuilder.boundedName(meteor.name, suffix: "-notebook-image-puller")),
            "namespace": .string(meteor.namespace ?? "default"),
            "labels": [
                MeteorLabels.meteor: .string(meteor.name), MeteorLabels.pipeline: "jupyterhub",
                MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
            ],
        ]
        if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        return [
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": .object(metadata),
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(imagePullerRole)],
            "subjects": [["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": .string("system:serviceaccounts:\(pullersNamespace)")]],
        ]
    }
}
