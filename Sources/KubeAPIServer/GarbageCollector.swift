import Foundation
import KubeModels

/// The garbage collector and namespace controller in one loop: deletes dependents whose owners are gone,
/// drives foreground and orphan deletion, and empties terminating namespaces. Runs after writes signal it.
struct GarbageCollector: Sendable {
    let core: APIServerCore

    func run() async {
        for await _ in core.gcEvents {
            if Task.isCancelled { return }
            // Several passes settle chains of owners (A owns B owns C) within one signal.
            for _ in 0..<8 where sweep() {}
        }
    }

    /// One pass. Returns true when it changed something.
    @discardableResult
    func sweep() -> Bool {
        let store = core.store
        let all = store.allObjects()
        var liveUIDs = Set<String>()
        for (_, o) in all { liveUIDs.insert(o.uid) }
        var changed = false
        var dependentsByOwner: [String: [(String, StoredObject)]] = [:]
        for (rk, o) in all {
            for ref in o.value[path: "metadata", "ownerReferences"]?.arrayValue ?? [] {
                if let uid = ref["uid"]?.stringValue { dependentsByOwner[uid, default: []].append((rk, o)) }
            }
        }
        for (rk, o) in all {
            let meta = o.value["metadata"] ?? [:]
            let finalizers = (meta["finalizers"]?.arrayValue ?? []).compactMap(\.stringValue)
            let deleting = meta["deletionTimestamp"] != nil
            // Dependents whose owners are all gone are deleted; dangling references beside live owners are dropped.
            let refs = meta["ownerReferences"]?.arrayValue ?? []
            if !refs.isEmpty {
                let dangling = refs.filter { !liveUIDs.contains($0["uid"]?.stringValue ?? "") }
                let ownersDeletingInForeground = refs.contains { ref in
                    guard let uid = ref["uid"]?.stringValue, let owner = store.lookup(uid: uid) else { return false }
                    return owner.value[path: "metadata", "deletionTimestamp"] != nil
                        && (owner.value[path: "metadata", "finalizers"]?.arrayValue ?? []).contains("foregroundDeletion")
                }
                if dangling.count == refs.count || ownersDeletingInForeground {
                    if !deleting {
                        changed = deleteObject(rk, o, policy: ownersDeletingInForeground ? .foreground : .background) || changed
                    }
                    continue
                } else if !dangling.isEmpty {
                    changed =
                        update(rk, o) { v in
                            v[path: "metadata", "ownerReferences"] = .array(refs.filter { liveUIDs.contains($0["uid"]?.stringValue ?? "") })
                        } || changed
                }
            }
            guard deleting else { continue }
            if finalizers.contains("orphan") {
                for (drk, d) in dependentsByOwner[o.uid] ?? [] {
                    changed =
                        update(drk, d) { v in
                            let remaining = (v[path: "metadata", "ownerReferences"]?.arrayValue ?? []).filter { $0["uid"]?.stringValue != o.uid }
                            v[path: "metadata", "ownerReferences"] = remaining.isEmpty ? nil : .array(remaining)
                        } || changed
                }
                changed = removeFinalizer("orphan", rk, o) || changed
            } else if finalizers.contains("foregroundDeletion") {
                let blocking = (dependentsByOwner[o.uid] ?? []).filter { _, d in
                    (d.value[path: "metadata", "ownerReferences"]?.arrayValue ?? []).contains {
                        $0["uid"]?.stringValue == o.uid && $0["blockOwnerDeletion"]?.boolValue == true
                    }
                }
                for (drk, d) in dependentsByOwner[o.uid] ?? [] where d.value[path: "metadata", "deletionTimestamp"] == nil {
                    changed = deleteObject(drk, d, policy: .foreground) || changed
                }
                if blocking.isEmpty { changed = removeFinalizer("foregroundDeletion", rk, o) || changed }
            }
            if rk == APIServerCore.namespacesKey {
                changed = finalizeNamespace(o) || changed
            }
        }
        return changed
    }

    func finalizeNamespace(_ ns: StoredObject) -> Bool {
        let store = core.store
        var remaining = 0
        var changed = false
        for (rk, o) in store.allObjects() where o.namespace == ns.name && rk != APIServerCore.namespacesKey {
            remaining += 1
            if o.value[path: "metadata", "deletionTimestamp"] == nil {
                changed = deleteObject(rk, o, policy: .background) || changed
            }
        }
        if remaining == 0 {
            changed = update(APIServerCore.namespacesKey, ns) { v in v[path: "spec", "finalizers"] = nil } || changed
            if let current = store.get(APIServerCore.namespacesKey, ns.objectKey),
                (current.value[path: "metadata", "finalizers"]?.arrayValue ?? []).isEmpty
            {
                _ = try? store.guaranteedUpdate(APIServerCore.namespacesKey, ns.objectKey) { _ in .delete() }
                changed = true
            }
        }
        return changed
    }

    func deleteObject(_ rk: String, _ o: StoredObject, policy: DeletionPropagation) -> Bool {
        guard let r = core.registry.lookup(key: rk) else { return false }
        let scope = RequestScope(resource: r, version: r.storageVersion, namespace: r.namespaced ? o.namespace : nil, name: o.name)
        return (try? core.delete(scope, options: .init(propagationPolicy: policy, preconditionUID: o.uid))) != nil
    }

    func removeFinalizer(_ f: String, _ rk: String, _ o: StoredObject) -> Bool {
        do {
            try core.store.guaranteedUpdate(rk, o.objectKey) { current in
                guard var v = current?.value, current?.uid == o.uid else { return .unchanged }
                let remaining = (v[path: "metadata", "finalizers"]?.arrayValue ?? []).filter { $0.stringValue != f }
                v[path: "metadata", "finalizers"] = remaining.isEmpty ? nil : .array(remaining)
                let nsFinalizers = rk == APIServerCore.namespacesKey ? (v[path: "spec", "finalizers"]?.arrayValue ?? []) : []
                return remaining.isEmpty && nsFinalizers.isEmpty ? .delete(final: v) : .put(v)
            }
            core.signalGC()
            return true
        } catch {
            return false
        }
    }

    func update(_ rk: String, _ o: StoredObject, _ change: (inout JSONValue) -> Void) -> Bool {
        var did = false
        _ = try? core.store.guaranteedUpdate(rk, o.objectKey) { current in
            guard var v = current?.value, current?.uid == o.uid else { return .unchanged }
            let before = v
            change(&v)
            if v == before { return .unchanged }
            did = true
            return .put(v)
        }
        return did
    }
}
