import Foundation
import KubeModels
import KubeRuntime

/// Publishing a notebook image to JupyterHub on Open Data Hub: an `image.openshift.io/v1` ImageStream labelled
/// `opendatahub.io/notebook-image: "true"` is what the spawner lists.
public enum NotebookImage {
    public static let imageStreamType = ResourceType(group: "image.openshift.io", version: "v1", kind: "ImageStream", plural: "imagestreams", namespaced: true)

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
        let reference = digest.map { d in
            let repository = image.split(separator: "@").first.map(String.init) ?? image
            let withoutTag = repository.range(of: ":", options: .backwards).flatMap { r in repository[r.upperBound...].contains("/") ? nil : String(repository[..<r.lowerBound]) } ?? repository
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
                "tags": [[
                    "name": .string(tag),
                    "annotations": ["openshift.io/imported-from": .string(reference), "opendatahub.io/notebook-build-commit": .string(meteor.spec.ref)],
                    "from": ["kind": "DockerImage", "name": .string(reference)],
                    "referencePolicy": ["type": "Local"],
                ]],
            ],
        ]
    }
}
