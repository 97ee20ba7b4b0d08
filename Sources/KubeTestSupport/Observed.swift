import Synchronization

/// A value tests change from concurrent code and wait on: `wait(until:)` returns as soon as a change makes the
/// condition true, so tests synchronise on events, never on sleeps. A wait honours cancellation and gives up
/// after a deadline with `TimedOut` naming where it waited: a condition that never comes fails its test instead of
/// hanging the whole run.
public final class Observed<Value: Sendable>: Sendable {
    public typealias Condition = @Sendable (Value) -> Bool

    struct State {
        var value: Value
        var nextID = 0
        var waiters: [Int: (Condition, CheckedContinuation<Void, any Error>)] = [:]
    }

    let state: Mutex<State>

    public init(_ initial: Value) { state = Mutex(State(value: initial)) }

    public var value: Value { state.withLock { $0.value } }

    /// Changes the value and wakes the waiters whose condition now holds.
    @discardableResult
    public func update<R>(_ change: (inout Value) -> R) -> R {
        let (result, ready) = state.withLock { s -> (R, [CheckedContinuation<Void, any Error>]) in
            let r = change(&s.value)
            let v = s.value
            let ids = s.waiters.filter { $0.value.0(v) }.map(\.key)
            return (r, ids.compactMap { s.waiters.removeValue(forKey: $0)?.1 })
        }
        for c in ready { c.resume() }
        return result
    }

    /// Returns once `condition` holds; throws `TimedOut` after `timeout`, or `CancellationError`.
    public func wait(
        timeout: Duration = defaultWaitTimeout, sourceLocation: String = #fileID, line: Int = #line, until condition: @escaping Condition
    ) async throws {
        try await within(timeout, "a condition at \(sourceLocation):\(line)") {
            try await self.waitUnbounded(until: condition)
        }
    }

    func waitUnbounded(until condition: @escaping Condition) async throws {
        let id = state.withLock { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                // Cancelled before registering: the flag is set before the handler runs, so checking it under
                // the lock the handler also takes leaves no gap.
                let outcome = state.withLock { s -> Result<Bool, CancellationError> in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if condition(s.value) { return .success(true) }
                    s.waiters[id] = (condition, c)
                    return .success(false)
                }
                switch outcome {
                case .failure(let e): c.resume(throwing: e)
                case .success(true): c.resume()
                case .success(false): break
                }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.1.resume(throwing: CancellationError())
        }
    }
}

/// How long a test waits for a condition before it fails. Generous: a loaded CI machine is slow, but a hang is
/// worse than a failure that says where it waited.
public let defaultWaitTimeout: Duration = .seconds(120)

public struct TimedOut: Error, CustomStringConvertible {
    public var what: String
    public var after: Duration
    public init(what: String, after: Duration) {
        self.what = what
        self.after = after
    }
    public var description: String { "timed out after \(after) waiting for \(what)" }
}

/// Runs `body` and throws `TimedOut` if it has not finished within `timeout` (it is cancelled then, so it must
/// honour cancellation).
public func within<T: Sendable>(
    _ timeout: Duration, _ what: @autoclosure () -> String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let what = what()
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TimedOut(what: what, after: timeout) }
        return value
    }
}

/// Runs `body` until it succeeds (an error is the state not reached yet, or an outage: the next attempt comes
/// 200 ms later), for at most two minutes: the chaos test's own writes while the control plane is being killed,
/// and waits for a state of a real server nothing announces (an admission policy in force).
public func persistently(_ what: String, _ body: () async throws -> Void) async throws {
    let deadline = ContinuousClock.now + .seconds(120)
    while true {
        do {
            return try await body()
        } catch {
            if ContinuousClock.now > deadline { throw TimedOut(what: "\(what) (last error: \(error))", after: .seconds(120)) }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
