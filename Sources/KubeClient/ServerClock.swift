import Foundation
import KubeModels
import Synchronization

/// The API server's clock as this client sees it: the local clock plus the offset the server's `Date` headers
/// show. What a controller compares with server-set times (`creationTimestamp`, `deletionTimestamp`, lease
/// renewals) so that an operator whose clock is ahead does not act early, nor late when it is behind.
///
/// A `Date` header has one-second resolution and was written before it was read, so `Date - local now` at
/// receipt is a lower bound of the offset: the estimate is never ahead of the server and at most a second (plus
/// the request's latency) behind it. For expiry that is the safe side: a TTL may end up to a second late, never
/// early. The latest response wins, so a local clock that is stepped (NTP) is followed on the next response.
public final class ServerClock: Sendable {
    let local: @Sendable () -> Date
    let offset = Mutex<TimeInterval?>(nil)

    public init(local: @escaping @Sendable () -> Date = { Date() }) {
        self.local = local
    }

    /// The server's time now (the local clock until a response has shown the offset).
    public func now() -> Date { local().addingTimeInterval(offset.withLock { $0 } ?? 0) }

    /// How far the server's clock is ahead of the local one (negative: behind); nil before any response.
    public var skew: TimeInterval? { offset.withLock { $0 } }

    /// Takes a sample from a response's `Date` header.
    public func observe(dateHeader: String?) {
        guard let dateHeader, let server = KubeTime.parseHTTPDate(dateHeader) else { return }
        let sample = server.timeIntervalSince(local())
        offset.withLock { $0 = sample }
    }
}
