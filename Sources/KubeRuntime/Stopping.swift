/// `body`'s answer, or false as soon as `stop` yields (then `body` is cancelled): a wait that a shutdown ends.
func unlessStopped(by stop: AsyncStream<Void>, _ body: @escaping @Sendable () async -> Bool) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask { await body() }
        group.addTask {
            for await _ in stop { break }
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
}
