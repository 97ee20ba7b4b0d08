import Foundation
import KubeModels

/// How long to wait before retrying a key, client-go's `workqueue.RateLimiter`.
/// Keyed by the work queue's own key type (a controller's `ObjectKey`), never by a string rendering of it.
public protocol RetryRateLimiter<Key>: Sendable {
    associatedtype Key: Hashable & Sendable
    /// The delay for the next retry of `key` (and records the failure).
    mutating func when(_ key: Key, now: ContinuousClock.Instant) -> Duration
    mutating func forget(_ key: Key)
    func retries(_ key: Key) -> Int
}

/// Per-key exponential backoff: `base * 2^failures`, capped (client-go: 5 ms doubling to 1000 s).
public struct ExponentialFailureRateLimiter<Key: Hashable & Sendable>: RetryRateLimiter {
    public let base: Duration
    public let max: Duration
    var failures: [Key: Int] = [:]

    public init(base: Duration = .milliseconds(5), max: Duration = .seconds(1000)) {
        self.base = base
        self.max = max
    }

    public mutating func when(_ key: Key, now: ContinuousClock.Instant) -> Duration {
        let n = failures[key, default: 0]
        failures[key] = n + 1
        guard n < 62 else { return max }
        let factor = Double(1 << min(n, 61))
        let delay = base * factor
        return delay > max ? max : delay
    }

    public mutating func forget(_ key: Key) { failures.removeValue(forKey: key) }
    public func retries(_ key: Key) -> Int { failures[key, default: 0] }
}

/// An overall token bucket shared by all keys (client-go: 10 qps, burst 100): many keys failing at once do not
/// retry faster than this.
public struct BucketRateLimiter<Key: Hashable & Sendable>: RetryRateLimiter {
    public let qps: Double
    public let burst: Int
    var tokens: Double
    var last: ContinuousClock.Instant?

    public init(qps: Double = 10, burst: Int = 100) {
        self.qps = qps
        self.burst = burst
        tokens = Double(burst)
    }

    public mutating func when(_ key: Key, now: ContinuousClock.Instant) -> Duration {
        if let last {
            let elapsed = now - last
            let seconds = elapsed.seconds
            tokens = min(Double(burst), tokens + seconds * qps)
        }
        last = now
        tokens -= 1
        if tokens >= 0 { return .zero }
        return .nanoseconds(Int64((-tokens / qps) * 1e9))
    }

    public mutating func forget(_ key: Key) {}
    public func retries(_ key: Key) -> Int { 0 }
}

/// The longest delay of several limiters: client-go's default controller rate limiter is the max of the
/// per-key exponential and the overall bucket.
public struct MaxOfRateLimiter<Key: Hashable & Sendable>: RetryRateLimiter {
    var limiters: [any RetryRateLimiter<Key>]

    public init(_ limiters: [any RetryRateLimiter<Key>]) { self.limiters = limiters }

    public static var controllerDefault: MaxOfRateLimiter {
        MaxOfRateLimiter([ExponentialFailureRateLimiter<Key>(), BucketRateLimiter<Key>()])
    }

    public mutating func when(_ key: Key, now: ContinuousClock.Instant) -> Duration {
        var longest = Duration.zero
        for i in limiters.indices {
            let d = limiters[i].when(key, now: now)
            if d > longest { longest = d }
        }
        return longest
    }

    public mutating func forget(_ key: Key) {
        for i in limiters.indices { limiters[i].forget(key) }
    }

    public func retries(_ key: Key) -> Int { limiters.map { $0.retries(key) }.max() ?? 0 }
}
