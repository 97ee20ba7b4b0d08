import Foundation
import KubeModels

/// `meteor.zone/v1alpha1` Meteor, as `crds/meteor.zone_meteors.yaml` defines it.
public struct Meteor: KubeResource, Hashable {
    public static let resourceType = ResourceType(group: "meteor.zone", version: "v1alpha1", kind: "Meteor", plural: "meteors", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var url: String
        public var ref: String
        public var ttl: Int64?
        public var pipelines: [String]?
        /// Edge delivery (used when `pipelines` names `edge`).
        public var edge: Edge?
        /// The Thoth overlay (`overlays/<name>/`) the notebook image's dependencies come from; absent: the
        /// repository root's, else the first runtime environment of `.thoth.yaml`.
        public var overlay: String?
        /// A `kubernetes.io/basic-auth` Secret in the Meteor's namespace for a private repository: used by the
        /// builds' clone and by the operator's own listing of release tags.
        public var gitSecretRef: Edge.LocalObjectReference?

        public init(
            url: String, ref: String, ttl: Int64? = nil, pipelines: [String]? = nil, edge: Edge? = nil, overlay: String? = nil,
            gitSecretRef: Edge.LocalObjectReference? = nil
        ) {
            self.gitSecretRef = gitSecretRef
            self.url = url
            self.ref = ref
            self.ttl = ttl
            self.pipelines = pipelines
            self.edge = edge
            self.overlay = overlay
        }

        /// The requested pipelines; the schema's default when none are given.
        public var requestedPipelines: [String] { pipelines ?? [Pipeline.jupyterhub.rawValue, Pipeline.jupyterbook.rawValue] }
    }

    public struct PipelineStatus: Codable, Sendable, Hashable {
        public var name: String
        public var pipelineRunName: String
        public var ready: Condition.Status?
        public var url: String?
        public var image: String?
        public var digest: String?
        public var startTime: Date?
        public var completionTime: Date?
        public var reason: String?
        public var message: String?
        /// The commit the run builds, when the operator resolved the ref to one.
        public var commit: String?
        /// Others (`Kind/name`) that use this same build.
        public var sharedWith: [String]?

        public init(name: String, pipelineRunName: String) {
            self.name = name
            self.pipelineRunName = pipelineRunName
        }
    }

    public struct Stage: Codable, Sendable, Hashable {
        public var running: [String]?
        public var succeeded: [String]?
        public var failed: [String]?
    }

    public struct Status: Codable, Sendable, Hashable {
        public var phase: MeteorPhase?
        public var observedGeneration: Int64?
        public var expirationTimestamp: Date?
        /// The commit `spec.ref` named when the builds started (a branch is followed).
        public var commit: String?
        public var conditions: [Condition]?
        public var pipelines: [PipelineStatus]?
        public var stage: Stage?
        public var comas: [JSONValue]?
        /// Edge delivery: the release being delivered, its images and where they run.
        public var release: EdgeRelease?
        public var images: [EdgeImageStatus]?
        public var imageIndexes: [EdgeImageIndexStatus]?
        public var deployments: [EdgeDeploymentStatus]?
        /// Per target: devices desired, synced, healthy, degraded.
        public var targets: [EdgeTargetStatus]?
        /// A staged delivery's progress.
        public var rollout: EdgeRolloutStatus?

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

/// The pipelines a Meteor can ask for.
public enum Pipeline: String, CaseIterable, Sendable {
    case jupyterhub, jupyterbook, edge

    /// The condition that reports this pipeline (`kubectl wait --for=condition=JupyterBook`).
    public var conditionType: String {
        switch self {
        case .jupyterhub: return "JupyterHub"
        case .jupyterbook: return "JupyterBook"
        case .edge: return "Edge"
        }
    }

    /// The Tekton Pipeline (in `manifests/tekton/`) its PipelineRun references.
    public var tektonPipeline: String { self == .edge ? "meteor-edge-image" : "meteor-\(rawValue)" }

    /// A short form for PipelineRun names.
    var shortName: String {
        switch self {
        case .jupyterhub: return "hub"
        case .jupyterbook: return "book"
        case .edge: return "edge"
        }
    }
}

/// Phases, condition types and reasons the operator writes.
public enum MeteorStatusVocabulary {
    /// The most a message in a status list entry (a pipeline, an image, a deployment) holds, so that the CRD's
    /// 64 targets and 16 images with long messages from Tekton or Argo CD stay far below etcd's object limit.
    public static let maxEntryMessageBytes = 1024
    /// The most a pipeline condition's message holds.
    public static let maxConditionMessageBytes = 4000
    public static let readyCondition = "Ready"
    public static let invalidSpec = "InvalidSpec"
    /// The API server refused the operator a verb it needs (403): RBAC narrower than the work.
    public static let forbidden = "Forbidden"
    /// The API server refused a request the work needs for another reason (an invalid object, a quota, a full
    /// Service IP range, a server error that keeps coming back); the message carries the server's words.
    public static let apiRequestFailed = "APIRequestFailed"
    /// A build's ServiceAccount or push Secret does not exist in the Meteor's namespace.
    public static let buildPrerequisiteMissing = "BuildPrerequisiteMissing"
    public static let imagesBuilt = "ImagesBuilt"
    public static let imagesVerified = "ImagesVerified"
    public static let deployed = "Deployed"
}

/// Labels on everything the operator creates for a Meteor.
public enum MeteorLabels {
    public static let meteor = "meteor.zone/meteor"
    /// On what the operator makes for a CustomRuntimeEnvironment (its PipelineRun, its ImageStream).
    public static let runtimeEnvironment = "meteor.zone/runtime-environment"
    public static let pipeline = "meteor.zone/pipeline"
    public static let generation = "meteor.zone/generation"
    public static let managedBy = "app.kubernetes.io/managed-by"
    public static let managedByValue = "meteor-operator"
    /// Selects what the operator made.
    public static let managedByOperator = LabelSelector([.init(key: managedBy, op: .equals, values: [managedByValue])])
    public static let finalizer = "meteor.zone/cleanup"
    /// On edge PipelineRuns: which `spec.edge.images[].name` they build, and the release tag.
    public static let edgeImage = "meteor.zone/edge-image"
    public static let release = "meteor.zone/release"
    /// On Argo CD Applications (which live in Argo's namespace, so carry no ownerReference).
    public static let meteorNamespace = "meteor.zone/namespace"
    public static let meteorUID = "meteor.zone/uid"
    public static let target = "meteor.zone/target"
    /// On rollout gate PipelineRuns: the stage they verify.
    public static let gate = "meteor.zone/gate"
}

/// Annotations users set on a Meteor.
public enum MeteorAnnotations {
    /// `paused` holds a staged rollout where it is (no stage starts, no new release goes out); removing it resumes.
    public static let rollout = "meteor.zone/rollout"
}

/// The operator's version, as `meteor-operator version`, the User-Agent and the Shower's footer report it.
public enum BuildInfo {
    public static let version = "0.1.0-dev"
}
