import KubeModels

/// Namespace and name of an object: the cache key and what a reconcile is asked about
/// (controller-runtime's `types.NamespacedName` / `reconcile.Request`).
public struct ObjectKey: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var namespace: String?
    public var name: String

    public init(namespace: String?, name: String) {
        self.namespace = (namespace?.isEmpty ?? true) ? nil : namespace
        self.name = name
    }

    public init(_ object: JSONValue) {
        self.init(namespace: object[path: "metadata", "namespace"]?.stringValue, name: object[path: "metadata", "name"]?.stringValue ?? "")
    }

    public var description: String { namespace.map { "\($0)/\(name)" } ?? name }

    public static func < (a: ObjectKey, b: ObjectKey) -> Bool { a.description < b.description }
}
