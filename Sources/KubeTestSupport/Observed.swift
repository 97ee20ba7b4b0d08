import Synchronization

/// A value tests change from concurrent code and wait on: `wait(until:)` returns as soon as a change makes the
/// condition true, so tests synchronise on events, never on sleeps.
public final class Observed<Value: Sendable>: Sendable {
    public typealias Condition = @Sendable (Value) -> Bool

    struct State {
        var value: Value
        var waiters: [(Condition, CheckedContinuation<Void, Never>)] = []
    }

    let state: Mutex<State>

    public init(_ initial: Value) { state = Mutex(State(value: initial)) }

    public var value: Value { state.withLock { $0.value } }

    /// Changes the value and wakes the waiters whose condition now holds.
    @discardableResult
    public func update<R>(_ change: (inout Value) -> R) -> R {
        let (result, ready) = state.withLock { s -> (R, [CheckedContinuation<Void, Never>]) in
            let r = change(&s.value)
            let v = s.value
            let ready = s.waiters.filter { $0.0(v) }.map(\.1)
            s.waiters.removeAll { $0.0(v) }
            return (r, ready)
        }
        for c in ready { c.resume() }
        return result
    }

    public func wait(until condition: @escaping Condition) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let satisfied = state.withLock { s -> Bool in
                if condition(s.value) { return true }
                s.waiters.append((condition, c))
                return false
            }
            if satisfied { c.resume() }
        }
    }
}
