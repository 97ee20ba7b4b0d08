import Crypto
import Foundation
import KubeModels
import KubeRuntime

/// What one edge build chain builds: the ref (a release tag, or `spec.ref`) and the name part that keeps its
/// PipelineRuns apart from other generations and releases.
public struct EdgeBuild: Sendable, Equatable {
    public var ref: String
    public var release: EdgeRelease?
    public var generation: Int64

    public init(ref: String, release: EdgeRelease?, generation: Int64) {
        self.ref = ref
        self.release = release
        self.generation = generation
    }

    /// `g<generation>` or `g<generation>-<tag>` in lowercase DNS-label characters, with a short hash of the tag
    /// when the tag had to be changed to fit (so `v1.0` and `v1-0` never share a PipelineRun).
    public var buildID: String {
        release.map { "g\(generation)-\(Self.slug($0.tag))" } ?? "g\(generation)"
    }

    /// A tag as a DNS-label and label-value fragment (at most 31 characters).
    public static func slug(_ tag: String) -> String {
        var clean = String(tag.lowercased().map { ($0.isLetter || $0.isNumber) && $0.isASCII ? $0 : "-" }.prefix(24))
        while clean.hasSuffix("-") { clean.removeLast() }
        while clean.hasPrefix("-") { clean.removeFirst() }
        if clean != tag {
            clean += (clean.isEmpty ? "" : "-") + SHA256.hash(data: Data(tag.utf8)).prefix(3).map { String(format: "%02x", $0) }.joined()
        }
        return clean
    }

    /// The tag the image is pushed under: the release tag when it is a valid image tag, else `buildID`.
    public var imageTag: String {
        if let tag = release?.tag, tag.range(of: #"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\z"#, options: .regularExpression) != nil { return tag }
        return buildID
    }
}

/// The `tekton.dev/v1` PipelineRun that builds, pushes and signs one edge image (Pipeline `meteor-edge-image`).
public enum EdgePipelineRunBuilder {
    public static func name(meteor: String, image: String, build: EdgeBuild) -> String {
        PipelineRunBuilder.boundedName("\(meteor)-\(image)", suffix: "-\(build.buildID)")
    }

    public static func build(meteor: Meteor, owner: JSONValue, image: Edge.Image, build: EdgeBuild, settings: BuildSettings) -> JSONValue {
        let params: [JSONValue] = [
            ["name": "url", "value": .string(meteor.spec.url)],
            ["name": "ref", "value": .string(build.ref)],
            ["name": "image", "value": .string("\(image.repository):\(build.imageTag)")],
            ["name": "dockerfile", "value": .string(image.dockerfile)],
            ["name": "context", "value": .string(image.context ?? ".")],
            ["name": "platform", "value": .string(image.platform)],
        ]
        var labels: JSONObject = [MeteorLabels.edgeImage: .string(image.name)]
        if let release = build.release { labels[MeteorLabels.release] = .string(EdgeBuild.slug(release.tag)) }
        var run = PipelineRunBuilder.run(
            name: name(meteor: meteor.name, image: image.name, build: build), meteor: meteor, owner: owner, pipeline: .edge, ref: build.ref,
            params: params, extraLabels: labels, settings: settings)
        if image.emulated != true {
            // buildah builds for the node it runs on unless qemu binfmt emulates another: the build task goes to a
            // node of the image's architecture (an arm64 image to an arm64 node).
            run[path: "spec", "taskRunSpecs"] = [
                ["pipelineTaskName": "image", "podTemplate": ["nodeSelector": ["kubernetes.io/arch": .string(image.architecture)]]]
            ]
        }
        return run
    }

    /// The PipelineRun of a rollout stage's gate: the user's Pipeline (in the Meteor's namespace), given the release
    /// and where the stage runs it. No workspaces: what the gate needs, it declares and fetches itself.
    public static func gate(
        meteor: Meteor, owner: JSONValue, name: String, stage: String, pipelineRef: String, commit: String, images: [String], clusters: [String],
        settings: BuildSettings
    ) -> JSONValue {
        let params: [JSONValue] = [
            ["name": "url", "value": .string(meteor.spec.url)],
            ["name": "commit", "value": .string(commit)],
            ["name": "images", "value": .string(images.joined(separator: " "))],
            ["name": "stage", "value": .string(stage)],
            ["name": "clusters", "value": .string(clusters.joined(separator: " "))],
        ]
        var run = PipelineRunBuilder.run(
            name: name, meteor: meteor, owner: owner, pipeline: .edge, ref: commit, params: params, extraLabels: [MeteorLabels.gate: .string(stage)],
            settings: settings)
        run[path: "spec", "pipelineRef", "name"] = .string(pipelineRef)
        run[path: "spec", "workspaces"] = nil
        return run
    }
}

/// Argo CD `Application`s that deploy a verified image, pinned by digest, to a device cluster.
public enum ArgoApplicationBuilder {
    public static let resourceType = ResourceType(
        group: "argoproj.io", version: "v1alpha1", kind: "Application", plural: "applications", namespaced: true)
    /// Argo CD's own finalizer: deleting the Application removes what it deployed from the device.
    public static let resourcesFinalizer = "resources-finalizer.argocd.argoproj.io"

    /// Named after the Meteor and the target (and, for a target choosing clusters by label, the cluster: see
    /// `EdgePlacement.application`).
    public static func name(meteorNamespace: String, meteor: String, target: String) -> String {
        PipelineRunBuilder.boundedName("\(meteorNamespace)-\(meteor)", suffix: "-\(target)")
    }

    /// The images an Application was given pinned (the new image of each kustomize override), the built one first.
    public static func pinnedImages(_ app: JSONValue) -> [String] {
        (app[path: "spec", "source", "kustomize", "images"]?.arrayValue ?? []).compactMap {
            $0.stringValue?.split(separator: "=", maxSplits: 1).last.map(String.init)
        }
    }

    /// The fingerprint of the key the deployed image was verified with: a later change of the trust policies is
    /// judged against it.
    public static let keyAnnotation = "meteor.zone/key-fingerprint"

    /// An Application in `namespace` (Argo CD's), in `project`, syncing the target's path at `revision` on the
    /// placement's cluster. `pinnedImage` (`repository@sha256:…`) replaces the built image; `extraImages` pin the
    /// target's other images.
    public static func build(
        meteor: Meteor, placement: EdgePlacement, image: Edge.Image, pinnedImage: String, extraImages: [String] = [], keyFingerprint: String? = nil,
        revision: String, namespace: String, project: String
    ) -> JSONValue {
        let meteorNamespace = meteor.namespace ?? "default"
        let target = placement.target
        return [
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": [
                "name": .string(placement.application(meteorNamespace: meteorNamespace, meteor: meteor.name)),
                "namespace": .string(namespace),
                "labels": [
                    MeteorLabels.meteor: .string(meteor.name),
                    MeteorLabels.meteorNamespace: .string(meteorNamespace),
                    MeteorLabels.meteorUID: .string(meteor.metadata.uid ?? ""),
                    MeteorLabels.target: .string(target.name),
                    MeteorLabels.managedBy: .string(MeteorLabels.managedByValue),
                    "app.kubernetes.io/part-of": "meteor",
                ],
                "annotations": keyFingerprint.map {
                    ["meteor.zone/image": .string(pinnedImage), "meteor.zone/platform": .string(image.platform), .init(keyAnnotation): .string($0)]
                }
                    ?? ["meteor.zone/image": .string(pinnedImage), "meteor.zone/platform": .string(image.platform)],
                "finalizers": [.string(resourcesFinalizer)],
            ],
            "spec": [
                "project": .string(project),
                "source": [
                    "repoURL": .string(meteor.spec.url),
                    "targetRevision": .string(revision),
                    "path": .string(target.path),
                    "kustomize": [
                        "images": .array(
                            [.string("\(image.repository)=\(pinnedImage)")]
                                + extraImages.map { .string("\(SignatureVerifier.repositoryPart($0))=\($0)") })
                    ],
                ],
                "destination": ["name": .string(placement.cluster), "namespace": .string(target.namespace)],
                "syncPolicy": [
                    "automated": ["prune": true, "selfHeal": true],
                    "syncOptions": ["CreateNamespace=true"],
                ],
            ],
        ]
    }
}

/// What an Application says: the image and revision it deploys (from its spec) and Argo's sync and health.
public struct ApplicationState: Sendable, Equatable {
    public var pinnedImage: String?
    public var revision: String?
    public var syncStatus: String?
    public var healthStatus: String?
    public var message: String?
    /// The images Argo CD reports the Application's resources run (`status.summary.images`).
    public var runningImages: [String]
    /// Argo CD's status is about the spec as it is now (`status.sync.comparedTo.source` is `spec.source`): right
    /// after the operator changes the image or revision, the status still describes the last one.
    public var comparedToSpec: Bool

    public init(_ app: JSONValue) {
        pinnedImage = app[path: "metadata", "annotations", "meteor.zone/image"]?.stringValue
        revision = app[path: "spec", "source", "targetRevision"]?.stringValue
        syncStatus = app[path: "status", "sync", "status"]?.stringValue
        healthStatus = app[path: "status", "health", "status"]?.stringValue
        runningImages = app[path: "status", "summary", "images"]?.arrayValue?.compactMap(\.stringValue) ?? []
        comparedToSpec = app[path: "status", "sync", "comparedTo", "source"].map { $0 == app[path: "spec", "source"] } ?? false
        message =
            app[path: "status", "health", "message"]?.stringValue
            ?? (app[path: "status", "conditions"]?.arrayValue ?? []).compactMap { $0["message"]?.stringValue }.first
    }

    public var isSyncedAndHealthy: Bool { syncStatus == "Synced" && healthStatus == "Healthy" }
    public var isDegraded: Bool { healthStatus == "Degraded" || healthStatus == "Missing" && syncStatus == "Synced" }
}
