import Foundation
import KubeModels
import NIOHTTP1

public struct ListOptions: Sendable {
    public var labelSelector: String?
    public var fieldSelector: String?
    public var limit: Int?
    public var continueToken: String?
    public var resourceVersion: String?

    public init(
        labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int? = nil, continueToken: String? = nil, resourceVersion: String? = nil
    ) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
    }

    var query: [(String, String)] {
        var q: [(String, String)] = []
        if let labelSelector, !labelSelector.isEmpty { q.append(("labelSelector", labelSelector)) }
        if let fieldSelector, !fieldSelector.isEmpty { q.append(("fieldSelector", fieldSelector)) }
        if let limit { q.append(("limit", String(limit))) }
        if let continueToken { q.append(("continue", continueToken)) }
        if let resourceVersion { q.append(("resourceVersion", resourceVersion)) }
        return q
    }
}

public struct WatchOptions: Sendable {
    public var resourceVersion: String?
    public var labelSelector: String?
    public var fieldSelector: String?
    public var timeoutSeconds: Int?
    public var allowBookmarks: Bool
    /// The client-side idle deadline: a watch that delivers no complete event, bookmarks included, for this long
    /// is presumed dead (a half-open connection, a proxy that stopped forwarding) and ends with
    /// `KubeError.watchIdle`, so its caller resumes from the last version. The server's `timeoutSeconds` cannot do
    /// this: it never arrives over a dead connection. Only meaningful with bookmarks; nil turns it off.
    public var idleTimeout: Duration?

    /// Measured on kube-apiserver 1.36 (a quiet namespace, `allowWatchBookmarks=true&timeoutSeconds=200`): the
    /// initial-events-end bookmark at once, the first progress bookmark 121 s after the watch opened, then one
    /// every ~61 s, and one 2 s before the timeout. 180 s is one and a half times the longest gap seen.
    public static let defaultIdleTimeout: Duration = .seconds(180)

    public init(
        resourceVersion: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil, timeoutSeconds: Int? = 290,
        allowBookmarks: Bool = true, idleTimeout: Duration? = WatchOptions.defaultIdleTimeout
    ) {
        self.resourceVersion = resourceVersion
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.timeoutSeconds = timeoutSeconds
        self.allowBookmarks = allowBookmarks
        self.idleTimeout = allowBookmarks ? idleTimeout : nil
    }

    var query: [(String, String)] {
        var q: [(String, String)] = [("watch", "true")]
        if let resourceVersion { q.append(("resourceVersion", resourceVersion)) }
        if let labelSelector, !labelSelector.isEmpty { q.append(("labelSelector", labelSelector)) }
        if let fieldSelector, !fieldSelector.isEmpty { q.append(("fieldSelector", fieldSelector)) }
        if let timeoutSeconds { q.append(("timeoutSeconds", String(timeoutSeconds))) }
        if allowBookmarks { q.append(("allowWatchBookmarks", "true")) }
        return q
    }
}

public struct WriteParams: Sendable {
    public var fieldManager: String?
    public var dryRun: Bool
    public var fieldValidation: FieldValidation?
    /// Server-side apply only: take over fields owned by other managers.
    public var force: Bool

    public init(fieldManager: String? = nil, dryRun: Bool = false, fieldValidation: FieldValidation? = nil, force: Bool = false) {
        self.fieldManager = fieldManager
        self.dryRun = dryRun
        self.fieldValidation = fieldValidation
        self.force = force
    }

    var query: [(String, String)] {
        var q: [(String, String)] = []
        if let fieldManager { q.append(("fieldManager", fieldManager)) }
        if dryRun { q.append(("dryRun", "All")) }
        if let fieldValidation { q.append(("fieldValidation", fieldValidation.rawValue)) }
        if force { q.append(("force", "true")) }
        return q
    }
}

public struct DeleteParams: Sendable {
    public typealias Propagation = DeletionPropagation
    public var propagationPolicy: Propagation?
    public var preconditionUID: String?
    public var preconditionResourceVersion: String?
    public var dryRun: Bool

    public init(
        propagationPolicy: Propagation? = nil, preconditionUID: String? = nil, preconditionResourceVersion: String? = nil, dryRun: Bool = false
    ) {
        self.propagationPolicy = propagationPolicy
        self.preconditionUID = preconditionUID
        self.preconditionResourceVersion = preconditionResourceVersion
        self.dryRun = dryRun
    }

    var body: JSONValue {
        var o: JSONObject = ["kind": "DeleteOptions", "apiVersion": "v1"]
        if let p = propagationPolicy { o["propagationPolicy"] = .string(p.rawValue) }
        var pre: JSONObject = [:]
        if let u = preconditionUID { pre["uid"] = .string(u) }
        if let r = preconditionResourceVersion { pre["resourceVersion"] = .string(r) }
        if !pre.isEmpty { o["preconditions"] = .object(pre) }
        if dryRun { o["dryRun"] = ["All"] }
        return .object(o)
    }
}

/// A patch body with its format.
public enum Patch: Sendable {
    case merge(JSONValue)
    case json(JSONValue)
    case strategicMerge(JSONValue)
    /// Server-side apply; needs `WriteParams.fieldManager`.
    case apply(JSONValue)

    var type: PatchType {
        switch self {
        case .merge: return .merge
        case .json: return .json
        case .strategicMerge: return .strategicMerge
        case .apply: return .apply
        }
    }

    var body: JSONValue {
        switch self {
        case .merge(let v), .json(let v), .strategicMerge(let v), .apply(let v): return v
        }
    }
}

/// One event of a watch, decoded.
public enum WatchEvent<Object: Sendable>: Sendable {
    case added(Object)
    case modified(Object)
    case deleted(Object)
    /// The server's progress marker: resume from this resourceVersion.
    case bookmark(resourceVersion: String)
}

/// Requests for one resource type as untyped JSON: any CRD, including ones this project does not own.
public struct DynamicApi: Sendable {
    public let client: KubeClient
    public let resourceType: ResourceType
    /// nil means all namespaces for list and watch of a namespaced type.
    public let namespace: String?

    func collection() -> String { resourceType.collectionPath(namespace: resourceType.namespaced ? namespace : nil) }

    func item(_ name: String, namespace ns: String? = nil) throws -> String {
        let n = ns ?? namespace
        if resourceType.namespaced && (n ?? "").isEmpty {
            throw KubeError.configuration("\(resourceType.kind) is namespaced: a namespace is required to address \(name)")
        }
        guard !name.isEmpty else { throw KubeError.configuration("\(resourceType.kind): object name is empty") }
        let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
        return resourceType.objectPath(namespace: resourceType.namespaced ? n : nil, name: escaped)
    }

    /// nil when the object does not exist.
    public func getOptional(_ name: String) async throws -> JSONValue? {
        do { return try await get(name) } catch let e as KubeError where e.isNotFound { return nil }
    }

    public func get(_ name: String) async throws -> JSONValue {
        try await client.json(.GET, try item(name))
    }

    /// One page of a list: items, and the list's resourceVersion and continue token.
    public func list(_ options: ListOptions = ListOptions()) async throws -> ObjectList<JSONValue> {
        let v = try await client.json(.GET, collection(), query: options.query)
        let meta: ListMeta = (try? (v["metadata"] ?? [:]).decode()) ?? ListMeta()
        return ObjectList(metadata: meta, items: v["items"]?.arrayValue ?? [])
    }

    /// Every page of a list, following `continue` tokens, each item passed through `transform` as its page arrives (so a cache that keeps
    /// less than the whole object never holds the whole list twice).
    public func listAll(
        _ options: ListOptions = ListOptions(), pageSize: Int = 500, transform: (@Sendable (JSONValue) -> JSONValue)? = nil
    ) async throws -> ObjectList<JSONValue> {
        var opts = options
        opts.limit = pageSize
        var items: [JSONValue] = []
        var first: ListMeta?
        while true {
            let page = try await list(opts)
            if first == nil { first = page.metadata }
            if let transform { items += page.items.map(transform) } else { items += page.items }
            guard let c = page.metadata.continue, !c.isEmpty else { break }
            opts.continueToken = c
        }
        return ObjectList(metadata: ListMeta(resourceVersion: first?.resourceVersion), items: items)
    }

    public func create(_ object: JSONValue, params: WriteParams = WriteParams()) async throws -> JSONValue {
        var body = object
        body["apiVersion"] = .string(resourceType.apiVersion)
        body["kind"] = .string(resourceType.kind)
        let ns = object[path: "metadata", "namespace"]?.stringValue ?? namespace
        let path = resourceType.collectionPath(namespace: resourceType.namespaced ? ns : nil)
        if resourceType.namespaced && (ns ?? "").isEmpty {
            throw KubeError.configuration("\(resourceType.kind) is namespaced: a namespace is required to create it")
        }
        return try await client.json(.POST, path, query: params.query, body: body)
    }

    /// PUT: the object's `metadata.resourceVersion` is the precondition; a stale one throws `KubeError.conflict`.
    public func replace(_ object: JSONValue, params: WriteParams = WriteParams()) async throws -> JSONValue {
        try await client.json(
            .PUT, try item(object[path: "metadata", "name"]?.stringValue ?? "", namespace: object[path: "metadata", "namespace"]?.stringValue),
            query: params.query, body: object)
    }

    public func replaceStatus(_ object: JSONValue, params: WriteParams = WriteParams()) async throws -> JSONValue {
        try await client.json(
            .PUT,
            try item(object[path: "metadata", "name"]?.stringValue ?? "", namespace: object[path: "metadata", "namespace"]?.stringValue) + "/status",
            query: params.query, body: object)
    }

    public func patch(_ name: String, _ patch: Patch, params: WriteParams = WriteParams()) async throws -> JSONValue {
        try await client.json(.PATCH, try item(name), query: params.query, body: patch.body, contentType: patch.type.rawValue)
    }

    public func patchStatus(_ name: String, _ patch: Patch, params: WriteParams = WriteParams()) async throws -> JSONValue {
        try await client.json(.PATCH, try item(name) + "/status", query: params.query, body: patch.body, contentType: patch.type.rawValue)
    }

    public func getStatus(_ name: String) async throws -> JSONValue {
        try await client.json(.GET, try item(name) + "/status")
    }

    /// Deletes; returns the object when it lingers with a deletionTimestamp (finalizers), or nil once it is gone.
    @discardableResult
    public func delete(_ name: String, params: DeleteParams = DeleteParams()) async throws -> JSONValue? {
        let v = try await client.json(.DELETE, try item(name), body: params.body)
        return v["kind"]?.stringValue == "Status" ? nil : v
    }

    public func deleteCollection(_ options: ListOptions = ListOptions(), params: DeleteParams = DeleteParams()) async throws {
        _ = try await client.json(.DELETE, collection(), query: options.query, body: params.body)
    }

    public func watch(_ options: WatchOptions = WatchOptions()) -> WatchStream<WatchEvent<JSONValue>> {
        client.watchEvents(collection(), query: options.query, timeoutSeconds: options.timeoutSeconds, idleTimeout: options.idleTimeout)
            .compactMap { type, object in
                switch type {
                case .added: return .added(object)
                case .modified: return .modified(object)
                case .deleted: return .deleted(object)
                case .bookmark: return .bookmark(resourceVersion: object[path: "metadata", "resourceVersion"]?.stringValue ?? "")
                case .error: return nil
                }
            }
    }
}

/// Typed requests for a `KubeResource`. Objects read keep the fields their model does not know, and updates
/// write those fields back.
public struct Api<K: KubeResource>: Sendable {
    public let client: KubeClient
    public let namespace: String?

    public var dynamic: DynamicApi { DynamicApi(client: client, resourceType: K.resourceType, namespace: namespace) }

    func decode(_ v: JSONValue) throws -> K {
        do { return try ResourceCodec.decode(K.self, from: v) } catch { throw KubeError.decoding("\(error)") }
    }

    func encode(_ k: K) throws -> JSONValue {
        do { return try ResourceCodec.encode(k) } catch { throw KubeError.decoding("cannot encode \(K.resourceType.kind): \(error)") }
    }

    public func get(_ name: String) async throws -> K { try decode(try await dynamic.get(name)) }

    /// nil when the object does not exist.
    public func getOptional(_ name: String) async throws -> K? {
        try await dynamic.getOptional(name).map(decode)
    }

    public func list(_ options: ListOptions = ListOptions()) async throws -> ObjectList<K> {
        let page = try await dynamic.list(options)
        return ObjectList(metadata: page.metadata, items: try page.items.map(decode))
    }

    public func listAll(_ options: ListOptions = ListOptions(), pageSize: Int = 500) async throws -> ObjectList<K> {
        let all = try await dynamic.listAll(options, pageSize: pageSize)
        return ObjectList(metadata: all.metadata, items: try all.items.map(decode))
    }

    public func create(_ object: K, params: WriteParams = WriteParams()) async throws -> K {
        try decode(try await dynamic.create(try encode(object), params: params))
    }

    public func replace(_ object: K, params: WriteParams = WriteParams()) async throws -> K {
        try decode(try await dynamic.replace(try encode(object), params: params))
    }

    public func replaceStatus(_ object: K, params: WriteParams = WriteParams()) async throws -> K {
        try decode(try await dynamic.replaceStatus(try encode(object), params: params))
    }

    public func patch(_ name: String, _ patch: Patch, params: WriteParams = WriteParams()) async throws -> K {
        try decode(try await dynamic.patch(name, patch, params: params))
    }

    public func patchStatus(_ name: String, _ patch: Patch, params: WriteParams = WriteParams()) async throws -> K {
        try decode(try await dynamic.patchStatus(name, patch, params: params))
    }

    @discardableResult
    public func delete(_ name: String, params: DeleteParams = DeleteParams()) async throws -> K? {
        try await dynamic.delete(name, params: params).map(decode)
    }

    public func watch(_ options: WatchOptions = WatchOptions()) -> WatchStream<WatchEvent<K>> {
        dynamic.watch(options).compactMap { event in
            switch event {
            case .added(let v): return .added(try ResourceCodec.decode(K.self, from: v, keepOriginal: false))
            case .modified(let v): return .modified(try ResourceCodec.decode(K.self, from: v, keepOriginal: false))
            case .deleted(let v): return .deleted(try ResourceCodec.decode(K.self, from: v, keepOriginal: false))
            case .bookmark(let rv): return .bookmark(resourceVersion: rv)
            }
        }
    }
}
