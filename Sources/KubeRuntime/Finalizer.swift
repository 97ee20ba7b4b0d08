import KubeClient
import KubeModels

/// What a reconcile under a finalizer is asked to do (kube-rs's `finalizer::Event`).
public enum FinalizerEvent: Sendable {
    /// The object is live, with the finalizer on it when it needs one: converge.
    case apply(JSONValue)
    /// The object is being deleted and still carries the finalizer: remove what only this controller can (objects
    /// ownerReferences cannot reach). The finalizer comes off once this returns, and the API server deletes the
    /// object when no finalizer is left.
    case cleanup(JSONValue)
}

extension CachedClient {
    /// Runs `reconcile` under `finalizer`, as kube-rs's `finalizer()` does: a live object that `needs` the
    /// finalizer gets it first (at the object's resourceVersion: a stale decision is a 409), so a deletion can never
    /// skip the cleanup; an object being deleted is cleaned up once, and the finalizer removed after the cleanup
    /// succeeded (a failed cleanup is retried with the finalizer still holding the object). An object being deleted
    /// without this finalizer is none of this controller's business. An object gone before its finalizer could be
    /// added has nothing left to reconcile.
    public func finalizer(
        _ finalizer: String, on object: JSONValue, _ type: ResourceType, needed: Bool,
        reconcile: (FinalizerEvent) async throws -> ReconcileAction
    ) async throws -> ReconcileAction {
        if object[path: "metadata", "deletionTimestamp"] != nil {
            guard ObjectHelpers.hasFinalizer(object, finalizer) else { return .done }
            let action = try await reconcile(.cleanup(object))
            try await removeFinalizer(finalizer, from: object, type)
            return action
        }
        guard needed else { return try await reconcile(.apply(object)) }
        guard let live = try await ignoreNotFound({ try await addFinalizer(finalizer, to: object, type) }) else { return .done }
        return try await reconcile(.apply(live))
    }
}
