import DequeModule
import Foundation
import KubeModels
import Synchronization

/// An object as stored: its JSON, the same serialised once (lists and watches send these bytes as they are),
/// and the fields indexes and selectors need.
struct StoredObject: Sendable {
    var value: JSONValue
    var bytes: [UInt8]
    var rv: UInt64
    var uid: String
    var namespace: String
    var name: String
    var labels: [String: String]
    /// `namespace/name`: the table key and the list order, computed once (lists sort by it).
    let objectKey: String

    init(value: JSONValue, rv: UInt64) {
        self.value = value
        self.bytes = value.serialized()
        self.rv = rv
        self.uid = value[path: "metadata", "uid"]?.stringValue ?? ""
        self.namespace = value[path: "metadata", "namespace"]?.stringValue ?? ""
        self.name = value[path: "metadata", "name"]?.stringValue ?? ""
        var labels: [String: String] = [:]
        for (k, v) in value[path: "metadata", "labels"]?.objectValue ?? [:] { labels[k] = v.stringValue ?? "" }
        self.labels = labels
        self.objectKey = namespace + "/" + name
    }
    /// The fields a field selector may name: metadata.name and metadata.namespace everywhere, and what
    /// kube-apiserver adds per kind (Events: involvedObject.*, reason, type, source; Secrets: type).
    var fields: [String: String] {
        var f = ["metadata.name": name, "metadata.namespace": namespace]
        switch value["kind"]?.stringValue {
        case "Event":
            for k in ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"] {
                f["involvedObject.\(k)"] = value[path: "involvedObject", k]?.stringValue ?? ""
            }
            f["reason"] = value["reason"]?.stringValue ?? ""
            f["type"] = value["type"]?.stringValue ?? ""
            f["source"] = value[path: "source", "component"]?.stringValue ?? ""
            f["reportingComponent"] = value["reportingComponent"]?.stringValue ?? ""
        case "Secret":
            f["type"] = value["type"]?.stringValue ?? ""
        default:
            break
        }
        return f
    }

    static let selectableFields: [String: Set<String>] = [
        "/events": [
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
            "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "type", "source", "reportingComponent",
        ],
        "/secrets": ["type"],
    ]
}

/// One change, kept in the bounded history that watches replay from (etcd's compaction window in small).
struct ChangeRecord: Sendable {
    var type: WatchEventType
    var resourceKey: String
    var object: StoredObject
    var previousLabels: [String: String]?
}

/// What a watch stream carries to its HTTP writer.
enum WatchFrame: Sendable {
    case event(WatchEventType, StoredObject)
    case bookmark(UInt64)
    /// The end of a streaming list's initial events (KEP-3157): a bookmark carrying `k8s.io/initial-events-end`.
    case initialEventsEnd(UInt64)
    case error(Status)
}

struct WatchFilter: Sendable {
    var resourceKey: String
    var namespace: String?
    var labelSelector: LabelSelector
    var fieldSelector: FieldSelector?

    func matchesScope(_ o: StoredObject) -> Bool {
        if let namespace, o.namespace != namespace { return false }
        if let fieldSelector, !fieldSelector.matches(o.fields) { return false }
        return true
    }

    func matches(_ o: StoredObject) -> Bool { matchesScope(o) && labelSelector.matches(o.labels) }

    /// The event this watcher sees for a change, if any: selector transitions turn MODIFIED into ADDED/DELETED.
    func translate(_ r: ChangeRecord) -> WatchEventType? {
        guard r.resourceKey == resourceKey, matchesScope(r.object) else { return nil }
        let now = labelSelector.matches(r.object.labels)
        switch r.type {
        case .modified:
            let before = r.previousLabels.map { labelSelector.matches($0) } ?? now
            switch (before, now) {
            case (true, true): return .modified
            case (false, true): return .added
            case (true, false): return .deleted
            case (false, false): return nil
            }
        default:
            return now ? r.type : nil
        }
    }
}

/// The in-memory object store: one resourceVersion sequence for all kinds, a bounded change history and
/// the open watches. Reads are snapshots; writes are compare-and-swap on resourceVersion, like etcd.
final class ObjectStore: Sendable {
    struct Watcher {
        var filter: WatchFilter
        var continuation: AsyncStream<WatchFrame>.Continuation
    }

    struct State {
        var tables: [String: [String: StoredObject]] = [:]
        var rv: UInt64 = 1
        var history = Deque<ChangeRecord>()
        /// Watches may start from any resourceVersion >= this one.
        var oldestWatchableRV: UInt64 = 1
        var watchers: [Int: Watcher] = [:]
        var nextWatcherID = 0
        var uidIndex: [String: (String, String)] = [:]
    }

    let state = Mutex(State())
    let historyLimit: Int
    let watchBufferLimit: Int

    init(historyLimit: Int = 50_000, watchBufferLimit: Int = 20_000) {
        self.historyLimit = historyLimit
        self.watchBufferLimit = watchBufferLimit
    }

    var currentRV: UInt64 { state.withLock { $0.rv } }

    func get(_ resourceKey: String, _ objectKey: String) -> StoredObject? {
        state.withLock { $0.tables[resourceKey]?[objectKey] }
    }

    func lookup(uid: String) -> StoredObject? {
        state.withLock { s in
            guard let (rk, ok) = s.uidIndex[uid] else { return nil }
            return s.tables[rk]?[ok]
        }
    }

    func resourceKey(uid: String) -> String? {
        state.withLock { $0.uidIndex[uid]?.0 }
    }

    /// A consistent snapshot of one table (optionally one namespace) and the resourceVersion it reflects.
    func list(_ resourceKey: String, namespace: String?) -> ([StoredObject], UInt64) {
        state.withLock { s in
            let table = s.tables[resourceKey] ?? [:]
            let items: [StoredObject]
            if let namespace {
                items = table.values.filter { $0.namespace == namespace }
            } else {
                items = Array(table.values)
            }
            return (items, s.rv)
        }
    }

    func allObjects() -> [(String, StoredObject)] {
        state.withLock { s in s.tables.flatMap { rk, t in t.values.map { (rk, $0) } } }
    }

    func count(_ resourceKey: String) -> Int { state.withLock { $0.tables[resourceKey]?.count ?? 0 } }

    enum Outcome {
        case put(JSONValue)
        /// Removes the object. `final` is its last state (an update that removed the last finalizer), which
        /// the response and the DELETED event carry; nil means the stored state.
        case delete(final: JSONValue? = nil)
        case unchanged
    }

    struct RetryNeeded: Error {}

    /// etcd's GuaranteedUpdate: computes the change from a snapshot, commits it only if the object did not change
    /// meanwhile, and tries again otherwise. `update` throws APIError to refuse.
    @discardableResult
    func guaranteedUpdate(
        _ resourceKey: String, _ objectKey: String,
        _ update: (StoredObject?) throws -> Outcome
    ) throws -> (StoredObject?, deleted: Bool) {
        while true {
            let snapshot = get(resourceKey, objectKey)
            let outcome = try update(snapshot)
            let result: (StoredObject?, Bool)? = state.withLock { s in
                let current = s.tables[resourceKey]?[objectKey]
                guard current?.rv == snapshot?.rv else { return nil }
                switch outcome {
                case .unchanged:
                    return (current, false)
                case .delete(let last):
                    guard let current else { return (nil, true) }
                    s.rv += 1
                    // The DELETED event carries the final state at the deletion's resourceVersion, as etcd does.
                    var final = last ?? current.value
                    final[path: "metadata", "resourceVersion"] = .string(String(s.rv))
                    let tombstone = StoredObject(value: final, rv: s.rv)
                    s.tables[resourceKey]?.removeValue(forKey: objectKey)
                    s.uidIndex.removeValue(forKey: current.uid)
                    Self.record(&s, ChangeRecord(type: .deleted, resourceKey: resourceKey, object: tombstone), limit: historyLimit)
                    return (tombstone, true)
                case .put(var value):
                    s.rv += 1
                    value[path: "metadata", "resourceVersion"] = .string(String(s.rv))
                    let stored = StoredObject(value: value, rv: s.rv)
                    s.tables[resourceKey, default: [:]][objectKey] = stored
                    s.uidIndex[stored.uid] = (resourceKey, objectKey)
                    let type: WatchEventType = current == nil ? .added : .modified
                    Self.record(
                        &s, ChangeRecord(type: type, resourceKey: resourceKey, object: stored, previousLabels: current?.labels), limit: historyLimit)
                    return (stored, false)
                }
            }
            if let result { return (result.0, result.1) }
        }
    }

    private static func record(_ s: inout State, _ r: ChangeRecord, limit: Int) {
        s.history.append(r)
        while s.history.count > limit {
            let dropped = s.history.removeFirst()
            s.oldestWatchableRV = dropped.object.rv
        }
        var overflowed: [Int] = []
        for (id, w) in s.watchers {
            guard let type = w.filter.translate(r) else { continue }
            if case .dropped = w.continuation.yield(.event(type, r.object)) { overflowed.append(id) }
        }
        for id in overflowed {
            // A watcher that cannot keep up is closed; its client resumes from the last version it saw.
            s.watchers.removeValue(forKey: id)?.continuation.finish()
        }
    }

    /// Opens a watch. `sendInitialState` starts with synthetic ADDED events for the current state (then, with
    /// `markInitialEventsEnd`, the streaming list's end bookmark at the current version); otherwise the history
    /// after `from` is replayed, or the watch answers 410 Expired if that version was compacted.
    func watch(_ filter: WatchFilter, from: UInt64?, sendInitialState: Bool, markInitialEventsEnd: Bool = false) -> (AsyncStream<WatchFrame>, id: Int)
    {
        let (stream, continuation) = AsyncStream<WatchFrame>.makeStream(bufferingPolicy: .bufferingOldest(watchBufferLimit))
        let id: Int = state.withLock { s in
            let id = s.nextWatcherID
            s.nextWatcherID += 1
            if sendInitialState {
                // In key order, as kube-apiserver's watch cache sends them.
                for o in (s.tables[filter.resourceKey] ?? [:]).values.sorted(by: { $0.objectKey < $1.objectKey }) where filter.matches(o) {
                    continuation.yield(.event(.added, o))
                }
                if markInitialEventsEnd { continuation.yield(.initialEventsEnd(s.rv)) }
            } else if let from {
                if from < s.oldestWatchableRV {
                    continuation.yield(
                        .error(
                            Status(
                                message: "too old resource version: \(from) (\(s.oldestWatchableRV))",
                                reason: StatusReason.expired, code: 410)))
                    continuation.finish()
                    return id
                }
                if from > s.rv {
                    continuation.yield(
                        .error(
                            Status(
                                message: "Too large resource version: \(from), current: \(s.rv)",
                                reason: StatusReason.timeout,
                                details: StatusDetails(
                                    causes: [StatusCause(reason: "ResourceVersionTooLarge", message: "Too large resource version")],
                                    retryAfterSeconds: 1), code: 504)))
                    continuation.finish()
                    return id
                }
                for r in s.history where r.object.rv > from {
                    if let type = filter.translate(r) { continuation.yield(.event(type, r.object)) }
                }
            }
            s.watchers[id] = Watcher(filter: filter, continuation: continuation)
            return id
        }
        return (stream, id)
    }

    func stopWatch(_ id: Int) {
        state.withLock { s in s.watchers.removeValue(forKey: id)?.continuation.finish() }
    }

    /// Sends a bookmark at the current resourceVersion, ordered after every event already sent to this watcher.
    func bookmark(_ id: Int) {
        state.withLock { s in
            if let w = s.watchers[id] { _ = w.continuation.yield(.bookmark(s.rv)) }
        }
    }

    var watcherCount: Int { state.withLock { $0.watchers.count } }

    /// Ends every open watch (fault injection, shutdown).
    func closeAllWatches(with error: Status? = nil) {
        state.withLock { s in
            for (_, w) in s.watchers {
                if let error { w.continuation.yield(.error(error)) }
                w.continuation.finish()
            }
            s.watchers.removeAll()
        }
    }

    /// Ends the watches of one resource (its CRD deleted: kube-apiserver ends them once the objects' deletions are
    /// sent, and later requests for it are 404).
    func closeWatches(resourceKey: String) {
        state.withLock { s in
            for (id, w) in s.watchers where w.filter.resourceKey == resourceKey {
                w.continuation.finish()
                s.watchers.removeValue(forKey: id)
            }
        }
    }

    /// Forgets the change history, as etcd compaction does: watches from older versions get 410 Expired.
    func compact() {
        state.withLock { s in
            s.history.removeAll()
            s.oldestWatchableRV = s.rv
        }
    }

    /// Empties the store but keeps the resourceVersion sequence (so old versions read as compacted).
    func reset(keeping keep: (String) -> Bool) {
        state.withLock { s in
            for k in Array(s.tables.keys) where !keep(k) { s.tables.removeValue(forKey: k) }
            s.uidIndex = [:]
            for (rk, t) in s.tables { for (ok, o) in t { s.uidIndex[o.uid] = (rk, ok) } }
            s.history.removeAll()
            s.rv += 1
            s.oldestWatchableRV = s.rv
        }
    }

    /// Whether a list continuation taken at `rv` has left the history window.
    func isCompacted(_ rv: UInt64) -> Bool {
        state.withLock { rv < $0.oldestWatchableRV }
    }
}
