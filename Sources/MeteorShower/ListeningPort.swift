import Synchronization

/// The port one of this module's servers bound once it listens (port 0 picks a free one), and a wait for it.
final class ListeningPort: Sendable {
    let bound = Mutex<Int?>(nil)
    let signal = AsyncStream<Int>.makeStream()

    var port: Int? { bound.withLock { $0 } }

    /// Called once the server listens.
    func listening(on port: Int) {
        bound.withLock { $0 = port }
        signal.continuation.yield(port)
    }

    /// The port, once the server listens.
    func wait() async -> Int? {
        if let p = port { return p }
        for await p in signal.stream { return p }
        return port
    }
}
