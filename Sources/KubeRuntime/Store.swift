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
///
/// Objects are kept packed — each as its serialised JSON, one allocation — and parsed when read. A parsed
/// `JSONValue` is a dictionary per JSON object and a string per key and value, several times the size of its
/// JSON; readers take a few objects per reconcile, so the cache pays a parse per read instead of that size for
/// every object it holds (the operator's peak RSS with 10,000 Meteors and 20,000 PipelineRuns: BENCHMARKS.md).
public final class Store: Sendable {
    struct Packed {
        var json: [UInt8]
        var resourceVersion: String?

        init(_ o: JSONValue) {
            json = o.serializedUnordered()
            resourceVersion = Store.resourceVersion(o)
        }

        /// The object (bytes this store serialised itself parse; nil only if that invariant were broken).
        var object: JSONValue? { try? JSONValue.parse(json) }
    }

    struct State {
        var objects: [ObjectKey: Packed] = [:]
        var byNamespace: [String: Set<ObjectKey>] = [:]
        var byOwner: [String: Set<ObjectKey>] = [:]
        var byLabel: [String: Set<ObjectKey>] = [:]
    }

    let state = Mutex(State())

    public init() {}

    public func get(_ key: ObjectKey) -> JSONValue? { state.withLock { $0.objects[key] }?.object }

    public var count: Int { state.withLock { $0.objects.count } }

    public var keys: [ObjectKey] { state.withLock { Array($0.objects.keys) } }

    /// Objects in a namespace (all when nil), optionally filtered by a label selector (using the label index for
    /// its equality requirements).
    public func list(namespace: String? = nil, labelSelector: LabelSelector = LabelSelector()) -> [JSONValue] {
        let packed = state.withLock { s -> [Packed] in
            var candidates: Set<ObjectKey>?
            if let namespace { candidates = s.byNamespace[namespace] ?? [] }
            for r in labelSelector.requirements where r.op == .equals {
                let hit = s.byLabel["\(r.key)=\(r.values.first ?? "")"] ?? []
                candidates = candidates.map { $0.intersection(hit) } ?? hit
            }
            return candidates.map { $0.compactMap { s.objects[$0] } } ?? Array(s.objects.values)
        }
        // Parsed outside the lock: readers of other keys do not wait for this one's parsing.
        return packed.compactMap(\.object).filter { o in labelSelector.isEmpty || labelSelector.matches(Self.labels(o)) }
    }

    /// Objects whose ownerReferences name this UID.
    public func owned(by uid: String) -> [JSONValue] {
        state.withLock { s in (s.byOwner[uid] ?? []).compactMap { s.objects[$0] } }.compactMap(\.object)
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
    /// version already cached (a resumed watch never produces duplicates). Only the informer writes a store, one
    /// change at a time: the previous object is parsed outside the lock.
    func upsert(_ o: JSONValue) -> InformerEvent? {
        let key = ObjectKey(o)
        let packed = Packed(o)
        let previous = state.withLock { $0.objects[key] }
        if let previous, previous.resourceVersion == packed.resourceVersion { return nil }
        let old = previous?.object
        state.withLock { s in
            if let old { Self.index(&s, key, old, add: false) }
            s.objects[key] = packed
            Self.index(&s, key, o, add: true)
        }
        return old.map { .updated(old: $0, new: o) } ?? .added(o)
    }

    func remove(_ o: JSONValue) -> InformerEvent? {
        let key = ObjectKey(o)
        guard let previous = state.withLock({ $0.objects[key] }), let old = previous.object else { return nil }
        state.withLock { s in
            s.objects.removeValue(forKey: key)
            Self.index(&s, key, old, add: false)
        }
        return .deleted(o)
    }

    /// Replaces the cache with a fresh list and returns the differences as events: what a re-list after 410
    /// must tell handlers so nothing is lost (deletions missed while disconnected) or repeated (unchanged objects).
    func replace(_ items: [JSONValue]) -> [InformerEvent] {
        var events: [InformerEvent] = []
        let fresh = Dictionary(items.map { (ObjectKey($0), $0) }, uniquingKeysWith: { _, b in b })
        let previous = state.withLock { $0.objects }
        for (key, old) in previous where fresh[key] == nil {
            if let o = old.object { events.append(.deleted(o)) }
        }
        var next = State()
        for (key, o) in fresh {
            let packed = Packed(o)
            if let old = previous[key] {
                if old.resourceVersion != packed.resourceVersion, let oldObject = old.object { events.append(.updated(old: oldObject, new: o)) }
            } else {
                events.append(.added(o))
            }
            next.objects[key] = packed
            Self.index(&next, key, o, add: true)
        }
        state.withLock { $0 = next }
        return events
    }
}
