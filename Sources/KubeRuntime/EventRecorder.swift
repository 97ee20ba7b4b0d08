import DequeModule
import Foundation
import KubeClient
import KubeModels
import Logging
import Synchronization

/// Records core/v1 Events about objects. An event identical to a recent one (same object, type, reason,
/// message) is aggregated into it — `count` and `lastTimestamp` move — instead of adding another object, so a
/// reconcile loop cannot flood the API server. Recording never fails the caller; errors are logged.
public final class EventRecorder: Sendable {
    public enum EventType: String, Sendable { case normal = "Normal", warning = "Warning" }

    struct Seen {
        var name: String
        var namespace: String
        var count: Int32
        var first: Date
        var lastUse: UInt64
    }

    let client: KubeClient
    let component: String
    let host: String
    let logger: Logger
    /// Recent events by key, and their uses in order (a use leaves the key's older uses behind as stale entries,
    /// skipped when evicting), so eviction of the least recently used is amortised O(1), not a scan per event.
    struct Cache {
        var entries: [String: Seen] = [:]
        var uses = Deque<(key: String, tick: UInt64)>()
        var tick: UInt64 = 0

        mutating func touch(_ key: String) {
            uses.append((key, tick))
            // Bounded: when stale uses pile up, keep only each key's latest.
            if uses.count > 4 * max(entries.count, 64) {
                uses = Deque(entries.sorted { $0.value.lastUse < $1.value.lastUse }.map { ($0.key, $0.value.lastUse) })
            }
        }

        mutating func evict(downTo limit: Int) {
            while entries.count > limit, let (key, tick) = uses.popFirst() {
                if entries[key]?.lastUse == tick { entries.removeValue(forKey: key) }
            }
        }
    }

    let cache = Mutex(Cache())
    let cacheLimit: Int

    public init(
        client: KubeClient, component: String, host: String = ProcessInfo.processInfo.hostName, cacheLimit: Int = 4096,
        logger: Logger = Logger(label: "events")
    ) {
        self.client = client
        self.component = component
        self.host = host
        self.cacheLimit = cacheLimit
        self.logger = logger
    }

    /// Messages are cut to this many bytes (events.k8s.io's limit on a note): an Event says what happened, the
    /// object's status holds the detail.
    public static let maxMessageBytes = 1024

    public func record(_ object: JSONValue, type: EventType, reason: String, message: String) async {
        let message = ObjectHelpers.truncated(message, maxBytes: Self.maxMessageBytes)
        let namespace = object[path: "metadata", "namespace"]?.stringValue ?? "default"
        let uid = object[path: "metadata", "uid"]?.stringValue ?? ""
        let name = object[path: "metadata", "name"]?.stringValue ?? ""
        let key = [uid, type.rawValue, reason, message].joined(separator: "\u{1F}")
        let now = Date()
        let events = client.dynamic(Event.resourceType, namespace: namespace)
        let seen = cache.withLock { c -> Seen? in
            c.tick += 1
            guard var s = c.entries[key] else { return nil }
            s.count += 1
            s.lastUse = c.tick
            c.entries[key] = s
            c.touch(key)
            return s
        }
        if let seen {
            do {
                _ = try await events.patch(seen.name, .merge(["count": .int(Int64(seen.count)), "lastTimestamp": .string(KubeTime.format(now))]))
                return
            } catch let e as KubeError where e.isNotFound {
                // The event expired on the server; start a new one below.
            } catch {
                logger.warning("cannot update event", metadata: ["reason": "\(reason)", "error": "\(error)"])
                return
            }
        }
        let eventName = "\(name).\(String(UInt64(now.timeIntervalSince1970 * 1e9), radix: 16))\(String(UInt32.random(in: 0...0xffff), radix: 16))"
        let involved: JSONValue = [
            "apiVersion": object["apiVersion"] ?? "", "kind": object["kind"] ?? "", "name": .string(name),
            "namespace": .string(namespace), "uid": .string(uid), "resourceVersion": object[path: "metadata", "resourceVersion"] ?? "",
        ]
        let body: JSONValue = [
            "metadata": ["name": .string(eventName), "namespace": .string(namespace)],
            "involvedObject": involved, "type": .string(type.rawValue), "reason": .string(reason), "message": .string(message),
            "count": 1, "firstTimestamp": .string(KubeTime.format(now)), "lastTimestamp": .string(KubeTime.format(now)),
            "source": ["component": .string(component), "host": .string(host)],
            "reportingComponent": .string(component), "reportingInstance": .string(host),
        ]
        do {
            _ = try await events.create(body)
            cache.withLock { c in
                c.entries[key] = Seen(name: eventName, namespace: namespace, count: 1, first: now, lastUse: c.tick)
                c.touch(key)
                c.evict(downTo: cacheLimit)
            }
        } catch {
            logger.warning("cannot record event", metadata: ["reason": "\(reason)", "error": "\(error)"])
        }
    }
}
