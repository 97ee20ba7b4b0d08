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

    /// The default: `Informer.dropManagedFields`.
    public static let dropManagedFields = CacheTransform("dropManagedFields", Informer.dropManagedFields)
}
