import Foundation

/// Where a kind is served: group, version, kind, plural resource name and scope.
public struct ResourceType: Sendable, Hashable, CustomStringConvertible {
    public var group: String
    public var version: String
    public var kind: String
    public var plural: String
    public var namespaced: Bool

    public init(group: String, version: String, kind: String, plural: String, namespaced: Bool) {
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.namespaced = namespaced
    }

    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    public var listKind: String { kind + "List" }
    public var description: String { group.isEmpty ? "\(plural)/\(version)" : "\(plural).\(version).\(group)" }

    /// The URL path of the collection, optionally within a namespace.
    public func collectionPath(namespace: String?) -> String {
        let root = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
        if namespaced, let namespace { return "\(root)/namespaces/\(namespace)/\(plural)" }
        return "\(root)/\(plural)"
    }

    public func objectPath(namespace: String?, name: String) -> String {
        collectionPath(namespace: namespace) + "/" + name
    }
}

/// A typed Kubernetes object. Fields a model does not declare are kept in `unknownFields` (filled by the client
/// when it decodes an object from the server) and written back on update, so an update never erases another
/// controller's fields.
public protocol KubeResource: Codable, Sendable {
    static var resourceType: ResourceType { get }
    var metadata: ObjectMeta { get set }
    var unknownFields: UnknownFields { get set }
}

extension KubeResource {
    public var name: String { metadata.name ?? "" }
    public var namespace: String? { metadata.namespace }
}

/// The whole object as last read from the server. Never encoded or decoded by the synthesised Codable of a model
/// (see the container overloads below); `ResourceCodec` fills and uses it.
public struct UnknownFields: Codable, Sendable, Hashable {
    public var original: JSONValue?
    public init(original: JSONValue? = nil) { self.original = original }
    public init(from decoder: any Decoder) throws {}
    public func encode(to encoder: any Encoder) throws {}
}

extension KeyedDecodingContainer {
    public func decode(_ type: UnknownFields.Type, forKey key: Key) throws -> UnknownFields { UnknownFields() }
}

extension KeyedEncodingContainer {
    public mutating func encode(_ value: UnknownFields, forKey key: Key) throws {}
}

/// Encodes and decodes typed resources to and from their wire form.
public enum ResourceCodec {
    public struct DecodingFailure: Error, CustomStringConvertible, Sendable {
        public var kind: String
        public var message: String
        public var description: String { "cannot decode \(kind): \(message)" }
    }

    /// Decodes a typed object and remembers the original so unknown fields survive a later update.
    public static func decode<T: KubeResource>(_ type: T.Type, from value: JSONValue, keepOriginal: Bool = true) throws -> T {
        do {
            var obj: T = try value.decode()
            if keepOriginal { obj.unknownFields = UnknownFields(original: value) }
            return obj
        } catch {
            throw DecodingFailure(kind: T.resourceType.kind, message: "\(error)")
        }
    }

    /// The wire form: `apiVersion` and `kind` set, and every field of the original the model does not know kept.
    /// Changes the model made are applied to the original as a merge patch computed against what the model saw.
    public static func encode<T: KubeResource>(_ obj: T) throws -> JSONValue {
        var stripped = obj
        stripped.unknownFields = UnknownFields()
        var typed = try JSONValue(encoding: stripped)
        typed["apiVersion"] = .string(T.resourceType.apiVersion)
        typed["kind"] = .string(T.resourceType.kind)
        guard let original = obj.unknownFields.original else { return typed }
        var seen = try JSONValue(encoding: try original.decode(as: T.self))
        seen["apiVersion"] = original["apiVersion"] ?? typed["apiVersion"]
        seen["kind"] = original["kind"] ?? typed["kind"]
        guard let patch = MergePatch.diff(from: seen, to: typed) else { return original }
        return MergePatch.apply(patch, to: original)
    }
}

/// A list of objects as the API returns it.
public struct ObjectList<Item: Sendable>: Sendable {
    public var metadata: ListMeta
    public var items: [Item]

    public init(metadata: ListMeta, items: [Item]) {
        self.metadata = metadata
        self.items = items
    }
}
