import Synchronization

/// A watch's events, read from the connection only as far as `limit` events ahead of whoever consumes them.
/// A consumer slower than the server (an informer whose handlers are busy during a burst) then leaves the rest
/// unread in the socket — the server's buffer, which kube-apiserver bounds by closing a watcher too far behind,
/// after which the informer resumes from its last version — instead of an unbounded queue of parsed objects in
/// this process. client-go's watch decoder reads the same way: one event per `Next()` of its consumer.
public struct WatchStream<Element: Sendable>: AsyncSequence, Sendable {
    public typealias Failure = any Error
    let iterator: @Sendable () -> AsyncIterator

    /// How many events a watch decodes ahead of its consumer.
    public static var defaultLimit: Int { 64 }

    /// A stream fed by `produce`, whose `yield` waits while `limit` events are unconsumed. The stream ends when
    /// `produce` returns, with the error it throws (a cancellation ends it without one); a consumer that stops
    /// iterating cancels `produce`.
    public static func make(
        limit: Int = defaultLimit, _ produce: @escaping @Sendable (_ yield: @escaping @Sendable (Element) async throws -> Void) async throws -> Void
    ) -> WatchStream {
        let credits = Credits(limit)
        let (stream, continuation) = AsyncThrowingStream<Element, any Error>.makeStream()
        let task = Task {
            do {
                try await produce { element in
                    try await credits.acquire()
                    continuation.yield(element)
                }
                continuation.finish()
            } catch is CancellationError {
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return WatchStream {
            let base = Cursor(stream.makeAsyncIterator())
            return AsyncIterator {
                let element = try await base.next()
                credits.release()
                return element
            }
        }
    }

    /// The same events passed through `transform` (nil drops one), applied as each is consumed: no second task or
    /// buffer between the socket and the consumer.
    public func compactMap<T: Sendable>(_ transform: @escaping @Sendable (Element) throws -> T?) -> WatchStream<T> {
        WatchStream<T> {
            let base = Cursor(self.makeAsyncIterator())
            return WatchStream<T>.AsyncIterator {
                while let element = try await base.next() {
                    if let t = try transform(element) { return t }
                }
                return nil
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { iterator() }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let nextElement: () async throws -> Element?

        public mutating func next() async throws -> Element? { try await nextElement() }
    }
}

/// An iterator held by reference, so the closure behind `WatchStream.AsyncIterator` can advance it.
final class Cursor<Base: AsyncIteratorProtocol> {
    var base: Base
    init(_ base: Base) { self.base = base }
    func next() async throws -> Base.Element? { try await base.next() }
}

/// Permits for a producer to run ahead of its consumer: `acquire` waits (cancellably) while none is left.
final class Credits: Sendable {
    let state: Mutex<(available: Int, waiter: CheckedContinuation<Void, any Error>?)>

    init(_ limit: Int) { state = Mutex((limit, nil)) }

    func acquire() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let now = state.withLock { s -> Bool in
                    if s.available > 0 {
                        s.available -= 1
                        return true
                    }
                    if Task.isCancelled { return true }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { s in
                defer { s.waiter = nil }
                return s.waiter
            }?.resume(throwing: CancellationError())
        }
        try Task.checkCancellation()
    }

    func release() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.available += 1
            return nil
        }
        waiter?.resume()
    }
}
