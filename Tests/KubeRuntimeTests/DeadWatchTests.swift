import AsyncHTTPClient
import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Watches on dead connections (kube-rs#1316, client-go's watch deadline): a stream that answers 200 and then
/// delivers nothing must not blind an informer. The embedded server's `silentWatch` and `tricklingWatch` faults
/// play the half-open connection; only the informer's own watches get them (path and verb).
@Suite struct DeadWatchTests {
    static func serverWithFrequentBookmarks() -> EmbeddedAPIServer.Configuration {
        var config = EmbeddedAPIServer.Configuration()
        config.bookmarkInterval = .milliseconds(200)
        return config
    }

    /// The watches the server saw for Meteors, in order, and the resourceVersion each one asked for.
    static func meteorWatches(_ server: EmbeddedAPIServer) -> [String] {
        server.requestLog.filter { $0.verb == "watch" && $0.path.hasSuffix("/meteors") }.map { record in
            record.query.split(separator: "&").first { $0.hasPrefix("resourceVersion=") }.map { String($0.dropFirst("resourceVersion=".count)) } ?? ""
        }
    }

    @Test(arguments: [InjectedFault.Kind.silentWatch, .tricklingWatch(.milliseconds(100))])
    func aDeadWatchIsResumedFromItsLastVersionWithinTheIdleDeadline(_ fault: InjectedFault.Kind) async throws {
        try await TestCluster.with(configuration: Self.serverWithFrequentBookmarks()) { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("before"))
            c.server.inject(InjectedFault(fault, verb: "watch", pathContains: "/meteors"))
            let informer = DynamicInformer(api: c.client.dynamic(meteorType), watchIdleTimeout: .seconds(2))
            let log = EventLog()
            await informer.addHandler { log.record($0) }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            // Made while the informer's only watch is dead: it arrives once the watch is given up and resumed.
            _ = try await meteors.create(meteor("during"))
            try await log.wait { $0.contains("added default/during") }
            #expect(informer.idleResumeCount >= 1)
            #expect(informer.listCount == 1, "resumed, not re-listed")
            let watches = Self.meteorWatches(c.server)
            #expect(watches.count >= 2)
            #expect(
                watches.count >= 2 && watches[0] == watches[1] && !watches[0].isEmpty, "the second watch starts where the dead one did: \(watches)")
            let kind = if case .silentWatch = fault { "sends nothing" } else { "trickles a byte per 100 ms, never a whole event" }
            ReliabilityReport.row(
                "A watch answered 200 that then \(kind) (a half-open connection)", injected: "1 dead watch",
                did:
                    "gave it up at the idle deadline (2 s here, 180 s by default) \(informer.idleResumeCount) time(s), resumed from resourceVersion \(watches.first ?? "?"), re-listed \(informer.listCount - 1) times",
                lost: "0 events (the object made meanwhile arrived)")
            run.cancel()
            await run.value
        }
    }

    /// A quiet but live watch (bookmarks only) is never taken for dead: it outlives its idle deadline twice over.
    /// (The deadline is long because the server shares its process with the whole suite: under that load its
    /// 100 ms bookmarks have arrived seconds apart.)
    @Test func aQuietWatchThatSendsBookmarksIsKept() async throws {
        var config = EmbeddedAPIServer.Configuration()
        config.bookmarkInterval = .milliseconds(100)
        try await TestCluster.with(configuration: config) { c in
            let idle = Duration.seconds(5)
            let informer = DynamicInformer(api: c.client.dynamic(meteorType), watchIdleTimeout: idle)
            let bookmarks = Observed<[ContinuousClock.Instant]>([])
            informer.onBookmark { _ in bookmarks.update { $0.append(.now) } }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            try await bookmarks.wait { times in times.count >= 2 && times.last! - times.first! > idle * 2 }
            #expect(informer.idleResumeCount == 0)
            #expect(informer.watchCount == 1)
            ReliabilityReport.row(
                "A quiet watch that sends bookmarks only", injected: "\(bookmarks.value.count) bookmarks over twice the idle deadline",
                did: "kept: \(informer.idleResumeCount) resumes, \(informer.watchCount) watch", lost: "—")
            run.cancel()
            await run.value
        }
    }

    /// A manager with its health probes on a free port (no metrics) that calls an informer stale after 1 s.
    static func probedManager() -> Manager.Options {
        var options = Manager.Options()
        options.metricsBindAddress = nil
        options.healthProbeBindAddress = "127.0.0.1:0"
        options.informerStaleAfter = .seconds(1)
        return options
    }

    /// `/readyz` says which informer has heard nothing for too long, and recovers when it hears again.
    @Test func readinessNamesAnInformerThatHasHeardNothing() async throws {
        try await TestCluster.with(configuration: Self.serverWithFrequentBookmarks()) { c in
            var options = Self.probedManager()
            options.watchIdleTimeout = .seconds(4)
            let manager = Manager(client: c.client, options: options)
            let meteors = manager.informer(for: meteorType)
            manager.add(Controller(name: "meteor", for: meteors, metricsFactory: manager.metricsFactory) { _ in .done })
            c.server.inject(InjectedFault(.silentWatch, verb: "watch", pathContains: "/meteors"))
            let group = ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            await manager.waitForServers()
            await meteors.waitForSync()
            let readyz = "http://127.0.0.1:\(manager.boundPorts.health!)/readyz"
            // Time is the fault here, so the test polls the probe as a kubelet would.
            let stale = try await Self.poll(readyz) { $0.0 == 503 }
            #expect(stale.1.hasPrefix("informer meteors.v1alpha1.meteor.zone has heard nothing from the API server for "), "\(stale.1)")
            let recovered = try await Self.poll(readyz) { $0.0 == 200 }
            #expect(recovered.1 == "ok")
            #expect(meteors.idleResumeCount >= 1)
            ReliabilityReport.row(
                "An informer that hears nothing from the API server", injected: "1 silent watch",
                did: "/readyz 503 \"\(stale.1)\", 200 again after \(meteors.idleResumeCount) resume(s)", lost: "—")
            await group.triggerGracefulShutdown()
            try await running.value
        }
    }

    static func poll(_ url: String, until condition: @escaping @Sendable ((Int, String)) -> Bool) async throws -> (Int, String) {
        try await within(.seconds(30), "\(url) to change") {
            while true {
                let answer = try await httpGet(url)
                if condition(answer) { return answer }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

/// The kubelet rotates a projected ServiceAccount token while the operator's watches are open (and the old one is
/// revoked, as when the account is re-created). The open stream is not broken for it (kube-apiserver checks a
/// token when a request starts), new requests carry the new token after at most one 401, and a watch that ends
/// afterwards is resumed from where it was with the new token, not re-listed.
@Suite struct TokenRotationTests {
    @Test func aRotatedTokenKeepsTheOpenWatchAndTheNextWatchResumesWithTheNewOne() async throws {
        try await TestCluster.with(token: "admin") { c in
            c.server.acceptTokens(["admin", "first"])
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sa-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let tokenFile = dir.appendingPathComponent("token")
            try "first".write(to: tokenFile, atomically: true, encoding: .utf8)
            var options = KubeClient.Options()
            options.userAgent = "rotation-under-test"
            let operatorClient = try KubeClient(
                configuration: ClusterConfiguration(server: URL(string: c.server.url)!, credentials: .tokenFile(tokenFile.path)), options: options)
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            let informer = DynamicInformer(api: operatorClient.dynamic(meteorType))
            let log = EventLog()
            await informer.addHandler { log.record($0) }
            let run = Task { await informer.run() }
            await informer.waitForSync()
            // Its watch is open (answered 200 with the first token) before the token rotates.
            await c.server.waitForRequest { $0.verb == "watch" && $0.userAgent == "rotation-under-test" && $0.code == 200 }

            try "second".write(to: tokenFile, atomically: true, encoding: .utf8)
            c.server.acceptTokens(["admin", "second"])
            _ = try await meteors.create(meteor("during"))
            try await log.wait { $0.contains("added default/during") }
            let mine = { c.server.requestLog.filter { $0.userAgent == "rotation-under-test" } }
            let watchesSoFar = mine().filter { $0.verb == "watch" }.count
            #expect(watchesSoFar == 1, "the open watch went on under the revoked token")

            // The stream ends (a server restart, a load balancer): the next watch meets the revoked token once,
            // re-reads the file and resumes from the last version it saw.
            c.server.cutWatches()
            _ = try await meteors.create(meteor("after"))
            try await log.wait { $0.contains("added default/after") }
            let codes = mine().filter { $0.verb == "watch" }.map(\.code)
            #expect(codes == [200, 401, 200], "one watch, one refused with the old token, one resumed with the new")
            #expect(informer.listCount == 1, "resumed, not re-listed")
            let versions = DeadWatchTests.meteorWatches(c.server)
            #expect(
                versions.count >= 3 && versions.last == versions[versions.count - 2] && versions.last != versions.first,
                "the new watch starts where the cut one had got to: \(versions)")
            // Writes carry the new token without a 401 (the credential was already re-read).
            _ = try await operatorClient.dynamic(meteorType, namespace: "default").create(meteor("written"))
            let creates = mine().filter { $0.verb == "create" }.map(\.code)
            #expect(creates == [201])
            ReliabilityReport.row(
                "The ServiceAccount token rotated and the old one revoked while a watch is open", injected: "1 rotation, then the stream cut",
                did:
                    "the open watch went on; watches answered \(codes.map(String.init).joined(separator: ", ")) (the 401 re-read the token file), resumed from the version it had reached, \(informer.listCount) list; the next write 201 with no 401",
                lost: "0 events", suite: "TokenRotationTests")
            run.cancel()
            await run.value
            try await operatorClient.shutdown()
        }
    }
}

/// The resource an informer watches goes away under it (its CRD deleted, as an uninstall or a botched upgrade
/// does) and comes back: no crash and no hot loop, `/readyz` names the informer while it cannot list, and once
/// the CRD is back the informer lists again (the Meteors that went with the CRD leave the cache; new ones arrive)
/// without a restart.
@Suite struct ResourceRemovedTests {
    @Test func anInformerWhoseCRDIsDeletedIsNotReadyAndRecoversWhenItReturns() async throws {
        try await TestCluster.with(configuration: DeadWatchTests.serverWithFrequentBookmarks()) { c in
            let manager = Manager(client: c.client, options: DeadWatchTests.probedManager())
            let meteors = manager.informer(for: meteorType)
            let log = EventLog()
            await meteors.addHandler { log.record($0) }
            let reconciled = Observed<Set<String>>([])
            manager.add(
                Controller(name: "meteor", for: meteors, metricsFactory: manager.metricsFactory) { key in
                    reconciled.update { _ = $0.insert(key.name) }
                    return .done
                })
            let group = ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            await manager.waitForServers()
            await meteors.waitForSync()
            let api = c.client.dynamic(meteorType, namespace: "default")
            _ = try await api.create(meteor("first"))
            try await reconciled.wait { $0.contains("first") }
            let readyz = "http://127.0.0.1:\(manager.boundPorts.health!)/readyz"

            let crds = c.client.dynamic(
                ResourceType(
                    group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions",
                    namespaced: false))
            let definition = try await crds.get("meteors.meteor.zone")
            try await crds.delete("meteors.meteor.zone")
            let gone = try await DeadWatchTests.poll(readyz) { $0.0 == 503 }
            #expect(gone.1.hasPrefix("informer meteors.v1alpha1.meteor.zone has heard nothing from the API server for "), "\(gone.1)")
            let listsWhileGone = meteors.listCount
            #expect(running.isCancelled == false)

            var again = definition
            again[path: "metadata"] = ["name": "meteors.meteor.zone"]
            again["status"] = nil
            _ = try await crds.create(again)
            _ = try await within(.seconds(30), "the Meteor API served again") {
                while true {
                    do { return try await api.create(meteor("second")) } catch let e as KubeError where e.code == 404 {
                        try await Task.sleep(for: .milliseconds(100))
                    }
                }
            }
            try await reconciled.wait { $0.contains("second") }
            try await log.wait { $0.contains("deleted default/first") }
            let back = try await DeadWatchTests.poll(readyz) { $0.0 == 200 }
            #expect(back.1 == "ok")
            // Re-listed with backoff while the resource was gone, not in a hot loop.
            #expect(meteors.listCount - listsWhileGone < 30, "\(meteors.listCount - listsWhileGone) lists")
            ReliabilityReport.row(
                "The Meteor CRD deleted while the informer watches, then installed again", injected: "1 CRD deletion",
                did:
                    "/readyz 503 naming the informer while it could not list; re-listed \(meteors.listCount - listsWhileGone) times with backoff; Ready again and new Meteors reconciled, no restart",
                lost: "0 (the deleted Meteors left the cache, new ones arrived)", suite: "ResourceRemovedTests")
            await group.triggerGracefulShutdown()
            try await running.value
        }
    }
}
