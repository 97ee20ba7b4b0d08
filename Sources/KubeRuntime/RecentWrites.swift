import Foundation
import KubeModels
import Synchronization

/// Objects a controller wrote itself, kept until its informer cache shows them: reads through it see the
/// controller's own writes at once, so a reconcile that runs before the watch event arrives neither repeats a
/// create (a 409) nor rewrites a status it just wrote. controller-runtime leaves this to each reconciler
/// ("expectations" in kube-controller-manager); here it is one small type.
///
/// An entry is dropped when the cache holds the same resourceVersion or a newer one (compared as integers, as every
/// etcd-backed server's are), when the informer sees the object deleted, when the informer re-lists after the write
/// (a list is authoritative: a server restarted with an empty store must not leave the controller believing in
/// objects that are gone), or after `ttl`.
public final class RecentWrites: Sendable {
    struct Entry {
        var object: JSONValue
        var resourceVersion: String
        var at: ContinuousClock.Instant
    }
    let entries = Mutex<[String: Entry]>([:])
    /// Expired entries are dropped when the map doubles past this, so recording stays O(1) amortised.
    let pruneAt = Mutex(1024)
    /// The caches of tracked informers (their resourceVersion lookups), by kind: a write a cache already shows is
    /// not kept.
    let stores = Mutex<[String: [@Sendable (ObjectKey) -> String?]]>([:])
    /// What the tracked informer keeps of an object, by kind: a write is remembered in the cache's own form (a
    /// created PipelineRun without its spec, no managedFields), not as the whole object the server answered.
    let transforms = Mutex<[String: @Sendable (JSONValue) -> JSONValue]>([:])
    let ttl: Duration

    public init(ttl: Duration = .seconds(30)) { self.ttl = ttl }

    /// Forgets objects as the informer catches up with them (its copy is as new as the write) or sees them deleted,
    /// so an entry lives about as long as the watch lags behind — not until a later read or the TTL. Call once per
    /// informer read through this.
    public func track<K: CachedResource>(_ informer: Informer<K>) async {
        let kind = informer.resourceType.kind
        let store = informer.store
        stores.withLock { $0[kind, default: []].append { store.resourceVersion($0) } }
        if let transform = informer.transform { transforms.withLock { $0[kind] = transform.apply } }
        await informer.addHandler { [self] event in
            switch event {
            case .deleted(let o): forget(kind: kind, o.objectKey)
            case .added(let o), .updated(_, let o): caughtUp(kind: kind, o.objectKey, resourceVersion: o.resourceVersion)
            }
        }
    }

    /// Whether the cache's version is the written one or newer (integers compared, as etcd-backed servers' are).
    static func isCaughtUp(cached: String?, written: String) -> Bool {
        guard let cached else { return false }
        if cached == written { return true }
        guard let c = UInt64(cached), let w = UInt64(written) else { return false }
        return c > w
    }

    func caughtUp(kind: String, _ key: ObjectKey, resourceVersion rv: String?) {
        let id = Self.id(kind, key)
        entries.withLock { e in
            if let entry = e[id], Self.isCaughtUp(cached: rv, written: entry.resourceVersion) { e.removeValue(forKey: id) }
        }
    }

    /// How many writes are remembered (the cache has not shown them yet).
    public var count: Int { entries.withLock { $0.count } }

    static func id(_ kind: String, _ key: ObjectKey) -> String { "\(kind)/\(key.namespace ?? "")/\(key.name)" }

    /// Remembers the object a write returned.
    public func record(_ written: JSONValue?) {
        guard let written, let kind = written["kind"]?.stringValue, let rv = written[path: "metadata", "resourceVersion"]?.stringValue else { return }
        let object = transforms.withLock { $0[kind] }.map { $0(written) } ?? written
        let now = ContinuousClock.now
        entries.withLock { e in
            e[Self.id(kind, ObjectKey(object))] = Entry(object: object, resourceVersion: rv, at: now)
            // Bounded: expired entries go when the map has doubled since the last pruning.
            let limit = pruneAt.withLock { $0 }
            if e.count > limit {
                e = e.filter { now - $0.value.at < self.ttl }
                let kept = e.count
                pruneAt.withLock { $0 = max(1024, kept * 2) }
            }
        }
        // The watch event may have come before this call (the informer saw the write before the writer returned),
        // so its handler found nothing to forget. Checked after the insert: a handler running later forgets it.
        let key = ObjectKey(object)
        for cachedVersion in stores.withLock({ $0[kind] ?? [] }) {
            if let rv = cachedVersion(key) { caughtUp(kind: kind, key, resourceVersion: rv) }
        }
    }

    /// Forgets an object (after deleting it).
    public func forget(kind: String, _ key: ObjectKey) {
        _ = entries.withLock { $0.removeValue(forKey: Self.id(kind, key)) }
    }

    /// The fresher of the cache's copy and the one this controller wrote.
    public func read<K: CachedResource>(_ key: ObjectKey, kind: String, from informer: Informer<K>) -> K? {
        let cachedVersion = informer.store.resourceVersion(key)
        let listed = informer.lastListStarted
        let id = Self.id(kind, key)
        let written = entries.withLock { e -> JSONValue? in
            guard let entry = e[id] else { return nil }
            let caughtUp = Self.isCaughtUp(cached: cachedVersion, written: entry.resourceVersion)
            let relisted = listed.map { $0 > entry.at } ?? false
            if caughtUp || relisted || ContinuousClock.now - entry.at >= ttl {
                e.removeValue(forKey: id)
                return nil
            }
            return entry.object
        }
        if let written, let object = try? K(cached: written) { return object }
        return informer.store.get(key)
    }
}
