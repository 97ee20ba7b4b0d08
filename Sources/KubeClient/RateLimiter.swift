import Foundation
import KubeModels
import Synchronization

/// Client-side token bucket (client-go's `QPS` and `Burst`): `acquire` waits until a token is free.
public final class TokenBucketRateLimiter: Sendable {
    public let qps: Double
    public let burst: Int
    private let state: Mutex<(tokens: Double, last: ContinuousClock.Instant)>

    public init(qps: Double, burst: Int) {
        self.qps = qps
        self.burst = max(1, burst)
        state = Mutex((Double(max(1, burst)), ContinuousClock.now))
    }

    /// Takes a token, returning how long the caller must wait before using it.
    func reserve() -> Duration {
        guard qps > 0 else { return .zero }
        return state.withLock { s in
            let now = ContinuousClock.now
            let elapsed = now - s.last
            let seconds = elapsed.seconds
            s.tokens = min(Double(burst), s.tokens + seconds * qps)
            s.last = now
            s.tokens -= 1
            if s.tokens >= 0 { return .zero }
            return .milliseconds(Int64((-s.tokens / qps) * 1000))
        }
    }

    public func acquire() async throws {
        let wait = reserve()
        if wait > .zero { try await Task.sleep(for: wait) }
    }
}
