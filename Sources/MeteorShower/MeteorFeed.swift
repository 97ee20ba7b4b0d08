import KubeModels
import KubeRuntime
import Synchronization

/// Fans the Meteor informer's events out to the page's open event streams (one informer handler, any number of
/// browsers). A subscriber that stops reading loses its oldest changes, never blocks the informer.
final class MeteorFeed: Sendable {
    enum Change: Sendable {
        case changed(JSONValue)
        case deleted(JSONValue)
        case heartbeat
    }

    final class Subscription: Sendable {
        let stream: AsyncStream<Change>
        let cancel: @Sendable () -> Void
        init(stream: AsyncStream<Change>, cancel: @escaping @Sendable () -> Void) {
            self.stream = stream
            self.cancel = cancel
        }
    }

    let namespace: String
    let heartbeat: Duration
    let subscribers = Mutex<(next: Int, all: [Int: AsyncStream<Change>.Continuation], closed: Bool)>((0, [:], false))
    let attached = Mutex(false)

    init(namespace: String, heartbeat: Duration = .seconds(15)) {
        self.namespace = namespace
        self.heartbeat = heartbeat
    }

    func attach(to informer: DynamicInformer) async {
        guard
            attached.withLock({ a in
                defer { a = true }; return !a
            })
        else { return }
        let namespace = self.namespace
        await informer.addHandler { [self] event in
            guard event.object[path: "metadata", "namespace"]?.stringValue == namespace else { return }
            switch event {
            case .added(let m), .updated(_, let m): broadcast(.changed(m))
            case .deleted(let m): broadcast(.deleted(m))
            }
        }
    }

    func broadcast(_ change: Change) {
        for c in subscribers.withLock({ Array($0.all.values) }) { c.yield(change) }
    }

    func subscribe() -> Subscription {
        let (stream, continuation) = AsyncStream<Change>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let registered = subscribers.withLock { s -> Int? in
            if s.closed { return nil }
            s.next += 1
            s.all[s.next] = continuation
            return s.next
        }
        guard let id = registered else {
            // The server is stopping: an empty stream, so the response ends at once.
            continuation.finish()
            return Subscription(stream: stream, cancel: {})
        }
        let interval = heartbeat
        let beat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield(.heartbeat)
            }
        }
        let cancel: @Sendable () -> Void = { [self] in
            beat.cancel()
            subscribers.withLock { $0.all.removeValue(forKey: id) }?.finish()
        }
        continuation.onTermination = { _ in cancel() }
        return Subscription(stream: stream, cancel: cancel)
    }

    /// Ends every open stream (the server is stopping).
    func finishAll() {
        for c in subscribers.withLock({ s in
            defer { s.all = [:]; s.closed = true }; return Array(s.all.values)
        }) { c.finish() }
    }
}
