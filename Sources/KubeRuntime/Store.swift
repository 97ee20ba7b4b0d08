import KubeModels
import Synchronization

/// What an informer tells its handlers.
public enum InformerEvent<K: CachedResource>: Sendable {
    case added(K)
    case updated(old: K, new: K)
    case deleted(K)

    public var object: K {
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
///
/// Generic over what it hands out (`CachedResource`): `Store<JSONValue>` the dynamic objects, `Store<Model>`
/// decoded ones (an object that does not decode is left out, and its key is in `unreadable`).
public final class Store<K: CachedResource>: Sendable {
    struct Packed {
        var json: [UInt8]
        var resourceVersion: String?

        init(_ o: JSONValue) {
            json = o.serializedUnordered()
            resourceVersion = o.resourceVersion
        }

        /// The object (bytes this store serialised and decoded itself; nil only if that invariant were broken).
        var object: K? { (try? JSONValue.parse(json)).flatMap { try? K(cached: $0) } }
    }

    struct State {
        var objects: [ObjectKey: Packed] = [:]
        var byNamespace: [String: Set<ObjectKey>] = [:]
        var byOwner: [String: Set<ObjectKey>] = [:]
        var byLabel: [String: Set<ObjectKey>] = [:]
        var unreadable: [ObjectKey: String] = [:]
    }

    let state = Mutex(State())

    public init() {}

    public func get(_ key: ObjectKey) -> K? { state.withLock { $0.objects[key] }?.object }

    /// The cached object's resourceVersion, without reading the object.
    public func resourceVersion(_ key: ObjectKey) -> String? { state.withLock { $0.objects[key]?.resourceVersion } }

    /// Objects the server has that this typed store cannot decode, with why (logged as they arrive).
    public var unreadable: [ObjectKey: String] { state.withLock { $0.unreadable } }

    public var count: Int { state.withLock { $0.objects.count } }

    public var keys: [ObjectKey] { state.withLock { Array($0.objects.keys) } }

    /// Objects in a namespace (all when nil), optionally filtered by a label selector (using the label index for
    /// its equality requirements).
    public func list(namespace: String? = nil, labelSelector: LabelSelector = LabelSelector()) -> [K] {
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
        return packed.compactMap(\.object).filter { o in labelSelector.isEmpty || labelSelector.matches(o.labels) }
    }

    /// Objects whose ownerReferences name this UID.
    public func owned(by uid: String) -> [K] {
        state.withLock { s in (s.byOwner[uid] ?? []).compactMap { s.objects[$0] } }.compactMap(\.object)
    }

    private static func index(_ s: inout State, _ key: ObjectKey, _ o: K, add: Bool) {
        func update(_ dict: inout [String: Set<ObjectKey>], _ k: String) {
            if add {
                dict[k, default: []].insert(key)
            } else {
                dict[k]?.remove(key)
                if dict[k]?.isEmpty == true { dict.removeValue(forKey: k) }
            }
        }
        update(&s.byNamespace, key.namespace ?? "")
        for ref in o.ownerReferences { update(&s.byOwner, ref.uid) }
        for (k, v) in o.labels { update(&s.byLabel, "\(k)=\(v)") }
    }

    /// Applies an ADDED/MODIFIED from a watch. Returns the event handlers should see, or nil for a replay of a
    /// version already cached (a resumed watch never produces duplicates). Only the informer writes a store, one
    /// change at a time: the previous object is decoded outside the lock. An object that does not decode leaves
    /// the store (handlers see it deleted, if they had it) and is named in `unreadable`.
    func upsert(_ json: JSONValue) -> InformerEvent<K>? {
        let key = json.objectKey
        let packed = Packed(json)
        let previous = state.withLock { $0.objects[key] }
        if let previous, previous.resourceVersion == packed.resourceVersion { return nil }
        let old = previous?.object
        let new: K
        do {
            new = try K(cached: json)
        } catch {
            state.withLock { s in
                if let old { Self.index(&s, key, old, add: false) }
                s.objects.removeValue(forKey: key)
                s.unreadable[key] = "\(error)"
            }
            return old.map { .deleted($0) }
        }
        state.withLock { s in
            if let old { Self.index(&s, key, old, add: false) }
            s.objects[key] = packed
            s.unreadable.removeValue(forKey: key)
            Self.index(&s, key, new, add: true)
        }
        return old.map { .updated(old: $0, new: new) } ?? .added(new)
    }

    func remove(_ json: JSONValue) -> InformerEvent<K>? {
        let key = json.objectKey
        _ = state.withLock { $0.unreadable.removeValue(forKey: key) }
        guard let previous = state.withLock({ $0.objects[key] }), let old = previous.object else { return nil }
        state.withLock { s in
            s.objects.removeValue(forKey: key)
            Self.index(&s, key, old, add: false)
        }
        return .deleted((try? K(cached: json)) ?? old)
    }

    /// Replaces the cache with a fresh list and returns the differences as events: what a re-list after 410
    /// must tell handlers so nothing is lost (deletions missed while disconnected) or repeated (unchanged objects).
    func replace(_ items: [JSONValue]) -> [InformerEvent<K>] {
        var events: [InformerEvent<K>] = []
        let fresh = Dictionary(items.map { ($0.objectKey, $0) }, uniquingKeysWith: { _, b in b })
        let previous = state.withLock { $0.objects }
        var next = State()
        for (key, old) in previous where fresh[key] == nil {
            if let o = old.object { events.append(.deleted(o)) }
        }
        for (key, json) in fresh {
            let packed = Packed(json)
            let new: K
            do {
                new = try K(cached: json)
            } catch {
                next.unreadable[key] = "\(error)"
                if let old = previous[key]?.object { events.append(.deleted(old)) }
                continue
            }
            if let old = previous[key] {
                if old.resourceVersion != packed.resourceVersion, let oldObject = old.object { events.append(.updated(old: oldObject, new: new)) }
            } else {
                events.append(.added(new))
            }
            next.objects[key] = packed
            Self.index(&next, key, new, add: true)
        }
        state.withLock { $0 = next }
        return events
    }
}
