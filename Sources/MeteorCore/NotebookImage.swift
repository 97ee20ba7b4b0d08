import Foundation
import KubeModels
import KubeRuntime

/// Publishing a notebook image to JupyterHub on Open Data Hub: an `image.openshift.io/v1` ImageStream labelled
/// `opendatahub.io/notebook-image: "true"` is what the spawner lists.
public enum NotebookImage {
    public static let imageStreamType = ResourceType(
        group: "image.openshift.io", version: "v1", kind: "ImageStream", plural: "imagestreams", namespaced: true)

    /// What an ImageStream lists and who made it: a Meteor's jupyterhub build or a CustomRuntimeEnvironment. One
    /// implementation for both, so Open Data Hub shows them alike.
    public struct Source: Sendable {
        /// The owner's kind, name, namespace and uid.
        public var kind: String
        public var name: String
        public var namespace: String
        public var uid: String?
        /// The label on the ImageStream naming its owner (`meteor.zone/meteor`, `meteor.zone/runtime-environment`).
        public var ownerLabel: String
        /// The pipeline label (`jupyterhub`, `package-list` …).
        public var build: String
        /// Spawner display name and description.
        public var displayName: String
        public var description: String
        /// The repository (or image) it came from, and the ref or commit built.
        public var origin: String
        public var ref: String
        /// The ImageStream's name beside its owner; in a shared namespace the owner's namespace is put in front.
        public var streamName: String
        /// The tag the image is listed under (`g<generation>`).
        public var tag: String

        /// A Meteor's notebook image.
        public init(meteor: Meteor) {
            kind = Meteor.resourceType.kind
            name = meteor.name
            namespace = meteor.namespace ?? "default"
            uid = meteor.metadata.uid
            ownerLabel = MeteorLabels.meteor
            build = Pipeline.jupyterhub.rawValue
            displayName = "\(meteor.name) (Meteor)"
            description = "Built by Meteor from \(meteor.spec.url) at \(meteor.spec.ref)"
            origin = meteor.spec.url
            ref = meteor.status?.commit ?? meteor.spec.ref
            streamName = "\(meteor.name)-notebook"
            tag = "g\(meteor.metadata.generation ?? 1)"
        }

        public init(
            kind: String, name: String, namespace: String, uid: String?, ownerLabel: String, build: String, displayName: String,
            description: String, origin: String, ref: String, streamName: String, tag: String
        ) {
            self.kind = kind
            self.name = name
            self.namespace = namespace
            self.uid = uid
            self.ownerLabel = ownerLabel
            self.build = build
            self.displayName = displayName
            self.description = description
            self.origin = origin
            self.ref = ref
            self.streamName = streamName
            self.tag = tag
        }

        /// The ImageStream's name in `namespace`: its own beside the owner; `<namespace>-<own>` in a shared
        /// namespace (Open Data Hub's), where owners of several namespaces publish.
        public func name(in target: String) -> String {
            guard target != namespace, streamName.hasPrefix(name) else { return streamName }
            return PipelineRunBuilder.boundedName("\(namespace)-\(name)", suffix: String(streamName.dropFirst(name.count)))
        }
    }

    /// The ImageStream's name: `<meteor>-notebook` beside the Meteor; `<namespace>-<meteor>-notebook` in a shared
    /// namespace (Open Data Hub's), where Meteors of several namespaces publish.
    public static func name(_ meteor: Meteor, in namespace: String) -> String { Source(meteor: meteor).name(in: namespace) }

    /// A Meteor's ImageStream (`imageStream(_:owner:…)` of its `Source`).
    public static func imageStream(_ meteor: Meteor, owner: JSONValue, image: String, digest: String?, namespace: String? = nil) -> JSONValue {
        imageStream(Source(meteor: meteor), owner: owner, image: image, digest: digest, namespace: namespace)
    }

    /// The ImageStream for `image` (pinned to `digest` when known) in `namespace` (nil: the owner's). Beside the
    /// owner it is owned by it; in another namespace an ownerReference cannot reach, it carries the owner's
    /// namespace and uid as labels and the owner's finalizer deletes it.
    public static func imageStream(_ source: Source, owner: JSONValue, image: String, digest: String?, namespace: String? = nil) -> JSONValue {
        let target = namespace ?? source.namespace
        let reference = digest.map { pinned(image, to: $0) } ?? image
        var labels: JSONObject = [
            "opendatahub.io/notebook-image": "true", "opendatahub.io/dashboard": "true", source.ownerLabel: .string(source.name),
            MeteorLabels.pipeline: .string(source.build), MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
        ]
        var metadata: JSONObject = [
            "name": .string(source.name(in: target)),
            "namespace": .string(target),
            "annotations": [
                "opendatahub.io/notebook-image-name": .string(source.displayName),
                "opendatahub.io/notebook-image-desc": .string(source.description),
                "opendatahub.io/notebook-image-url": .string(source.origin),
                "opendatahub.io/notebook-image-creator": "meteor-operator",
            ],
        ]
        if target == source.namespace {
            if let ref = ObjectHelpers.controllerReference(to: owner) { metadata["ownerReferences"] = [ref] }
        } else {
            labels[MeteorLabels.meteorNamespace] = .string(source.namespace)
            if let uid = source.uid { labels[MeteorLabels.meteorUID] = .string(uid) }
        }
        metadata["labels"] = .object(labels)
        return [
            "apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": .object(metadata),
            "spec": [
                "lookupPolicy": ["local": true],
                "tags": [
                    [
                        "name": .string(source.tag),
                        "annotations": [
                            "openshift.io/imported-from": .string(reference), "opendatahub.io/notebook-build-commit": .string(source.ref),
                        ],
                        "from": ["kind": "DockerImage", "name": .string(reference)],
                        "referencePolicy": ["type": "Local"],
                    ]
                ],
            ],
        ]
    }

    /// `image` (repository, repository:tag or repository@digest) pinned to `digest`: `repository@digest`.
    public static func pinned(_ image: String, to digest: String) -> String {
        let repository = image.split(separator: "@").first.map(String.init) ?? image
        let withoutTag =
            repository.range(of: ":", options: .backwards).flatMap { r in
                repository[r.upperBound...].contains("/") ? nil : String(repository[..<r.lowerBound])
            } ?? repository
        return "\(withoutTag)@\(digest)"
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
    public static func imagePullerRoleBinding(_ source: Source, owner: JSONValue, pullersNamespace: String) -> JSONValue {
        var metadata: JSONObject = [
            "name": .string(
                PipelineRunBuilder.boundedName(source.name, suffix: String(source.streamName.dropFirst(source.name.count)) + "-image-puller")),
            "namespace": .string(source.namespace),
            "labels": [
                source.ownerLabel: .string(source.name), MeteorLabels.pipeline: .string(source.build),
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
