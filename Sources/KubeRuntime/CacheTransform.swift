import KubeModels

/// What an informer keeps of each object it caches, with a name. The name is part of the informer's identity
/// (`Manager.informer`): two callers asking for one resource with different transforms get two informers, never
/// silently the first caller's.
public struct CacheTransform: Sendable {
    public let name: String
    public let apply: @Sendable (JSONValue) -> JSONValue

    public init(_ name: String, _ apply: @escaping @Sendable (JSONValue) -> JSONValue) {
        self.name = name
        self.apply = apply
    }

    /// The default: `dropManagedFieldsFunction`.
    public static let dropManagedFields = CacheTransform("dropManagedFields", dropManagedFieldsFunction)

    /// The default transform: drops what controllers never read and what can be most of an object's size —
    /// `managedFields`, and kubectl's `last-applied-configuration` annotation (a second copy of the object as
    /// applied). Objects written back through the cache keep them on the server: updates go as patches.
    public static let dropManagedFieldsFunction: @Sendable (JSONValue) -> JSONValue = { o in
        var v = o
        v[path: "metadata", "managedFields"] = nil
        if v[path: "metadata", "annotations", lastApplied] != nil {
            v[path: "metadata", "annotations", lastApplied] = nil
            if v[path: "metadata", "annotations"]?.objectValue?.isEmpty == true { v[path: "metadata", "annotations"] = nil }
        }
        return v
    }

    static let lastApplied = "kubectl.kubernetes.io/last-applied-configuration"
}
