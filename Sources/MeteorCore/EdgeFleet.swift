import Foundation
import KubeModels
import KubeRuntime

/// Argo CD's clusters, as its cluster Secrets (in Argo CD's namespace, labelled
/// `argocd.argoproj.io/secret-type=cluster`) declare them: the name Applications deploy to and the labels targets
/// select by.
public enum ArgoClusters {
    public static let secretType = ResourceType(group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true)
    public static let labelSelector = LabelSelector([.init(key: "argocd.argoproj.io/secret-type", op: .equals, values: ["cluster"])])

    public struct Cluster: Sendable, Hashable {
        public var name: String
        public var labels: [String: String]
    }

    /// The cluster-Secret informer's transform (`trimmedForCache`).
    public static let cacheTransform = CacheTransform("meteor.trimmedClusterSecret", trimmedForCache)

    /// What the operator's cache keeps of a cluster Secret: identity, labels, and the cluster's name and server.
    /// The credentials (`data.config`) are dropped as the Secret arrives and never held.
    public static func trimmedForCache(_ secret: JSONValue) -> JSONValue {
        var metadata: JSONObject = [:]
        for key in ["name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp"] {
            if let v = secret[path: "metadata", key] { metadata[key] = v }
        }
        var data: JSONObject = [:]
        for key in ["name", "server"] {
            if let v = secret[path: "data", key] { data[key] = v }
        }
        var out: JSONObject = ["metadata": .object(metadata), "data": .object(data)]
        for key in ["apiVersion", "kind"] { if let v = secret[key] { out[key] = v } }
        return .object(out)
    }

    /// The cluster a Secret declares: its `name`, else its `server` (as Argo CD names an unnamed cluster).
    public static func cluster(_ secret: JSONValue) -> Cluster? {
        func field(_ key: String) -> String? {
            guard let encoded = secret[path: "data", key]?.stringValue, let data = Data(base64Encoded: encoded) else { return nil }
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return text.isEmpty ? nil : text
        }
        guard secret[path: "metadata", "deletionTimestamp"] == nil, let name = field("name") ?? field("server") else { return nil }
        var labels: [String: String] = [:]
        for (k, v) in secret[path: "metadata", "labels"]?.objectValue ?? [:] { labels[k] = v.stringValue }
        return Cluster(name: name, labels: labels)
    }
}

/// One Application a Meteor wants: a target on one cluster.
public struct EdgePlacement: Sendable, Hashable {
    public var target: Edge.Target
    public var cluster: String
    /// Chosen by the target's `clusterSelector`: its Application is named after the cluster too.
    public var selected: Bool

    public init(target: Edge.Target, cluster: String, selected: Bool = false) {
        self.target = target
        self.cluster = cluster
        self.selected = selected
    }

    /// Every target's placements: the named cluster, or each cluster (by name) its selector matches.
    public static func resolve(_ edge: Edge, clusters: [ArgoClusters.Cluster]) -> [EdgePlacement] {
        edge.targets.flatMap { target -> [EdgePlacement] in
            if let cluster = target.cluster { return [EdgePlacement(target: target, cluster: cluster)] }
            guard let selector = try? target.clusterSelector?.labelSelector() else { return [] }
            let names = Set(clusters.filter { selector.matches($0.labels) }.map(\.name))
            return names.sorted().map { EdgePlacement(target: target, cluster: $0, selected: true) }
        }
    }

    public func application(meteorNamespace: String, meteor: String) -> String {
        ArgoApplicationBuilder.name(
            meteorNamespace: meteorNamespace, meteor: meteor, target: selected ? "\(target.name)-\(EdgeBuild.slug(cluster))" : target.name)
    }
}

extension EdgeTargetStatus {
    /// Counts over a target's placements and the Applications found for them (missing ones count as desired only).
    static func summarise(_ target: Edge.Target, deployments: [EdgeDeploymentStatus], desired: Int) -> EdgeTargetStatus {
        var s = EdgeTargetStatus(name: target.name, clusterSelector: (try? target.clusterSelector?.labelSelector())?.description, desired: desired)
        var unhealthy: [EdgeDeploymentStatus] = []
        for d in deployments {
            if d.syncStatus == "Synced" { s.synced += 1 }
            if d.healthStatus == "Healthy" { s.healthy += 1 }
            if d.healthStatus == "Degraded" { s.degraded += 1 }
            if !(d.syncStatus == "Synced" && d.healthStatus == "Healthy"), unhealthy.count < limit {
                var entry = d
                entry.message = d.message.map { ObjectHelpers.truncated($0, maxBytes: 256) }
                unhealthy.append(entry)
            }
        }
        s.notHealthy = unhealthy.isEmpty ? nil : unhealthy
        return s
    }
}

extension MeteorReconciler {
    /// Argo CD's clusters, from the cache (none without edge delivery).
    var argoClusters: [ArgoClusters.Cluster] {
        clusters?.store.list().compactMap(ArgoClusters.cluster) ?? []
    }
}
