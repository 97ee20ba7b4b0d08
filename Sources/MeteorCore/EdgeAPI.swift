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

    /// A device cluster registered in Argo CD and what runs on it.
    public struct Target: Codable, Sendable, Hashable {
        public var name: String
        /// The Argo CD cluster name (the `name` of its cluster Secret), e.g. `microshift-rpi`.
        public var cluster: String
        /// Which `images[].name` it runs.
        public var image: String
        /// The kustomize directory in the repository that deploys it.
        public var path: String
        /// Namespace on the device.
        public var namespace: String
        /// Every other image its manifests run, by digest (`repository@sha256:…`): verified and pinned like the built one.
        public var images: [String]?

        public init(name: String, cluster: String, image: String, path: String, namespace: String, images: [String]? = nil) {
            self.name = name
            self.cluster = cluster
            self.image = image
            self.path = path
            self.namespace = namespace
            self.images = images
        }
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

    public init(images: [Image], signing: Signing = Signing(), targets: [Target], release: Release? = nil) {
        self.images = images
        self.signing = signing
        self.targets = targets
        self.release = release
    }

    enum CodingKeys: String, CodingKey { case images, signing, targets, release }

    /// `signing` may be absent (the trust policies say which keys verify).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        images = try c.decode([Image].self, forKey: .images)
        signing = try c.decodeIfPresent(Signing.self, forKey: .signing) ?? Signing()
        targets = try c.decode([Target].self, forKey: .targets)
        release = try c.decodeIfPresent(Release.self, forKey: .release)
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
