import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Synchronization
import Testing

/// Records what handlers saw, as lines tests can wait on.
final class EventLog: Sendable {
    let events = Observed<[String]>([])

    func record(_ e: InformerEvent<JSONValue>) {
        let line: String
        switch e {
        case .added(let o): line = "added \(ObjectKey(o))"
        case .updated(_, let o): line = "updated \(ObjectKey(o))"
        case .deleted(let o): line = "deleted \(ObjectKey(o))"
        }
        events.update { $0.append(line) }
    }

    var all: [String] { events.value }

    func wait(sourceLocation: String = #fileID, line: Int = #line, until condition: @escaping @Sendable ([String]) -> Bool) async throws {
        try await events.wait(sourceLocation: sourceLocation, line: line, until: condition)
    }
}

/// A typed model stricter than the server: a ConfigMap whose `data.size` must be there.
struct SizedConfigMap: KubeResource, CachedResource {
    static let resourceType = ConfigMap.resourceType
    struct Payload: Codable, Sendable { var size: String }
    var metadata: ObjectMeta
    var data: Payload
    var unknownFields = UnknownFields()
}

@Suite struct InformerTests {
    /// The runtime is generic over what it caches (kube-rs's `Store<K>`): a typed informer's store and handlers
    /// hold decoded objects; one that does not decode is left out and named in `unreadable`, and comes in once it
    /// decodes.
    @Test func aTypedInformerHoldsDecodedObjectsAndLeavesOutWhatDoesNotDecode() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(ConfigMap.resourceType, namespace: "default")
            let informer = Informer<SizedConfigMap>(api: api)
            let seen = Observed<[String]>([])
            await informer.addHandler { e in
                if case .added(let o) = e { seen.update { $0.append("\(o.metadata.name ?? ""):\(o.data.size)") } }
            }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            let config: (String, JSONValue) -> JSONValue = { name, data in
                ["apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": .string(name)], "data": data]
            }
            _ = try await api.create(config("a", ["size": "3"]))
            _ = try await api.create(config("b", ["colour": "blue"]))
            _ = try await api.create(config("c", ["size": "5"]))
            // The watch is ordered: once c is in, b has been judged.
            try await seen.wait { $0.contains("c:5") }
            #expect(seen.value == ["a:3", "c:5"])
            #expect(informer.store.get(ObjectKey(namespace: "default", name: "a"))?.data.size == "3")
            #expect(informer.store.get(ObjectKey(namespace: "default", name: "b")) == nil)
            #expect(informer.store.unreadable[ObjectKey(namespace: "default", name: "b")]?.contains("size") == true)
            #expect(informer.store.list().map(\.objectKey.name).sorted() == ["a", "c"])
            _ = try await api.patch("b", .merge(["data": ["size": "7"]]))
            try await seen.wait { $0.contains("b:7") }
            #expect(informer.store.unreadable.isEmpty)
            run.cancel()
            await run.value
        }
    }

    @Test func listsThenWatchesAndSurvivesCutsAnd410WithoutLossOrDuplicates() async throws {
        try await TestCluster.with { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("pre-existing"))
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            let log = EventLog()
            await informer.addHandler { log.record($0) }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            #expect(log.all == ["added default/pre-existing"])

            _ = try await meteors.create(meteor("a"))
            try await log.wait { $0.contains("added default/a") }

            // Cut the stream: the informer resumes from the last version, nothing replays twice.
            c.server.cutWatches()
            _ = try await meteors.create(meteor("b"))
            try await log.wait { $0.contains("added default/b") }

            // 410 while disconnected: changes made meanwhile (a deletion among them) arrive through the re-list diff.
            c.server.expireNextWatches(1)
            c.server.compact()
            c.server.cutWatches()
            try await meteors.delete("a")
            _ = try await meteors.patch("b", .merge(["spec": ["ref": "v2"]]))
            _ = try await meteors.create(meteor("c"))
            try await log.wait { $0.contains("added default/c") && $0.contains("deleted default/a") && $0.contains("updated default/b") }
            #expect(informer.listCount >= 2)
            run.cancel()
            await run.value

            let all = log.all
            #expect(all.filter { $0 == "added default/a" }.count == 1)
            #expect(all.filter { $0 == "added default/b" }.count == 1)
            #expect(all.filter { $0 == "deleted default/a" }.count == 1)
            #expect(all.filter { $0 == "updated default/b" }.count == 1)
            #expect(Set(informer.store.keys.map(\.description)) == ["default/pre-existing", "default/b", "default/c"])
            #expect(informer.store.get(ObjectKey(namespace: "default", name: "b"))?[path: "spec", "ref"] == "v2")
        }
    }

    /// The cache changes before handlers run: a reader that saw the new cache and reads what a later handler
    /// derives from it (metrics, a queue) first awaits `handlersIdle()`, which waits for the slowest handler.
    /// Failures back off from scratch once the server has answered a list in full: three refused lists, a good one,
    /// then a refused watch waits 200 ms, not the 1.6 s the failures before the good list would have made it. (Seen in
    /// the long chaos run: after kube-apiserver and etcd outages, informers waited 30 s to retry a later hiccup.)
    @Test func aListThatSucceedsResetsTheBackoff() async throws {
        try await TestCluster.with { c in
            c.server.inject(InjectedFault(.status(403, retryAfterSeconds: nil), verb: "list", pathContains: "/meteors", count: 3))
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            let run = Task { await informer.run() }
            await informer.waitForSync()
            #expect(informer.listCount == 4)
            #expect(informer.lastRetryDelay == .milliseconds(800), "the third refused list waited the third delay")
            // The next watch is refused, the one after held, so the delay before it is read while nothing moves.
            c.server.inject(InjectedFault(.status(403, retryAfterSeconds: nil), verb: "watch", pathContains: "/meteors", count: 1))
            c.server.inject(InjectedFault(.hold, verb: "watch", pathContains: "/meteors", count: 1))
            c.server.cutWatches()
            try await within(defaultWaitTimeout, "the informer's next watch") { await c.server.waitForHeldRequest() }
            #expect(informer.lastRetryDelay == .milliseconds(200))
            c.server.releaseHeldRequests()
            run.cancel()
            await run.value
        }
    }

    @Test func handlersIdleWaitsForEveryHandlerOfWhatTheCacheAlreadyShows() async throws {
        try await TestCluster.with { c in
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            let log = Observed<[String]>([])
            await informer.addHandler { e in if case .added = e { log.update { $0.append("seen") } } }
            await informer.addHandler { e in
                guard case .added = e else { return }
                try? await Task.sleep(for: .milliseconds(300))  // a slow handler, not synchronisation
                log.update { $0.append("handled") }
            }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            await informer.handlersIdle()  // nothing in flight: returns at once
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("slow"))
            try await log.wait { $0.contains("seen") }
            #expect(informer.store.get(ObjectKey(namespace: "default", name: "slow")) != nil)
            #expect(log.value == ["seen"])
            await informer.handlersIdle()
            #expect(log.value == ["seen", "handled"])
            run.cancel()
            await run.value
        }
    }

    /// Each handler has its own bounded queue (client-go's processorListener): a stuck handler holds up neither the
    /// other handlers nor the cache until it is `handlerBuffer` events behind; then it holds the watch, and
    /// memory stays bounded. Once it moves, everything it missed arrives in order.
    @Test func aSlowHandlerHoldsUpOthersOnlyOnceItsBufferIsFull() async throws {
        try await TestCluster.with { c in
            let informer = DynamicInformer(api: c.client.dynamic(meteorType), handlerBuffer: 2)
            let gate = Observed(false)
            let slow = Observed<[String]>([])
            await informer.addHandler { e in
                try? await gate.wait(timeout: .seconds(60)) { $0 }
                slow.update { $0.append(ObjectKey(e.object).name) }
            }
            let fast = EventLog()
            await informer.addHandler { fast.record($0) }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            let api = c.client.dynamic(meteorType, namespace: "default")
            // One in the stuck handler, two in its queue: the other handler and the cache are not held up.
            for name in ["m1", "m2", "m3"] { _ = try await api.create(meteor(name)) }
            try await fast.wait { $0.count == 3 }
            #expect(slow.value.isEmpty)
            #expect(!informer.isHeldByAHandler)
            // The fourth finds the stuck handler's queue full: the watch waits for it, before the handlers after it.
            _ = try await api.create(meteor("m4"))
            try await persistently("the watch held by the full queue") {
                guard informer.isHeldByAHandler else { throw TimedOut(what: "the watch to wait for the stuck handler", after: .zero) }
            }
            #expect(fast.all.count == 3)
            gate.update { $0 = true }
            try await slow.wait { $0 == ["m1", "m2", "m3", "m4"] }
            try await fast.wait { $0.count == 4 }
            await informer.handlersIdle()
            #expect(!informer.isHeldByAHandler)
            run.cancel()
            await run.value
        }
    }

    @Test func storeIndexesByNamespaceOwnerAndLabel() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.api(Namespace.self).create(Namespace(metadata: ObjectMeta(name: "other")))
            let owner = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("owner", labels: ["team": "x"]))
            _ = try await c.client.dynamic(meteorType, namespace: "other").create(meteor("elsewhere", labels: ["team": "y"]))
            let cms = c.client.dynamic(ConfigMap.resourceType, namespace: "default")
            _ = try await cms.create([
                "metadata": [
                    "name": "child",
                    "ownerReferences": [
                        ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "name": "owner", "uid": owner[path: "metadata", "uid"]!]
                    ],
                ]
            ])
            let meteorInformer = DynamicInformer(api: c.client.dynamic(meteorType))
            let cmInformer = DynamicInformer(api: c.client.dynamic(ConfigMap.resourceType))
            let runs = [Task { await meteorInformer.run() }, Task { await cmInformer.run() }]
            await meteorInformer.waitForSync()
            await cmInformer.waitForSync()
            #expect(meteorInformer.store.list(namespace: "other").count == 1)
            #expect(
                meteorInformer.store.list(labelSelector: try LabelSelector.parse("team=x")).map(ObjectKey.init) == [
                    ObjectKey(namespace: "default", name: "owner")
                ])
            #expect(meteorInformer.store.list(labelSelector: try LabelSelector.parse("team in (x,y)")).count == 2)
            #expect(
                cmInformer.store.owned(by: owner[path: "metadata", "uid"]!.stringValue!).map(ObjectKey.init) == [
                    ObjectKey(namespace: "default", name: "child")
                ])
            #expect(meteorInformer.store.get(ObjectKey(namespace: "default", name: "owner"))?[path: "metadata", "managedFields"] == nil)
            for r in runs { r.cancel(); await r.value }
        }
    }
}

@Suite struct InformerProgressTests {
    @Test func bookmarksLetAResumedWatchSkipTheRelist() async throws {
        var config = EmbeddedAPIServer.Configuration()
        config.bookmarkInterval = .milliseconds(50)
        try await TestCluster.with(configuration: config) { c in
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            let bookmarked = Observed<UInt64>(0)
            informer.onBookmark { rv in bookmarked.update { $0 = max($0, UInt64(rv) ?? 0) } }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            // Other kinds move the shared resourceVersion on; only bookmarks tell the Meteor informer.
            for i in 0..<5 {
                _ = try await c.client.api(ConfigMap.self, namespace: "default").create(ConfigMap(metadata: ObjectMeta(name: "noise-\(i)")))
            }
            let target = c.server.currentResourceVersion
            try await bookmarked.wait { $0 >= target }
            c.server.compact()
            c.server.cutWatches()
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("after"))
            let log = EventLog()
            await informer.addHandler { log.record($0) }
            try await log.wait { $0.contains("added default/after") }
            #expect(informer.listCount == 1)
            #expect(informer.watchCount >= 2)
            run.cancel()
            await run.value
        }
    }

    @Test func resyncReplaysCachedObjectsAsUpdates() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("steady"))
            let informer = DynamicInformer(api: c.client.dynamic(meteorType), resyncPeriod: .milliseconds(50))
            let log = EventLog()
            await informer.addHandler { log.record($0) }
            let run = Task { await informer.run() }
            try await log.wait { $0.filter { $0 == "updated default/steady" }.count >= 2 }
            run.cancel()
            await run.value
            #expect(informer.listCount == 1)
        }
    }
}
