import Foundation
import KubeModels

/// `meteor.zone/v1alpha1` CustomRuntimeEnvironment, as `crds/meteor.zone_customruntimeenvironments.yaml` defines
/// it: a notebook image described by what goes into it. Field for field the Go operator's (c7f3fad7).
public struct CustomRuntimeEnvironment: KubeResource, Hashable {
    public static let resourceType = ResourceType(
        group: "meteor.zone", version: "v1alpha1", kind: "CustomRuntimeEnvironment", plural: "customruntimeenvironments", namespaced: true)

    public enum BuildType: String, Codable, Sendable, CaseIterable {
        case packageList = "PackageList"
        case imageImport = "ImageImport"
        case gitRepository = "GitRepository"

        /// The Tekton Pipeline (in `manifests/tekton/`) its PipelineRun references.
        public var tektonPipeline: String {
            switch self {
            case .packageList: return "meteor-package-list"
            case .imageImport: return "meteor-image-import"
            case .gitRepository: return Pipeline.jupyterhub.tektonPipeline
            }
        }

        /// The build's name in `status.pipelines` and PipelineRun labels.
        public var buildName: String {
            switch self {
            case .packageList: return "package-list"
            case .imageImport: return "image-import"
            case .gitRepository: return "git-repository"
            }
        }
    }

    public struct RuntimeEnvironment: Codable, Sendable, Hashable {
        public var osName: String?
        public var osVersion: String?
        public var pythonVersion: String?
        public init(osName: String? = nil, osVersion: String? = nil, pythonVersion: String? = nil) {
            self.osName = osName
            self.osVersion = osVersion
            self.pythonVersion = pythonVersion
        }
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var buildType: BuildType
        public var packageVersions: [String]?
        public var runtimeEnvironment: RuntimeEnvironment?
        public var baseImage: String?
        public var fromImage: String?
        public var imagePullSecret: Edge.LocalObjectReference?
        public var repository: String?
        public var gitRef: String?

        public init(
            buildType: BuildType, packageVersions: [String]? = nil, runtimeEnvironment: RuntimeEnvironment? = nil, baseImage: String? = nil,
            fromImage: String? = nil, imagePullSecret: Edge.LocalObjectReference? = nil, repository: String? = nil, gitRef: String? = nil
        ) {
            self.buildType = buildType
            self.packageVersions = packageVersions
            self.runtimeEnvironment = runtimeEnvironment
            self.baseImage = baseImage
            self.fromImage = fromImage
            self.imagePullSecret = imagePullSecret
            self.repository = repository
            self.gitRef = gitRef
        }

        /// The git ref a GitRepository build takes: `gitRef`, else `main`.
        public var ref: String { gitRef.flatMap { $0.isEmpty ? nil : $0 } ?? "main" }
    }

    /// The Go operator's phases.
    public enum Phase: String, LenientPhase {
        case pending = "Pending"
        case running = "Running"
        case succeeded = "Succeeded"
        case failed = "Failed"
        case unknown = "Unknown"

        public static var unwritten: Phase { .unknown }
    }

    public struct Status: Codable, Sendable, Hashable {
        public var phase: Phase?
        public var observedGeneration: Int64?
        public var image: String?
        public var digest: String?
        public var commit: String?
        public var conditions: [Condition]?
        public var pipelines: [Meteor.PipelineStatus]?
        public init() {}
    }

    public var metadata: ObjectMeta
    public var spec: Spec
    public var status: Status?
    public var unknownFields = UnknownFields()

    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }
}
