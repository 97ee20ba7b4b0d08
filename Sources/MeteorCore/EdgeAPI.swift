import Foundation
import KubeModels

/// `spec.edge`: signed per-architecture images, deployed by Argo CD to device clusters.
public struct Edge: Codable, Sendable, Hashable {
    /// One image per device architecture, built from a Dockerfile in the repository.
    public struct Image: Codable, Sendable, Hashable {
        public var name: String
        /// Path of the Dockerfile in the repository (e.g. `Dockerfile.donkey.arm64`).
        public var dockerfile: String
        /// Build context in the repository; `.` when absent.
        public var context: String?
        /// `linux/arm64`, `linux/amd64`, …
        public var platform: String
        /// Where the image is pushed, without tag or digest (e.g. `quay.io/thoth-station/donkeycar`).
        public var repository: String
        /// Build on any node under emulation (qemu binfmt registered on the nodes) instead of on a node of the
        /// image's architecture.
        public var emulated: Bool?

        public init(name: String, dockerfile: String, context: String? = nil, platform: String, repository: String, emulated: Bool? = nil) {
            self.name = name
            self.dockerfile = dockerfile
            self.context = context
            self.platform = platform
            self.repository = repository
            self.emulated = emulated
        }

        /// The node architecture (`kubernetes.io/arch`) of `platform`: `linux/arm64` → `arm64`, `linux/arm/v7` → `arm`.
        public var architecture: String {
            let parts = platform.split(separator: "/")
            return parts.count > 1 ? String(parts[1]) : platform
        }
    }

    public struct SecretKeyRef: Codable, Sendable, Hashable {
        public var name: String
        public var key: String?
        public init(name: String, key: String? = nil) {
            self.name = name
            self.key = key
        }
    }

    public struct LocalObjectReference: Codable, Sendable, Hashable {
        public var name: String
        public init(name: String) { self.name = name }
    }

    /// How signatures are read. Which keys may sign is the cluster admin's (`EdgeTrustPolicy`).
    public struct Signing: Codable, Sendable, Hashable {
        /// Narrows the keys the trust policies allow to this one: a Secret in the Meteor's namespace holding the PEM
        /// PKIX ECDSA P-256 public key (key `cosign.pub` by default). A key no policy trusts is refused.
        public var publicKeySecretRef: SecretKeyRef?
        /// A `kubernetes.io/dockerconfigjson` Secret with credentials for reading signatures from the registry.
        public var pullSecretRef: LocalObjectReference?

        public init(publicKeySecretRef: SecretKeyRef? = nil, pullSecretRef: LocalObjectReference? = nil) {
            self.publicKeySecretRef = publicKeySecretRef
            self.pullSecretRef = pullSecretRef
        }
    }

    /// Argo CD clusters chosen by the labels of their cluster Secrets (as ApplicationSet's cluster generator
    /// chooses them): `matchLabels` and `matchExpressions`, ANDed.
    public struct ClusterSelector: Codable, Sendable, Hashable {
        public struct Expression: Codable, Sendable, Hashable {
            public var key: String
            /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
            public var `operator`: String
            public var values: [String]?
            public init(key: String, operator: String, values: [String]? = nil) {
                self.key = key
                self.operator = `operator`
                self.values = values
            }
        }
        public var matchLabels: [String: String]?
        public var matchExpressions: [Expression]?

        public init(matchLabels: [String: String]? = nil, matchExpressions: [Expression]? = nil) {
            self.matchLabels = matchLabels
            self.matchExpressions = matchExpressions
        }

        /// The selector, or why it is not one.
        public func labelSelector() throws -> LabelSelector {
            var requirements: [LabelSelector.Requirement] = []
            for (key, value) in (matchLabels ?? [:]).sorted(by: { $0.key < $1.key }) {
                try LabelSelector.validateKey(key)
                try LabelSelector.validateValue(value)
                requirements.append(.init(key: key, op: .equals, values: [value]))
            }
            for e in matchExpressions ?? [] {
                try LabelSelector.validateKey(e.key)
                let values = e.values ?? []
                for v in values { try LabelSelector.validateValue(v) }
                switch e.operator {
                case "In", "NotIn":
                    guard !values.isEmpty else { throw LabelSelector.ParseError(message: "operator \(e.operator) on \(e.key) needs values") }
                    requirements.append(.init(key: e.key, op: e.operator == "In" ? .in : .notIn, values: values))
                case "Exists", "DoesNotExist":
                    guard values.isEmpty else { throw LabelSelector.ParseError(message: "operator \(e.operator) on \(e.key) takes no values") }
                    requirements.append(.init(key: e.key, op: e.operator == "Exists" ? .exists : .doesNotExist))
                default:
                    throw LabelSelector.ParseError(message: "unknown operator \(e.operator) on \(e.key) (In, NotIn, Exists, DoesNotExist)")
                }
            }
            guard !requirements.isEmpty else { throw LabelSelector.ParseError(message: "selects every cluster; name at least one label") }
            return LabelSelector(requirements)
        }
    }

    /// A device cluster registered in Argo CD (or every cluster whose Secret's labels match) and what runs there.
    public struct Target: Codable, Sendable, Hashable {
        public var name: String
        /// The Argo CD cluster name (the `name` of its cluster Secret), e.g. `microshift-rpi`; or `clusterSelector`.
        public var cluster: String?
        /// Every Argo CD cluster whose Secret's labels match: one Application per cluster, created and pruned as
        /// clusters are labelled and unlabelled.
        public var clusterSelector: ClusterSelector?
        /// Which `images[].name` it runs.
        public var image: String
        /// The kustomize directory in the repository that deploys it.
        public var path: String
        /// Namespace on the device.
        public var namespace: String
        /// Every other image its manifests run, by digest (`repository@sha256:…`): verified and pinned like the built one.
        public var images: [String]?

        public init(
            name: String, cluster: String? = nil, clusterSelector: ClusterSelector? = nil, image: String, path: String, namespace: String,
            images: [String]? = nil
        ) {
            self.name = name
            self.cluster = cluster
            self.clusterSelector = clusterSelector
            self.image = image
            self.path = path
            self.namespace = namespace
            self.images = images
        }
    }

    /// Targets delivered in stages: a later stage gets a release only once the earlier one has been Synced and
    /// Healthy for its soak time and its gate (a verification PipelineRun) succeeded.
    public struct Rollout: Codable, Sendable, Hashable {
        public struct Stage: Codable, Sendable, Hashable {
            public var name: String
            /// Names in `spec.edge.targets`.
            public var targets: [String]
            /// Seconds the stage's Applications must stay Synced and Healthy before the next stage starts.
            public var soakSeconds: Int64?
            /// A verification run that must succeed before the next stage starts.
            public var gate: Gate?

            public init(name: String, targets: [String], soakSeconds: Int64? = nil, gate: Gate? = nil) {
                self.name = name
                self.targets = targets
                self.soakSeconds = soakSeconds
                self.gate = gate
            }
        }

        /// A Tekton Pipeline in the Meteor's namespace, run once per release and stage after the soak with params
        /// `url`, `commit`, `images` (the stage's pinned images, space-separated), `stage` and `clusters`.
        public struct Gate: Codable, Sendable, Hashable {
            public var pipelineRef: String
            public init(pipelineRef: String) { self.pipelineRef = pipelineRef }
        }

        public var stages: [Stage]
        public init(stages: [Stage]) { self.stages = stages }
    }

    public struct Release: Codable, Sendable, Hashable {
        /// A glob over tag names (`v*`): the newest matching tag on the remote is delivered.
        public var tagPattern: String
        /// Seconds between checks of the remote; 300 when absent.
        public var interval: Int64?

        public init(tagPattern: String, interval: Int64? = nil) {
            self.tagPattern = tagPattern
            self.interval = interval
        }
    }

    public var images: [Image]
    public var signing: Signing
    public var targets: [Target]
    public var release: Release?
    public var rollout: Rollout?

    public init(images: [Image], signing: Signing = Signing(), targets: [Target], release: Release? = nil, rollout: Rollout? = nil) {
        self.images = images
        self.signing = signing
        self.targets = targets
        self.release = release
        self.rollout = rollout
    }

    enum CodingKeys: String, CodingKey { case images, signing, targets, release, rollout }

    /// `signing` may be absent (the trust policies say which keys verify).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        images = try c.decode([Image].self, forKey: .images)
        signing = try c.decodeIfPresent(Signing.self, forKey: .signing) ?? Signing()
        targets = try c.decode([Target].self, forKey: .targets)
        release = try c.decodeIfPresent(Release.self, forKey: .release)
        rollout = try c.decodeIfPresent(Rollout.self, forKey: .rollout)
    }
}

/// `status.release`: the tag (and the commit it points at) being delivered.
public struct EdgeRelease: Codable, Sendable, Hashable {
    public var tag: String
    public var commit: String?
    public init(tag: String, commit: String?) {
        self.tag = tag
        self.commit = commit
    }
}

/// `status.images[]`: one built image and what verification found.
public struct EdgeImageStatus: Codable, Sendable, Hashable {
    public var name: String
    public var platform: String
    public var repository: String
    public var pipelineRunName: String?
    public var digest: String?
    public var verified: Bool
    public var keyFingerprint: String?
    /// The commit it was built from, which its Applications sync.
    public var commit: String?
    /// Why it is not (yet) verified: a SignatureFailure reason, `Building` or `BuildFailed`.
    public var reason: String?
    public var message: String?

    public init(name: String, platform: String, repository: String) {
        self.name = name
        self.platform = platform
        self.repository = repository
        self.verified = false
    }

    /// `repository@digest`, once there is a digest.
    public var pinnedReference: String? { digest.map { "\(repository)@\($0)" } }
}

/// `status.imageIndexes[]`: the OCI image index the operator publishes at `repository:tag` when several edge
/// images of different platforms share a repository (each build pushes the tag for its own platform, so the last
/// one would win it): the tag then serves every platform, each verified image by its digest.
public struct EdgeImageIndexStatus: Codable, Sendable, Hashable {
    public struct Manifest: Codable, Sendable, Hashable {
        public var platform: String
        public var digest: String
        public init(platform: String, digest: String) {
            self.platform = platform
            self.digest = digest
        }
    }
    /// `repository:tag`.
    public var reference: String
    /// The index's digest, once published.
    public var digest: String?
    /// The verified images it lists, by platform.
    public var manifests: [Manifest]
    /// Why it is not published (the registry's words); retried.
    public var message: String?

    public init(reference: String, digest: String? = nil, manifests: [Manifest], message: String? = nil) {
        self.reference = reference
        self.digest = digest
        self.manifests = manifests
        self.message = message
    }
}

/// `status.deployments[]`: one Argo CD Application and what Argo reports.
public struct EdgeDeploymentStatus: Codable, Sendable, Hashable {
    public var target: String
    public var cluster: String
    public var application: String
    /// The image it deploys, pinned by digest.
    public var image: String?
    /// The git revision it deploys.
    public var revision: String?
    public var syncStatus: String?
    public var healthStatus: String?
    public var message: String?

    public init(target: String, cluster: String, application: String) {
        self.target = target
        self.cluster = cluster
        self.application = application
    }
}

/// `status.targets[]`: how many of a target's devices run what they should, and the few that do not (never one
/// entry per device: a selector may match a fleet).
public struct EdgeTargetStatus: Codable, Sendable, Hashable {
    public var name: String
    /// The selector, as `kubectl get -l` reads it, for a target chosen by labels.
    public var clusterSelector: String?
    /// Clusters it deploys to (Applications wanted).
    public var desired: Int
    public var synced: Int
    public var healthy: Int
    public var degraded: Int
    /// At most `limit` Applications that are not Synced and Healthy.
    public var notHealthy: [EdgeDeploymentStatus]?

    public static let limit = 5

    /// `twins: 2/3 healthy, 1 degraded`, as the sandbox's table and the Shower show a fleet.
    public var summary: String {
        "\(name): \(healthy)/\(desired) healthy" + (degraded > 0 ? ", \(degraded) degraded" : "")
    }

    public init(
        name: String, clusterSelector: String? = nil, desired: Int = 0, synced: Int = 0, healthy: Int = 0, degraded: Int = 0,
        notHealthy: [EdgeDeploymentStatus]? = nil
    ) {
        self.name = name
        self.clusterSelector = clusterSelector
        self.desired = desired
        self.synced = synced
        self.healthy = healthy
        self.degraded = degraded
        self.notHealthy = notHealthy
    }
}

/// What a target was given to run: recorded per target when all its devices ran it Synced and Healthy, and given
/// back when a later release is rolled back.
public struct EdgeDelivered: Codable, Sendable, Hashable {
    public var target: String
    /// The built image, pinned by digest.
    public var image: String
    /// The commit its Applications sync.
    public var revision: String
    /// The target's other images, pinned.
    public var images: [String]?
    /// The key the image was verified with.
    public var keyFingerprint: String?

    public init(target: String, image: String, revision: String, images: [String]? = nil, keyFingerprint: String? = nil) {
        self.target = target
        self.image = image
        self.revision = revision
        self.images = images
        self.keyFingerprint = keyFingerprint
    }

    /// What an Application was given: its pinned image (annotation), the revision it syncs and its other pinned
    /// images; nil when it records no image.
    init?(application app: JSONValue, target: String) {
        guard let image = app[path: "metadata", "annotations", "meteor.zone/image"]?.stringValue else { return nil }
        let extras = Array(ArgoApplicationBuilder.pinnedImages(app).dropFirst())
        self.init(
            target: target, image: image, revision: app[path: "spec", "source", "targetRevision"]?.stringValue ?? "",
            images: extras.isEmpty ? nil : extras)
    }

    /// The same delivery, whoever it was recorded for.
    func sameDelivery(as other: EdgeDelivered) -> Bool {
        image == other.image && revision == other.revision && (images ?? []) == (other.images ?? [])
    }
}

/// `status.rollout`: where a staged delivery (`spec.edge.rollout`) stands.
public struct EdgeRolloutStatus: Codable, Sendable, Hashable {
    public struct Halt: Codable, Sendable, Hashable {
        /// The first stage rolled back.
        public var stage: String
        /// `Degraded` or `GateFailed`.
        public var reason: String
        public var message: String
        public var time: Date?
        public init(stage: String, reason: String, message: String, time: Date?) {
            self.stage = stage
            self.reason = reason
            self.message = message
            self.time = time
        }
    }

    /// Identifies the release being rolled out (its images and commit); another one starts over.
    public var delivery: String?
    /// The release in words: the tag or commit.
    public var release: String?
    /// The stage being delivered; absent once every stage has it.
    public var stage: String?
    /// When that stage started.
    public var since: Date?
    /// Since when its Applications have all been Synced and Healthy (the soak).
    public var healthySince: Date?
    /// Why it waits.
    public var waiting: String?
    /// The stage's gate PipelineRun.
    public var gateRun: String?
    public var completed: Bool?
    public var paused: Bool?
    /// Delivery of this release was stopped and the stage rolled back.
    public var halted: Halt?
    /// What each target last ran Synced and Healthy on every device.
    public var lastHealthy: [EdgeDelivered]?

    /// Where the rollout stands in a few words (the sandbox's table, the Shower): `stage twin`, `paused at twin`,
    /// `rolled back at twin (Degraded)`, `all stages`.
    public var summary: String {
        if let halted { return "rolled back at \(halted.stage) (\(halted.reason))" }
        if completed == true { return "all stages" }
        return (paused == true ? "paused at " : "stage ") + (stage ?? "?")
    }

    public init(delivery: String? = nil, release: String? = nil) {
        self.delivery = delivery
        self.release = release
    }
}
