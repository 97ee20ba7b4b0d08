import Foundation
import KubeModels
import KubeRuntime

/// Publishing a notebook image to JupyterHub on Open Data Hub: an `image.openshift.io/v1` ImageStream labelled
/// `opendatahub.io/notebook-image: "true"` is what the spawner lists.
public enum NotebookImage {
    public static let imageStreamType = ResourceType(group: "image.openshift.io", version: "v1", kind: "ImageStream", plural: "imagestreams", namespaced: true)

    public static func imageStream(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?) -> JSONValue {
        let reference = digest.map { d in
            let repository = image.split(separator: "@").first.map(String.init) ?? image
            let withoutTag = repository.range(of: ":", options: .backwards).flatMap { r in repository[r.upperBound...].contains("/") ? nil : String(repository[..<r.lowerBound]) } ?? repository
            return "\(withoutTag)@\(d)"
        } ?? image
        var metadata: JSONObject = [
            "name": .string("\(meteor.name)-notebook"),
            "namespace": .string(meteor.namespace ?? "default"),
            "labels": [
                "opendatahub.io/notebook-image": "true", MeteorLabels.meteor: .string(meteor.name),
                MeteorLabels.pipeline: "jupyterhub", MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
            ],
            "annotations": [
                "opendatahub.io/notebook-image-name": .string("\(meteor.name) (Meteor)"),
                "opendatahub.io/notebook-image-desc": .string("Built by Meteor from \(meteor.spec.url) at \(meteor.spec.ref)"),
                "opendatahub.io/notebook-image-url": .string(meteor.spec.url),
            ],
        ]
        if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        return [
            "apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": .object(metadata),
            "spec": [
                "lookupPolicy": ["local": true],
                "tags": [["name": .string("g\(meteor.metadata.generation ?? 1)"), "from": ["kind": "DockerImage", "name": .string(reference)], "referencePolicy": ["type": "Local"]]],
            ],
        ]
    }
}
