import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import Synchronization
import Testing

/// Reads events from a watch until `count` arrive (or the stream ends).
func collect(_ stream: WatchStream<WatchEvent<JSONValue>>, count: Int) async throws -> [WatchEvent<JSONValue>] {
    var out: [WatchEvent<JSONValue>] = []
    for try await e in stream {
        out.append(e)
        if out.count == count { break }
    }
    return out
}

func names(_ events: [WatchEvent<JSONValue>]) -> [String] {
    events.map { e in
        switch e {
        case .added(let o): return "ADDED " + (o[path: "metadata", "name"]?.stringValue ?? "")
        case .modified(let o): return "MODIFIED " + (o[path: "metadata", "name"]?.stringValue ?? "")
        case .deleted(let o): return "DELETED " + (o[path: "metadata", "name"]?.stringValue ?? "")
        case .bookmark: return "BOOKMARK"
        }
    }
}

@Suite struct WatchTests {
    /// A watch is decoded only as far as its consumer plus a small buffer: a slow consumer leaves the rest unread
    /// (with the old unbounded relay, the producer ran hundreds of events ahead and held them all parsed).
    @Test func aWatchIsReadOnlyAsFarAsItsConsumerPlusItsBuffer() async throws {
        let counts = Mutex((produced: 0, consumed: 0, furthestAhead: 0))
        let stream = WatchStream<Int>.make(limit: 8) { yield in
            for i in 0..<500 {
                counts.withLock { c in
                    c.produced += 1
                    c.furthestAhead = max(c.furthestAhead, c.produced - c.consumed)
                }
                try await yield(i)
            }
        }
        var seen: [Int] = []
        for try await i in stream {
            seen.append(i)
            counts.withLock { $0.consumed += 1 }
            for _ in 0..<20 { await Task.yield() }
        }
        #expect(seen == Array(0..<500))
        // The limit, plus the event being handed over and the one the producer is about to wait with.
        #expect(counts.withLock { $0.furthestAhead } <= 8 + 2)
    }

    /// A consumer that stops reading ends the producer (it was waiting for room), not a task left behind.
    @Test func aConsumerThatStopsEndsTheProducer() async throws {
        let ended = AsyncStream<Void>.makeStream()
        do {
            let stream = WatchStream<Int>.make(limit: 2) { yield in
                defer { ended.continuation.yield() }
                var i = 0
                while true {
                    try await yield(i)
                    i += 1
                }
            }
            for try await i in stream where i == 5 { break }
        }
        for await _ in ended.stream { break }
    }

    @Test func watchStreamsChangesAndResumesFromResourceVersion() async throws {
        try await TestCluster.with(tls: true) { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("before"))
            let listed = try await meteors.list()
            let rv = listed.metadata.resourceVersion!
            let stream = meteors.watch(WatchOptions(resourceVersion: rv, allowBookmarks: false))
            _ = try await meteors.create(meteor("a"))
            _ = try await meteors.patch("a", .merge(["spec": ["ref": "dev"]]))
            try await meteors.delete("a")
            let events = try await collect(stream, count: 3)
            #expect(names(events) == ["ADDED a", "MODIFIED a", "DELETED a"])

            // Resuming from the version after the first event replays exactly the rest.
            guard case .added(let first) = events[0] else { Issue.record("expected ADDED"); return }
            let resumed = try await collect(
                meteors.watch(WatchOptions(resourceVersion: first[path: "metadata", "resourceVersion"]!.stringValue, allowBookmarks: false)), count: 2
            )
            #expect(names(resumed) == ["MODIFIED a", "DELETED a"])
        }
    }

    @Test func watchWithoutVersionStartsWithCurrentState() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("x", labels: ["app": "a"]))
            _ = try await meteors.create(meteor("y", labels: ["app": "b"]))
            let events = try await collect(meteors.watch(WatchOptions(labelSelector: "app=a", allowBookmarks: false)), count: 1)
            #expect(names(events) == ["ADDED x"])
        }
    }

    @Test func labelChangesMoveObjectsInAndOutOfASelectorWatch() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            let created = try await meteors.create(meteor("s", labels: ["app": "b"]))
            let stream = meteors.watch(
                WatchOptions(
                    resourceVersion: created[path: "metadata", "resourceVersion"]!.stringValue, labelSelector: "app=a", allowBookmarks: false))
            _ = try await meteors.patch("s", .merge(["metadata": ["labels": ["app": "a"]]]))
            _ = try await meteors.patch("s", .merge(["metadata": ["labels": ["app": "c"]]]))
            #expect(names(try await collect(stream, count: 2)) == ["ADDED s", "DELETED s"])
        }
    }

    @Test func compactedVersionAnswers410AsAnErrorEvent() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            let old = try await meteors.create(meteor("old"))
            _ = try await meteors.create(meteor("newer"))
            c.server.compact()
            // kube-apiserver answers HTTP 200 and one ERROR event with code 410; the client surfaces it as gone.
            let raw = try await c.client.send(
                .GET, meteorType.collectionPath(namespace: "default"),
                query: [("watch", "true"), ("resourceVersion", old[path: "metadata", "resourceVersion"]!.stringValue!)])
            #expect(raw.code == 200)
            let line = try JSONValue.parse(raw.body.split(separator: 0x0A).first!)
            #expect(line["type"] == "ERROR")
            #expect(line[path: "object", "code"] == 410)
            await #expect {
                _ = try await collect(meteors.watch(WatchOptions(resourceVersion: old[path: "metadata", "resourceVersion"]!.stringValue)), count: 1)
            } throws: { ($0 as? KubeError)?.isGone == true }
        }
    }

    @Test func forcedExpiryAndCutStreams() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            c.server.expireNextWatches(1)
            await #expect { _ = try await collect(meteors.watch(), count: 1) } throws: { ($0 as? KubeError)?.isGone == true }
            let stream = meteors.watch(WatchOptions(allowBookmarks: false))
            _ = try await meteors.create(meteor("one"))
            var iterator = stream.makeAsyncIterator()
            let first = try await iterator.next()
            #expect(first.map { names([$0]) } == ["ADDED one"])
            c.server.cutWatches()
            #expect(try await iterator.next() == nil)
        }
    }

    @Test func bookmarksCarryTheCurrentVersion() async throws {
        var config = EmbeddedAPIServer.Configuration()
        config.bookmarkInterval = .milliseconds(100)
        try await TestCluster.with(configuration: config) { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await c.client.api(ConfigMap.self, namespace: "default").create(ConfigMap(metadata: ObjectMeta(name: "unrelated")))
            let current = String(c.server.currentResourceVersion)
            for try await e in meteors.watch(WatchOptions(resourceVersion: current, allowBookmarks: true)) {
                guard case .bookmark(let rv) = e else { Issue.record("unexpected event"); break }
                #expect(UInt64(rv)! >= UInt64(current)!)
                break
            }
        }
    }

    @Test func timeoutSecondsEndsTheStream() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            let events = try await collect(meteors.watch(WatchOptions(timeoutSeconds: 1, allowBookmarks: false)), count: 100)
            #expect(events.isEmpty)
        }
    }

    @Test func watchDecoderHandlesSplitChunksAndBoundsLines() throws {
        var d = WatchLineDecoder(maxLineBytes: 64)
        let text = Array(#"{"type":"ADDED","object":{"a":1}}"#.utf8) + [0x0A] + Array(#"{"type":"DELETED","object":{}}"#.utf8) + [0x0A]
        var events: [JSONValue] = []
        for chunk in stride(from: 0, to: text.count, by: 5).map({ Array(text[$0..<min($0 + 5, text.count)]) }) {
            events += try d.feed(chunk)
        }
        #expect(events.map { $0["type"] } == ["ADDED", "DELETED"])
        #expect(d.bufferedBytes == 0)
        #expect(throws: WatchLineDecoder.LineTooLong.self) { try d.feed(Array(repeating: UInt8(ascii: "a"), count: 65)) }
    }
}
