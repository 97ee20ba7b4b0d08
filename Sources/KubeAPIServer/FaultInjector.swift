import Foundation
import KubeModels
import Synchronization

/// Faults a test asks the server to inject into the next matching requests.
public struct InjectedFault: Sendable {
    public enum Kind: Sendable {
        /// Answer with this status code and a matching metav1.Status (409 Conflict, 429 with Retry-After, 500, 503 …).
        case status(Int, retryAfterSeconds: Int?)
        /// Hold the request this long before serving it normally.
        case delay(Duration)
        /// Hold the request until `releaseHeldRequests()`: a test decides exactly when it proceeds.
        case hold
        /// A watch answered 200 that then never sends a byte, bookmarks included, and never ends on its own: what
        /// a client sees of a half-open connection (a load balancer dropping an idle stream, a vanished node).
        case silentWatch
        /// A watch answered 200 that sends one byte per interval and never completes an event: a stream that is
        /// not silent, yet as dead.
        case tricklingWatch(Duration)
        /// A watch answered as kube-apiserver answers one from a compacted version: 200, then one ERROR event with
        /// 410 Expired. (The request log says 200, as a server's access log would; count the client's re-lists.)
        case expiredWatch
    }

    public var kind: Kind
    /// Which requests it applies to: by verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`) and
    /// path substring; nil matches all.
    public var verb: String?
    public var pathContains: String?
    /// Only requests whose User-Agent contains this (the operator's, not the test's own clients); nil matches all.
    public var userAgentContains: String?
    public var remaining: Int

    public init(_ kind: Kind, verb: String? = nil, pathContains: String? = nil, userAgentContains: String? = nil, count: Int = 1) {
        self.kind = kind
        self.verb = verb
        self.pathContains = pathContains
        self.userAgentContains = userAgentContains
        self.remaining = count
    }
}

/// One request as the server saw it, for tests that check who wrote what.
public struct RequestRecord: Sendable {
    public var verb: String
    public var method: String
    public var path: String
    public var query: String
    public var userAgent: String
    public var code: Int
    public var time: Date
    /// Who it acted as: the authenticated user or, with impersonation headers, the impersonated one.
    public var user: String = UserInfo.admin.name
    /// The authenticated requester, when the request impersonated `user`.
    public var impersonatedBy: String?
}

final class FaultInjector: Sendable {
    let faults = Mutex<[InjectedFault]>([])
    /// How many requests an injected fault has hit.
    let served = Mutex(0)
    let log = Mutex<[RequestRecord]>([])
    let held = Mutex<(requests: [CheckedContinuation<Void, Never>], released: Bool, watchers: [Int: CheckedContinuation<Void, Never>])>(
        ([], false, [:]))
    let nextWaiterID = Mutex(0)

    func waiterID() -> Int {
        nextWaiterID.withLock {
            $0 += 1; return $0
        }
    }

    /// Parks a request until `releaseHeld`; once released (the server is stopping), later holds pass at once.
    func hold() async {
        await withCheckedContinuation { c in
            let (pass, watchers) = held.withLock { h -> (Bool, [CheckedContinuation<Void, Never>]) in
                if h.released { return (true, []) }
                h.requests.append(c)
                defer { h.watchers = [:] }
                return (false, Array(h.watchers.values))
            }
            for w in watchers { w.resume() }
            if pass { c.resume() }
        }
    }

    /// Returns once at least one request is held, or the caller is cancelled.
    func waitForHeld() async {
        let id = waiterID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { c in
                let now = held.withLock { h -> Bool in
                    if !h.requests.isEmpty || Task.isCancelled { return true }
                    h.watchers[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            held.withLock { $0.watchers.removeValue(forKey: id) }?.resume()
        }
    }

    /// Set while the server stops: requests still arriving on open connections get 503 (a watch opened then
    /// would otherwise keep the shutdown waiting for its timeout).
    let stopping = Mutex(false)

    func releaseHeld(stopping: Bool = false) {
        let requests = held.withLock { h -> [CheckedContinuation<Void, Never>] in
            if stopping { h.released = true }
            defer { h.requests = [] }
            return h.requests
        }
        for c in requests { c.resume() }
    }

    /// A started server holds requests again.
    func rearm() {
        held.withLock { $0.released = false }
        stopping.withLock { $0 = false }
    }
    let logLimit = 200_000

    func take(verb: String, path: String, userAgent: String) -> InjectedFault.Kind? {
        faults.withLock { fs in
            guard
                let i = fs.firstIndex(where: { f in
                    (f.verb == nil || f.verb == verb) && (f.pathContains.map { path.contains($0) } ?? true)
                        && (f.userAgentContains.map { userAgent.contains($0) } ?? true) && f.remaining > 0
                })
            else { return nil }
            fs[i].remaining -= 1
            served.withLock { $0 += 1 }
            let kind = fs[i].kind
            if fs[i].remaining == 0 { fs.remove(at: i) }
            return kind
        }
    }

    typealias RequestWaiter = (predicate: @Sendable (RequestRecord) -> Bool, continuation: CheckedContinuation<Void, Never>)
    let requestWaiters = Mutex<[Int: RequestWaiter]>([:])

    func record(_ r: RequestRecord) {
        log.withLock { l in
            l.append(r)
            if l.count > logLimit { l.removeFirst(l.count - logLimit) }
        }
        let ready = requestWaiters.withLock { ws -> [CheckedContinuation<Void, Never>] in
            let ids = ws.filter { $0.value.predicate(r) }.map(\.key)
            return ids.compactMap { ws.removeValue(forKey: $0)?.continuation }
        }
        for c in ready { c.resume() }
    }

    /// Returns once a request matching `predicate` has been served (including ones already logged), or the
    /// caller is cancelled.
    func waitForRequest(_ predicate: @escaping @Sendable (RequestRecord) -> Bool) async {
        let id = waiterID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { c in
                let seen = requestWaiters.withLock { ws -> Bool in
                    if Task.isCancelled || log.withLock({ $0.contains(where: predicate) }) { return true }
                    ws[id] = (predicate, c)
                    return false
                }
                if seen { c.resume() }
            }
        } onCancel: {
            requestWaiters.withLock { $0.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}
