import Foundation
import KubeClient
import KubeModels

/// controllerutil-style helpers: owner references, finalizers, conditions, status writes that happen only when
/// something changed.
public enum ObjectHelpers {
    /// The ownerReference that makes `owner` the controller of a dependent: `controller: true` and
    /// `blockOwnerDeletion: true`, so foreground deletion of the owner waits for the dependent.
    public static func controllerReference(to owner: JSONValue) -> JSONValue? {
        guard let apiVersion = owner["apiVersion"]?.stringValue, let kind = owner["kind"]?.stringValue,
            let name = owner[path: "metadata", "name"]?.stringValue, let uid = owner[path: "metadata", "uid"]?.stringValue
        else { return nil }
        return [
            "apiVersion": .string(apiVersion), "kind": .string(kind), "name": .string(name), "uid": .string(uid), "controller": true,
            "blockOwnerDeletion": true,
        ]
    }

    public static func controllerReference<K: KubeResource>(to owner: K) -> OwnerReference? {
        guard let name = owner.metadata.name, let uid = owner.metadata.uid else { return nil }
        return OwnerReference(
            apiVersion: K.resourceType.apiVersion, kind: K.resourceType.kind, name: name, uid: uid, controller: true, blockOwnerDeletion: true)
    }

    /// Whether `current` already holds everything `desired` sets: every key of an object (recursively), arrays
    /// element by element and of the same length, scalars equal (1 and 1.0 alike). What the API server or other
    /// controllers add — defaults such as a container's `imagePullPolicy` — is ignored, so a controller that only
    /// patches when this is false makes no write for drift that is not there.
    public static func satisfies(_ current: JSONValue?, _ desired: JSONValue) -> Bool {
        switch (desired, current) {
        case (.object(let want), .object(let have)?):
            return want.allSatisfy { key, value in value == .null ? have[key] == nil || have[key] == .null : satisfies(have[key], value) }
        case (.array(let want), .array(let have)?):
            return want.count == have.count && zip(want, have).allSatisfy { satisfies($1, $0) }
        case (.int(let a), .double(let b)?): return Double(a) == b
        case (.double(let a), .int(let b)?): return a == Double(b)
        default: return current == desired
        }
    }

    public static func hasFinalizer(_ object: JSONValue, _ finalizer: String) -> Bool {
        (object[path: "metadata", "finalizers"]?.arrayValue ?? []).contains(.string(finalizer))
    }

    /// Adds a finalizer; a no-op (no request) when present. The patch carries the resourceVersion the decision
    /// was made on, so a concurrent change answers 409 instead of being overwritten.
    @discardableResult
    public static func addFinalizer(
        _ finalizer: String, to object: JSONValue, api: DynamicApi, params: WriteParams = WriteParams()
    ) async throws -> JSONValue {
        guard !hasFinalizer(object, finalizer) else { return object }
        let list = (object[path: "metadata", "finalizers"]?.arrayValue ?? []) + [.string(finalizer)]
        return try await api.patch(
            ObjectKeyName.name(object),
            .merge(["metadata": ["finalizers": .array(list), "resourceVersion": object[path: "metadata", "resourceVersion"] ?? .null]]),
            params: params)
    }

    @discardableResult
    public static func removeFinalizer(
        _ finalizer: String, from object: JSONValue, api: DynamicApi, params: WriteParams = WriteParams()
    ) async throws -> JSONValue? {
        guard hasFinalizer(object, finalizer) else { return object }
        let list = (object[path: "metadata", "finalizers"]?.arrayValue ?? []).filter { $0 != .string(finalizer) }
        do {
            return try await api.patch(
                ObjectKeyName.name(object),
                .merge([
                    "metadata": [
                        "finalizers": list.isEmpty ? .null : .array(list), "resourceVersion": object[path: "metadata", "resourceVersion"] ?? .null,
                    ]
                ]), params: params)
        } catch let e as KubeError where e.isNotFound {
            return nil
        }
    }

    /// What ends a message cut to fit a limit.
    public static let truncationMarker = "… (truncated)"

    /// `text` if it fits in `maxBytes` of UTF-8, else as much of it as fits (whole characters) followed by
    /// `truncationMarker`, in `maxBytes` in all.
    public static func truncated(_ text: String, maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        let room = max(0, maxBytes - truncationMarker.utf8.count)
        var used = 0
        var end = text.startIndex
        for (index, character) in zip(text.indices, text) {
            let size = character.utf8.count
            if used + size > room { break }
            used += size
            end = text.index(after: index)
        }
        return text[..<end] + truncationMarker
    }

    /// Sets a condition in a metav1.Condition list: `lastTransitionTime` moves only when the status changes, and
    /// a message past `Condition.maxMessageBytes` is cut to fit (a longer one would fail the whole status write).
    /// Returns true when the list changed.
    @discardableResult
    public static func setCondition(_ conditions: inout [Condition], _ new: Condition) -> Bool {
        var new = new
        new.message = truncated(new.message, maxBytes: Condition.maxMessageBytes)
        if let i = conditions.firstIndex(where: { $0.type == new.type }) {
            var merged = new
            if conditions[i].status == new.status { merged.lastTransitionTime = conditions[i].lastTransitionTime }
            if conditions[i] == merged { return false }
            conditions[i] = merged
            return true
        }
        conditions.append(new)
        return true
    }

    /// Writes `status` through the status subresource only when it differs from what the object has; returns
    /// the updated object, or nil when nothing needed writing (steady state makes no requests).
    public static func patchStatusIfChanged(
        _ object: JSONValue, status: JSONValue, api: DynamicApi, params: WriteParams = WriteParams()
    ) async throws -> JSONValue? {
        let current = object["status"] ?? .object([:])
        guard let diff = MergePatch.diff(from: current, to: status) else { return nil }
        return try await api.patchStatus(ObjectKeyName.name(object), .merge(["status": diff]), params: params)
    }
}

enum ObjectKeyName {
    static func name(_ o: JSONValue) -> String { o[path: "metadata", "name"]?.stringValue ?? "" }
}
