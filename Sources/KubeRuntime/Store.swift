import KubeModels
import Synchronization

/// What an informer tells its handlers.
public enum InformerEvent: Sendable {
    case added(JSONValue)
    case updated(old: JSONValue, new: JSONValue)
    case deleted(JSONValue)

    public var object: JSONValue {
        switch self {
        case .added(let o), .deleted(let o): return o
        case .updated(_, let n): return n
        }
    }
}

/// The informer's in-memory cache of one resource, indexed by namespace, controller-owner UID and label, read by
/// handlers and reconcilers instead of the API server.
public final class Store: Sendable {
    struct State {
        var objects: [ObjectKey: JSONValue] = [:]
        var byNamespace: [String: Set<ObjectKey>] = [:]
        var byOwner: [String: Set<ObjectKey>] = [:]
        var byLabel: [String: Set<ObjectKey>] = [:]
    }

    let state = Mutex(State())

    public init() {}

    public func get(_ key: ObjectKey) -> JSONValue? { state.withLock { $0.objects[key] } }

    public var count: Int { state.withLock { $0.objects.count } }

    public var keys: [ObjectKey] { state.withLock { Array($0.objects.keys) } }

    /// Objects in a namespace (all when nil), optionally filtered by a label selector (using the label index for
    /// its equality requirements).
    public func list(namespace: String? = nil, labelSelector: LabelSelector = LabelSelector()) -> [JSONValue] {
        state.withLock { s in
            var candidates: Set<ObjectKey>?
            if let namespace { candidates = s.byNamespace[namespace] ?? [] }
            for r in labelSelector.requirements where r.op == .equals {
                let hit = s.byLabel["\(r.key)=\(r.values.first ?? "")"] ?? []
                candidates = candidates.map { $0.intersection(hit) } ?? hit
            }
            let keys = candidates.map(Array.init) ?? Array(s.objects.keys)
            return keys.compactMap { s.objects[$0] }.filter { o in
                labelSelector.isEmpty || labelSelector.matches(Self.labels(o))
            }
        }
    }

    /// Objects whose ownerReferences name this UID.
    public func owned(by uid: String) -> [JSONValue] {
        state.withLock { s in (s.byOwner[uid] ?? []).compactMap { s.objects[$0] } }
    }

    static func labels(_ o: JSONValue) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in o[path: "metadata", "labels"]?.objectValue ?? [:] { out[k] = v.stringValue ?? "" }
        return out
    }

    static func resourceVersion(_ o: JSONValue) -> String? { o[path: "metadata", "resourceVersion"]?.stringValue }

    private static func index(_ s: inout State, _ key: ObjectKey, _ o: JSONValue, add: Bool) {
        func update(_ dict: inout [String: Set<ObjectKey>], _ k: String) {
            if add {
                dict[k, default: []].insert(key)
            } else {
                dict[k]?.remove(key)
                if dict[k]?.isEmpty == true { dict.removeValue(forKey: k) }
            }
        }
        update(&s.byNamespace, key.namespace ?? "")
        for ref in o[path: "metadata", "ownerReferences"]?.arrayValue ?? [] {
            if let uid = ref["uid"]?.stringValue { update(&s.byOwner, uid) }
        }
        for (k, v) in labels(o) { update(&s.byLabel, "\(k)=\(v)") }
    }

    /// Applies an ADDED/MODIFIED from a watch. Returns the event handlers should see, or nil for a replay of a
    /// version already cached (a resumed watch never produces duplicates).
    func upsert(_ o: JSONValue) -> InformerEvent? {
        let key = ObjectKey(o)
        return state.withLock { s in
            let old = s.objects[key]
            if let old, Self.resourceVersion(old) == Self.resourceVersion(o) { return nil }
            if let old { Self.index(&s, key, old, add: false) }
            s.objects[key] = o
            Self.index(&s, key, o, add: true)
            return old.map { .updated(old: $0, new: o) } ?? .added(o)
        }
    }

    func remove(_ o: JSONValue) -> InformerEvent? {
        let key = ObjectKey(o)
        return state.withLock { s in
            guard let old = s.objects.removeValue(forKey: key) else { return nil }
            Self.index(&s, key, old, add: false)
            return .deleted(o)
        }
    }

    /// Replaces the cache with a fresh list and returns the differences as events: what a re-list after 410
    /// must tell handlers so nothing is lost (deletions missed while disconnected) or repeated (unchanged objects).
    func replace(_ items: [JSONValue]) -> [InformerEvent] {
        var events: [InformerEvent] = []
        let fresh = Dictionary(items.map { (ObjectKey($0), $0) }, uniquingKeysWith: { _, b in b })
        state.withLock { s in
            for (key, old) in s.objects where fresh[key] == nil {
                events.append(.deleted(old))
            }
            for (key, o) in fresh {
                if let old = s.objects[key] {
                    if Self.resourceVersion(old) != Self.resourceVersion(o) { events.append(.updated(old: old, new: o)) }
                } else {
                    events.append(.added(o))
                }
            }
            s = State()
            for (key, o) in fresh {
                s.objects[key] = o
                Self.index(&s, key, o, add: true)
            }
        }
        return events
    }
}
