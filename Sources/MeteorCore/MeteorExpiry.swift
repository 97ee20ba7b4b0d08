import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// When a Meteor expires (`spec.ttl` after its creation), and when its reconcile comes round again.
enum MeteorExpiry {
    /// The longest TTL the CRD accepts (a year). One outside it (stored under a laxer CRD) is reported as
    /// InvalidSpec, never acted on.
    static let maximumTTL: Int64 = 31_536_000

    static func expiration(of meteor: Meteor) -> Date? {
        guard let ttl = meteor.spec.ttl, ttl > 0, ttl <= maximumTTL, let created = meteor.metadata.creationTimestamp else { return nil }
        return created.addingTimeInterval(TimeInterval(ttl))
    }

    /// Back at the expiry (at most a day ahead: it is re-checked then, and a far-off date never overflows a
    /// Duration), or after `retry` when that comes first.
    static func requeue(until expiration: Date?, now: Date, orRetryAfter retry: Duration? = nil) -> ReconcileAction {
        var next = retry
        if let expiration {
            let seconds = min(max(0, expiration.timeIntervalSince(now)), 86_400)
            let expiry = Duration.milliseconds(Int64(seconds * 1000) + 1)
            next = min(next ?? expiry, expiry)
        }
        return next.map { .requeueAfter($0) } ?? .done
    }
}

extension MeteorReconciler {
    /// Deletes the Meteor, and everything it made with it, once its TTL has passed; true when it is due.
    func expireIfDue(_ meteor: Meteor, raw: JSONValue, expiration: Date?, now: Date) async throws -> Bool {
        guard let expiration, now >= expiration else { return false }
        let deleted = try await ignoreNotFound {
            try await cache.delete(
                ObjectKey(namespace: meteor.namespace, name: meteor.name), Meteor.resourceType,
                DeleteParams(propagationPolicy: .background, preconditionUID: meteor.metadata.uid))
        }
        // Said only by the reconcile whose delete went through, so a second one from a cache that still shows the
        // Meteor (its delete a 404) does not say it again; counted before the Event, so whoever sees the Event
        // sees the count.
        if deleted != nil {
            metrics?.expired()
            await events.record(
                raw, type: .normal, reason: .expired, message: "TTL of \(meteor.spec.ttl ?? 0)s reached; deleting the Meteor and everything it made")
        }
        return true
    }
}
