import Foundation
import KubeClient
import KubeModels
import Logging
import Synchronization

/// List-then-watch of one resource into a `Store`, with handlers: kube-rs's watcher + reflector, client-go's
/// shared informer. Resumes a dropped watch from the last version seen (bookmarks advance it), re-lists on
/// 410 Gone and diffs against the cache, optionally replays everything on a resync period.
///
/// Generic over what its store and handlers hold (`CachedResource`): `DynamicInformer` (`Informer<JSONValue>`) for
/// objects as they come, `Informer<Model>` for decoded ones.
public final class Informer<K: CachedResource>: RunnableInformer {
    public typealias Handler = @Sendable (InformerEvent<K>) async -> Void

    public let api: DynamicApi
    public let store = Store<K>()
    let labelSelector: LabelSelector?
    let resyncPeriod: Duration?
    public let transform: CacheTransform?
    let logger: Logger
    /// Each handler with its own bounded queue (`HandlerQueue`).
    let handlers = Mutex<[HandlerQueue<K>]>([])
    /// How far a handler may fall behind before it holds up the watch.
    let handlerBuffer: Int
    let synced = Mutex<(done: Bool, waiters: [Int: CheckedContinuation<Void, Never>], next: Int)>((false, [:], 0))
    /// Counters tests and metrics read: lists made, watches opened.
    let stats = Mutex<(lists: Int, watches: Int, idleResumes: Int, lastRetryDelay: Duration?)>((0, 0, 0, nil))
    let lastList = Mutex<ContinuousClock.Instant?>(nil)
    let lastHeard = Mutex<ContinuousClock.Instant?>(nil)
    let watchIdleTimeout: Duration?
    /// Events handed to handlers and not yet through them (plus store changes being handed over), and who waits
    /// for that to reach zero.
    let inFlight = Mutex<(count: Int, waiters: [CheckedContinuation<Void, Never>])>((0, []))

    /// When the latest full list was requested: the cache is authoritative for everything written before then.
    public var lastListStarted: ContinuousClock.Instant? { lastList.withLock { $0 } }

    /// `transform` shrinks objects before they are cached (by default `managedFields` are dropped).
    /// `watchIdleTimeout` is the client-side deadline for a watch that delivers nothing (`WatchOptions.idleTimeout`).
    /// `handlerBuffer` is how many events a handler may fall behind before it holds up the watch.
    public init(
        api: DynamicApi, labelSelector: LabelSelector? = nil, resyncPeriod: Duration? = nil,
        transform: CacheTransform? = .dropManagedFields, watchIdleTimeout: Duration? = WatchOptions.defaultIdleTimeout,
        handlerBuffer: Int = 256, logger: Logger = Logger(label: "informer")
    ) {
        self.handlerBuffer = max(1, handlerBuffer)
        self.api = api
        self.watchIdleTimeout = watchIdleTimeout
        self.labelSelector = labelSelector
        self.resyncPeriod = resyncPeriod
        self.transform = transform
        var l = logger
        l[metadataKey: "resource"] = "\(api.resourceType)"
        self.logger = l
    }

    public var resourceType: ResourceType { api.resourceType }

    /// Registers a handler; handlers added after the first list get the current objects as ADDED first. Each
    /// handler runs on its own queue of at most `handlerBuffer` events (`HandlerQueue`), in order.
    public func addHandler(_ handler: @escaping Handler) async {
        let queue = HandlerQueue(handler: handler, capacity: handlerBuffer) { [self] in settle() }
        let alreadySynced = handlers.withLock { hs in
            hs.append(queue)
            return synced.withLock { $0.done }
        }
        if alreadySynced {
            for o in store.list() {
                inFlight.withLock { $0.count += 1 }
                await queue.enqueue(.added(o))
            }
        }
    }

    public var hasSynced: Bool { synced.withLock { $0.done } }

    /// Whether the watch is waiting for a handler whose queue is full (`handlerBuffer` events behind).
    public var isHeldByAHandler: Bool { handlers.withLock { $0 }.contains { q in q.state.withLock { !$0.waiting.isEmpty } } }

    let progressHandlers = Mutex<[@Sendable (String) -> Void]>([])

    /// Called with the new resourceVersion whenever a bookmark advances it (what a resumed watch starts from).
    public func onBookmark(_ handler: @escaping @Sendable (String) -> Void) {
        progressHandlers.withLock { $0.append(handler) }
    }

    public var listCount: Int { stats.withLock { $0.lists } }
    public var watchCount: Int { stats.withLock { $0.watches } }
    /// Watches ended by the idle deadline and resumed from their last version.
    public var idleResumeCount: Int { stats.withLock { $0.idleResumes } }
    /// How long the last failed list or watch waited before trying again (nil before any failure).
    public var lastRetryDelay: Duration? { stats.withLock { $0.lastRetryDelay } }

    /// How long since the API server last told this informer anything (a list, an event, a bookmark); nil before
    /// the first answer. What readiness reads: a long silence is an informer that may be blind.
    public var silence: Duration? { lastHeard.withLock { $0 }.map { ContinuousClock.now - $0 } }

    private func heard() { lastHeard.withLock { $0 = .now } }

    /// Returns once the first list is in the cache, or when the calling task is cancelled.
    public func waitForSync() async {
        let id = synced.withLock { s -> Int in
            s.next += 1
            return s.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = synced.withLock { s -> Bool in
                    if s.done || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            synced.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    private func markSynced() {
        let waiters = synced.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.done { return [] }
            s.done = true
            let w = Array(s.waiters.values)
            s.waiters = [:]
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Hands `event` to every handler's queue (waiting only for one that is full).
    private func dispatch(_ event: InformerEvent<K>) async {
        for q in handlers.withLock({ $0 }) {
            inFlight.withLock { $0.count += 1 }
            await q.enqueue(event)
        }
    }

    /// One event through one handler, or one store change handed over: wakes whoever waits for none in flight.
    private func settle() {
        let waiters = inFlight.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.count -= 1
            guard s.count == 0 else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Changes the store and hands what changed to the handlers, counted in flight from before the store changes
    /// until the last handler has taken it: whoever sees the new cache can await `handlersIdle()`.
    private func apply(_ change: () -> [InformerEvent<K>]) async {
        inFlight.withLock { $0.count += 1 }
        for e in change() { await dispatch(e) }
        settle()
    }

    /// Returns once every store change made so far has been through all handlers (at once when none is in
    /// flight). A test that sees a state in the cache awaits this before reading what handlers derive from it.
    public func handlersIdle() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = inFlight.withLock { s -> Bool in
                if s.count == 0 { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Runs until the task is cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            if let resyncPeriod {
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: resyncPeriod)
                        if Task.isCancelled { break }
                        for o in self.store.list() { await self.dispatch(.updated(old: o, new: o)) }
                    }
                }
            }
            group.addTask { await self.reflect() }
            await group.next()
            group.cancelAll()
        }
    }

    private func reflect() async {
        var resourceVersion: String?
        var failures = 0
        while !Task.isCancelled {
            do {
                if resourceVersion == nil {
                    stats.withLock { $0.lists += 1 }
                    let listStarted = ContinuousClock.now
                    let list = try await api.listAll(ListOptions(labelSelector: labelSelector?.description), transform: transform?.apply)
                    let items = list.items
                    lastList.withLock { $0 = listStarted }
                    heard()
                    await apply { store.replace(items) }
                    resourceVersion = list.metadata.resourceVersion
                    // Synced once the handlers have taken the first list too (client-go's handler registrations
                    // report HasSynced the same way): a controller's queue then holds every listed key.
                    if !hasSynced { await handlersIdle() }
                    markSynced()
                    // The server answered in full: back off from scratch next time (a long outage must not leave
                    // every later hiccup waiting the longest delay).
                    failures = 0
                }
                stats.withLock { $0.watches += 1 }
                // A randomised timeout spreads re-watches of many informers, as client-go does.
                let timeout = Int.random(in: 240...480)
                let stream = api.watch(
                    WatchOptions(
                        resourceVersion: resourceVersion, labelSelector: labelSelector?.description, timeoutSeconds: timeout, allowBookmarks: true,
                        idleTimeout: watchIdleTimeout))
                for try await event in stream {
                    heard()
                    switch event {
                    case .added(let o), .modified(let o):
                        let obj = transform?.apply(o) ?? o
                        resourceVersion = obj.resourceVersion ?? resourceVersion
                        await apply { store.upsert(obj).map { [$0] } ?? [] }
                    case .deleted(let o):
                        let obj = transform?.apply(o) ?? o
                        resourceVersion = obj.resourceVersion ?? resourceVersion
                        await apply { store.remove(obj).map { [$0] } ?? [] }
                    case .bookmark(let rv):
                        if !rv.isEmpty {
                            resourceVersion = rv
                            for h in progressHandlers.withLock({ $0 }) { h(rv) }
                        }
                    }
                    failures = 0
                }
            } catch let e as KubeError where e.isGone {
                logger.debug("watch expired, re-listing", metadata: ["resourceVersion": "\(resourceVersion ?? "")"])
                resourceVersion = nil
            } catch let e as KubeError where e.isWatchIdle {
                // Presumed dead: resume at once from the last version (a relist would be wasted work).
                stats.withLock { $0.idleResumes += 1 }
                logger.warning(
                    "watch silent past its idle deadline, resuming", metadata: ["error": "\(e)", "resourceVersion": "\(resourceVersion ?? "")"])
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                failures += 1
                let delay = Duration.milliseconds(min(30_000, 100 * (1 << min(failures, 9))))
                stats.withLock { $0.lastRetryDelay = delay }
                logger.warning("list/watch failed, retrying", metadata: ["error": "\(error)", "retryIn": "\(delay)"])
                if case .api(let s)? = error as? KubeError, s.code == 504 { resourceVersion = nil }
                try? await Task.sleep(for: delay)
            }
        }
    }
}

/// The informer of objects as they come: every resource, none decoded.
public typealias DynamicInformer = Informer<JSONValue>

/// What a manager and a controller run and watch of an informer, whatever it caches.
public protocol RunnableInformer: AnyObject, Sendable {
    var resourceType: ResourceType { get }
    var hasSynced: Bool { get }
    /// How long since the API server last said anything (nil before the first answer).
    var silence: Duration? { get }
    func run() async
    func waitForSync() async
}
