import DequeModule
import Foundation
import Metrics

/// The work queue of a controller, with client-go's guarantees:
/// - a key waiting in the queue is there once, however often it is added;
/// - a key is handed to one worker at a time; added while being processed, it is queued again when `done`;
/// - `addRateLimited` delays by the retry rate limiter (per-key exponential backoff, max with an overall bucket),
///   `addAfter` by a given time, and `forget` resets a key's backoff after success.
public actor WorkQueue<Key: Hashable & Sendable> {
    private var queue = Deque<Key>()
    private var dirty = Set<Key>()
    private var processing = Set<Key>()
    private var enqueuedAt: [Key: ContinuousClock.Instant] = [:]
    private var startedAt: [Key: ContinuousClock.Instant] = [:]
    private var waiting: [Key: ContinuousClock.Instant] = [:]
    private var getters: [CheckedContinuation<Key?, Never>] = []
    private var limiter: any RetryRateLimiter<Key>
    private var shuttingDown = false
    private let clock: any RuntimeClock
    private let metrics: QueueMetrics?

    public init(
        rateLimiter: any RetryRateLimiter<Key> = MaxOfRateLimiter<Key>.controllerDefault, clock: any RuntimeClock = SystemClock(),
        metrics: QueueMetrics? = nil
    ) {
        self.limiter = rateLimiter
        self.clock = clock
        self.metrics = metrics
    }

    public var count: Int { queue.count }
    public var isShuttingDown: Bool { shuttingDown }

    public func add(_ key: Key) {
        guard !shuttingDown, !dirty.contains(key) else { return }
        metrics?.adds.increment()
        dirty.insert(key)
        if processing.contains(key) { return }
        enqueue(key)
    }

    private func enqueue(_ key: Key) {
        enqueuedAt[key] = clock.now
        if let getter = getters.first {
            getters.removeFirst()
            take(key)
            getter.resume(returning: key)
        } else {
            queue.append(key)
            metrics?.depth.record(queue.count)
        }
    }

    private func take(_ key: Key) {
        dirty.remove(key)
        processing.insert(key)
        let now = clock.now
        if let t = enqueuedAt.removeValue(forKey: key) { metrics?.queueDuration.recordInterval(now - t) }
        startedAt[key] = now
    }

    /// The next key to work on; nil once the queue is shut down (queued keys are left for the next leader or
    /// process: a level-triggered reconciler converges from the current state anyway).
    public func get() async -> Key? {
        if shuttingDown { return nil }
        if let key = queue.popFirst() {
            metrics?.depth.record(queue.count)
            take(key)
            return key
        }
        if shuttingDown { return nil }
        return await withCheckedContinuation { getters.append($0) }
    }

    /// Marks a key finished; if it was added meanwhile it goes back in the queue.
    public func done(_ key: Key) {
        processing.remove(key)
        if let t = startedAt.removeValue(forKey: key) { metrics?.workDuration.recordInterval(clock.now - t) }
        if dirty.contains(key) { enqueue(key) }
    }

    /// Adds the key after `delay`; an earlier pending deadline for the same key wins.
    public func addAfter(_ key: Key, _ delay: Duration) {
        guard !shuttingDown else { return }
        if delay <= .zero { add(key); return }
        let deadline = clock.now + delay
        if let existing = waiting[key], existing <= deadline { return }
        waiting[key] = deadline
        let clock = self.clock
        Task { [weak self] in
            try? await clock.sleep(until: deadline)
            await self?.fire(key, deadline)
        }
    }

    private func fire(_ key: Key, _ deadline: ContinuousClock.Instant) {
        guard waiting[key] == deadline else { return }
        waiting.removeValue(forKey: key)
        add(key)
    }

    /// Re-adds a failed key after its backoff.
    public func addRateLimited(_ key: Key) {
        metrics?.retries.increment()
        addAfter(key, limiter.when(key, now: clock.now))
    }

    public func forget(_ key: Key) { limiter.forget(key) }

    public func retries(_ key: Key) -> Int { limiter.retries(key) }

    /// Stops accepting and handing out keys; idle workers get nil at once, busy ones after their current key.
    public func shutDown() {
        shuttingDown = true
        waiting.removeAll()
        let gs = getters
        getters.removeAll()
        for g in gs { g.resume(returning: nil) }
    }
}

/// The work queue's metrics, under client-go's names (`workqueue_*{name}`).
public struct QueueMetrics: Sendable {
    public let depth: Gauge
    public let adds: Counter
    public let retries: Counter
    public let queueDuration: Metrics.Timer
    public let workDuration: Metrics.Timer

    public init(name: String, factory: any MetricsFactory) {
        let dims = [("name", name)]
        depth = Gauge(label: "workqueue_depth", dimensions: dims, factory: factory)
        adds = Counter(label: "workqueue_adds_total", dimensions: dims, factory: factory)
        retries = Counter(label: "workqueue_retries_total", dimensions: dims, factory: factory)
        queueDuration = Metrics.Timer(label: "workqueue_queue_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds, factory: factory)
        workDuration = Metrics.Timer(label: "workqueue_work_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds, factory: factory)
    }
}

extension Metrics.Timer {
    func recordInterval(_ d: Duration) {
        recordNanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }
}
