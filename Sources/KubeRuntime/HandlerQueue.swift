import DequeModule
import Synchronization

/// One informer handler's own queue of events, as client-go's `processorListener`: the watch loop hands each
/// event over and goes on, and the handler takes them in order, so a slow handler (a web page's feed, metrics)
/// holds up no other handler and not the watch. Bounded: a handler `capacity` events behind holds the watch
/// until it has caught up half of that, so a stuck handler cannot grow memory without end (client-go's buffer
/// grows instead).
///
/// No task waits on an empty queue: a drain task starts when events arrive and ends when the queue is empty.
final class HandlerQueue<K: CachedResource>: Sendable {
    struct State {
        var events: Deque<InformerEvent<K>> = []
        var draining = false
        /// Producers waiting for room.
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    let handler: Informer<K>.Handler
    let capacity: Int
    let state = Mutex(State())
    /// Called after each event has been through the handler.
    let delivered: @Sendable () -> Void

    init(handler: @escaping Informer<K>.Handler, capacity: Int, delivered: @escaping @Sendable () -> Void) {
        self.handler = handler
        self.capacity = capacity
        self.delivered = delivered
    }

    /// Queues `event`; suspends while the queue is full.
    func enqueue(_ event: InformerEvent<K>) async {
        while true {
            let full = state.withLock { $0.events.count >= capacity }
            if !full { break }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.events.count < capacity { return true }
                    s.waiting.append(c)
                    return false
                }
                if resumeNow { c.resume() }
            }
        }
        let start = state.withLock { s -> Bool in
            s.events.append(event)
            if s.draining { return false }
            s.draining = true
            return true
        }
        if start { Task { await self.drain() } }
    }

    func drain() async {
        while true {
            let (next, room) = state.withLock { s -> (InformerEvent<K>?, [CheckedContinuation<Void, Never>]) in
                guard let e = s.events.popFirst() else {
                    s.draining = false
                    return (nil, [])
                }
                // A held producer goes on once the queue is half empty, not at each free slot: one wake-up per
                // half a buffer instead of one per event.
                guard !s.waiting.isEmpty, s.events.count <= capacity / 2 else { return (e, []) }
                defer { s.waiting = [] }
                return (e, s.waiting)
            }
            for c in room { c.resume() }
            guard let next else { return }
            await handler(next)
            delivered()
        }
    }
}
