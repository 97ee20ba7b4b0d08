import Foundation
import KubeModels

/// What the runtime caches, hands to handlers and keys work by (kube-rs's `Resource` bound on `Store<K>` and
/// `Controller<K>`): read from an object's cached JSON, with the metadata the runtime itself reads. `JSONValue` is
/// the dynamic object (kube-rs's `DynamicObject`): every resource, including one the operator cannot decode. A
/// `KubeResource` model is a typed one: an object that does not decode is left out of its cache (and logged), as
/// kube-rs's watcher reports it.
public protocol CachedResource: Sendable {
    init(cached: JSONValue) throws
    var objectKey: ObjectKey { get }
    var resourceVersion: String? { get }
    var generation: Int64? { get }
    var isBeingDeleted: Bool { get }
    var labels: [String: String] { get }
    var ownerReferences: [OwnerReference] { get }
}

extension CachedResource {
    /// The owner reference with `controller: true`.
    public var controllerOwner: OwnerReference? { ownerReferences.first { $0.controller == true } }
}

extension JSONValue: CachedResource {
    public init(cached: JSONValue) { self = cached }
    public var objectKey: ObjectKey { ObjectKey(self) }
    public var resourceVersion: String? { self[path: "metadata", "resourceVersion"]?.stringValue }
    public var generation: Int64? { self[path: "metadata", "generation"]?.intValue }
    public var isBeingDeleted: Bool { self[path: "metadata", "deletionTimestamp"] != nil }

    public var labels: [String: String] {
        var out: [String: String] = [:]
        for (k, v) in self[path: "metadata", "labels"]?.objectValue ?? [:] { out[k] = v.stringValue ?? "" }
        return out
    }

    public var ownerReferences: [OwnerReference] {
        (self[path: "metadata", "ownerReferences"]?.arrayValue ?? []).compactMap { r in
            guard let apiVersion = r["apiVersion"]?.stringValue, let kind = r["kind"]?.stringValue, let name = r["name"]?.stringValue,
                let uid = r["uid"]?.stringValue
            else { return nil }
            return OwnerReference(
                apiVersion: apiVersion, kind: kind, name: name, uid: uid, controller: r["controller"]?.boolValue,
                blockOwnerDeletion: r["blockOwnerDeletion"]?.boolValue)
        }
    }
}

/// A typed model is cached as its decoded value (unknown fields not kept: the cache is read, never written back).
extension CachedResource where Self: KubeResource {
    public init(cached: JSONValue) throws { self = try ResourceCodec.decode(Self.self, from: cached, keepOriginal: false) }
    public var objectKey: ObjectKey { ObjectKey(namespace: metadata.namespace, name: metadata.name ?? "") }
    public var resourceVersion: String? { metadata.resourceVersion }
    public var generation: Int64? { metadata.generation }
    public var isBeingDeleted: Bool { metadata.deletionTimestamp != nil }
    public var labels: [String: String] { metadata.labels ?? [:] }
    public var ownerReferences: [OwnerReference] { metadata.ownerReferences ?? [] }
}
