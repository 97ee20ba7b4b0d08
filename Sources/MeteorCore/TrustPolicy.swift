import Foundation
import KubeModels
import KubeRuntime

#if canImport(Glibc)
import Glibc
#endif

/// `EdgeTrustPolicy` (meteor.zone/v1alpha1, cluster-scoped): keys the cluster admin trusts to sign edge images of
/// some repositories for some device clusters, optionally only for Meteors of some namespaces. In the spirit of
/// sigstore's ClusterImagePolicy; holding public keys only.
public struct EdgeTrustPolicy: Codable, Sendable, Hashable {
    public static let resourceType = ResourceType(
        group: "meteor.zone", version: "v1alpha1", kind: "EdgeTrustPolicy", plural: "edgetrustpolicies", namespaced: false)

    public struct Key: Codable, Sendable, Hashable {
        public var name: String
        /// PEM PKIX ECDSA P-256 public key.
        public var publicKey: String
        public var revoked: Bool?

        public init(name: String, publicKey: String, revoked: Bool? = nil) {
            self.name = name
            self.publicKey = publicKey
            self.revoked = revoked
        }
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var keys: [Key]
        /// Repository globs (host/repository; `*` crosses `/`).
        public var images: [String]
        /// Argo CD cluster name globs.
        public var clusters: [String]
        /// Meteor namespaces allowed; all when nil.
        public var namespaces: [String]?
        /// Signatures must name the commit built (`meteor.zone/commit`).
        public var requireSignedCommit: Bool?

        public init(keys: [Key], images: [String], clusters: [String], namespaces: [String]? = nil, requireSignedCommit: Bool? = nil) {
            self.keys = keys
            self.images = images
            self.clusters = clusters
            self.namespaces = namespaces
            self.requireSignedCommit = requireSignedCommit
        }
    }

    public var apiVersion = "meteor.zone/v1alpha1"
    public var kind = "EdgeTrustPolicy"
    public var metadata: ObjectMeta
    public var spec: Spec

    public init(name: String, spec: Spec) {
        metadata = ObjectMeta(name: name)
        self.spec = spec
    }
}

/// Trust policies are cached decoded (a policy that does not decode is left out of the cache and logged).
extension EdgeTrustPolicy: CachedResource {
    public init(cached: JSONValue) throws { self = try cached.decode(as: EdgeTrustPolicy.self) }
    public var objectKey: ObjectKey { ObjectKey(namespace: nil, name: metadata.name ?? "") }
    public var resourceVersion: String? { metadata.resourceVersion }
    public var generation: Int64? { metadata.generation }
    public var isBeingDeleted: Bool { metadata.deletionTimestamp != nil }
    public var labels: [String: String] { metadata.labels ?? [:] }
    public var ownerReferences: [OwnerReference] { metadata.ownerReferences ?? [] }
}

/// A key a policy trusts, ready to verify with.
public struct TrustedKey: Sendable, Hashable {
    public var fingerprint: String
    public var name: String
    public var policy: String
    public var verifier: SignatureVerifier
    /// Its policy requires signatures to name the commit built.
    public var requiresSignedCommit = false

    /// `name (policy)`, for messages.
    public var label: String { "\(name) (EdgeTrustPolicy \(policy))" }

    public static func == (a: TrustedKey, b: TrustedKey) -> Bool { a.fingerprint == b.fingerprint && a.policy == b.policy && a.name == b.name }
    public func hash(into h: inout Hasher) { h.combine(fingerprint); h.combine(policy); h.combine(name) }
}

/// What the policies in force trust. A key revoked in any policy is trusted by none: revocation wins.
public struct EdgeTrust: Sendable {
    public let policies: [EdgeTrustPolicy]
    /// Keys that do not parse, by policy and key name, with why (said in messages, trusted nowhere).
    public let unusable: [String]
    let parsed: [String: [(key: EdgeTrustPolicy.Key, verifier: SignatureVerifier)]]
    public let revoked: Set<String>

    public init(policies: [EdgeTrustPolicy]) {
        self.policies = policies.sorted { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }
        var parsed: [String: [(EdgeTrustPolicy.Key, SignatureVerifier)]] = [:]
        var unusable: [String] = []
        var revoked: Set<String> = []
        for policy in self.policies {
            let name = policy.metadata.name ?? ""
            for key in policy.spec.keys {
                do {
                    let verifier = try SignatureVerifier(publicKeyPEM: key.publicKey)
                    if key.revoked == true { revoked.insert(verifier.fingerprint) } else { parsed[name, default: []].append((key, verifier)) }
                } catch {
                    unusable.append("\(name)/\(key.name): \(error)")
                }
            }
        }
        self.parsed = parsed
        self.unusable = unusable
        self.revoked = revoked
    }

    /// Shell-glob match where `*` crosses `/` (fnmatch without FNM_PATHNAME).
    static func matches(_ pattern: String, _ value: String) -> Bool { fnmatch(pattern, value, 0) == 0 }

    func applies(_ policy: EdgeTrustPolicy, repository: String, cluster: String, namespace: String) -> Bool {
        policy.spec.images.contains { Self.matches($0, repository) } && policy.spec.clusters.contains { Self.matches($0, cluster) }
            && (policy.spec.namespaces.map { $0.contains(namespace) } ?? true)
    }

    /// Keys trusted to sign `repository` for `cluster` in `namespace` (none revoked).
    public func keys(repository: String, cluster: String, namespace: String) -> [TrustedKey] {
        policies.filter { applies($0, repository: repository, cluster: cluster, namespace: namespace) }.flatMap { policy in
            (parsed[policy.metadata.name ?? ""] ?? []).compactMap { entry in
                revoked.contains(entry.verifier.fingerprint)
                    ? nil
                    : TrustedKey(
                        fingerprint: entry.verifier.fingerprint, name: entry.key.name, policy: policy.metadata.name ?? "", verifier: entry.verifier,
                        requiresSignedCommit: policy.spec.requireSignedCommit == true)
            }
        }
    }

    /// Whether `fingerprint` may deploy `repository` to `cluster` for a Meteor in `namespace`.
    public func trusts(_ fingerprint: String, repository: String, cluster: String, namespace: String) -> Bool {
        keys(repository: repository, cluster: cluster, namespace: namespace).contains { $0.fingerprint == fingerprint }
    }

    /// Keys trusted for `repository` on every one of `clusters` or any of them, once each by fingerprint: the
    /// candidates a signature may verify with (each target is then checked for its own cluster).
    public func candidates(repository: String, clusters: [String], namespace: String) -> [TrustedKey] {
        var seen: Set<String> = []
        return clusters.flatMap { keys(repository: repository, cluster: $0, namespace: namespace) }.filter { seen.insert($0.fingerprint).inserted }
    }
}
