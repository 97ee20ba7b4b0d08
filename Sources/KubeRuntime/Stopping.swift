/// `body`'s answer, or nil as soon as `stop` yields (then `body` is cancelled): a wait that a shutdown ends.
func unlessStopped<T: Sendable>(by stop: AsyncStream<Void>, _ body: @escaping @Sendable () async -> T?) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask {
            for await _ in stop { break }
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
