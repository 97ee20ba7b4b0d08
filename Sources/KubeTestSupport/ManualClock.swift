import KubeRuntime
import Synchronization

/// A clock that moves only when a test says so; sleepers wake when `advance` passes their deadline.
public final class ManualClock: RuntimeClock {
    struct State {
        var offset: Duration = .zero
        var sleepers: [(ContinuousClock.Instant, CheckedContinuation<Void, any Error>)] = []
    }

    let base = ContinuousClock.now
    let state = Mutex(State())

    public init() {}

    public var now: ContinuousClock.Instant { base + state.withLock { $0.offset } }

    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let resumeNow = state.withLock { s -> Bool in
                if deadline <= base + s.offset { return true }
                s.sleepers.append((deadline, c))
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    public func advance(by d: Duration) {
        let due = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.offset += d
            let now = base + s.offset
            let ready = s.sleepers.filter { $0.0 <= now }.map(\.1)
            s.sleepers.removeAll { $0.0 <= now }
            return ready
        }
        for c in due { c.resume() }
    }
}
