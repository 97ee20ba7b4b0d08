import KubeClient
import KubeModels

/// A controller's client: reads come from its informers' caches, writes go to the API server and are remembered
/// (`RecentWrites`) until those caches show them, so a reconcile that runs before the watch event neither repeats
/// a create nor rewrites a status it just wrote. Every write carries one field manager, and the objects the
/// controller makes (creates and spec patches) one field validation — controller-runtime's manager client with
/// `WithFieldOwner` and `WithFieldValidation`. Status writes and finalizer edits go without validation: they write
/// only fields the controller's own CRD declares, and an older CRD must not stop them.
public struct CachedClient: Sendable {
    public let client: KubeClient
    public let fieldManager: String
    public let fieldValidation: FieldValidation?
    let recent: RecentWrites

    public init(client: KubeClient, fieldManager: String, fieldValidation: FieldValidation? = nil, recent: RecentWrites = RecentWrites()) {
        self.client = client
        self.fieldManager = fieldManager
        self.fieldValidation = fieldValidation
        self.recent = recent
    }

    /// Reads from `informer` through this client see its writes: call once per informer, before reading.
    public func reads<K: CachedResource>(from informer: Informer<K>) async { await recent.track(informer) }

    /// The fresher of the cache's copy and the one this client wrote.
    public func get<K: CachedResource>(_ key: ObjectKey, from informer: Informer<K>) -> K? {
        recent.read(key, kind: informer.resourceType.kind, from: informer)
    }

    var makes: WriteParams { WriteParams(fieldManager: fieldManager, fieldValidation: fieldValidation) }
    var edits: WriteParams { WriteParams(fieldManager: fieldManager) }

    func api(_ type: ResourceType, _ namespace: String?) -> DynamicApi { client.dynamic(type, namespace: namespace) }

    /// Creates `object`; a 409 AlreadyExists is thrown (`ignoreAlreadyExists` for "made by an earlier attempt").
    @discardableResult
    public func create(_ object: JSONValue, _ type: ResourceType) async throws -> JSONValue {
        let created = try await api(type, ObjectKey(object).namespace).create(object, params: makes)
        recent.record(created)
        return created
    }

    /// Patches the object's spec (or other fields it owns) with the field validation of a create.
    @discardableResult
    public func patch(_ key: ObjectKey, _ type: ResourceType, _ patch: Patch) async throws -> JSONValue {
        let patched = try await api(type, key.namespace).patch(key.name, patch, params: makes)
        recent.record(patched)
        return patched
    }

    /// Merge-patches `status` to `desired` when it differs from `current`'s, with only the fields that differ; no
    /// request when nothing does. Returns the written object, or nil when nothing changed.
    @discardableResult
    public func patchStatusIfChanged(_ current: JSONValue, _ type: ResourceType, status desired: JSONValue) async throws -> JSONValue? {
        let written = try await ObjectHelpers.patchStatusIfChanged(
            current, status: desired, api: api(type, ObjectKey(current).namespace), params: edits)
        recent.record(written)
        return written
    }

    /// Adds `finalizer` (at `object`'s resourceVersion: a decision made on a stale copy is a 409); returns the object.
    public func addFinalizer(_ finalizer: String, to object: JSONValue, _ type: ResourceType) async throws -> JSONValue {
        guard !ObjectHelpers.hasFinalizer(object, finalizer) else { return object }
        let written = try await ObjectHelpers.addFinalizer(finalizer, to: object, api: api(type, ObjectKey(object).namespace), params: edits)
        recent.record(written)
        return written
    }

    /// Removes `finalizer`; nil when the object is gone (the last finalizer removed lets the API server delete it).
    @discardableResult
    public func removeFinalizer(_ finalizer: String, from object: JSONValue, _ type: ResourceType) async throws -> JSONValue? {
        let written = try await ObjectHelpers.removeFinalizer(finalizer, from: object, api: api(type, ObjectKey(object).namespace), params: edits)
        recent.record(written)
        return written
    }

    /// Deletes the object and forgets any write of it; a 404 is thrown (`ignoreNotFound` for "already gone").
    public func delete(_ key: ObjectKey, _ type: ResourceType, _ params: DeleteParams = DeleteParams()) async throws {
        _ = try await api(type, key.namespace).delete(key.name, params: params)
        recent.forget(kind: type.kind, key)
    }
}
