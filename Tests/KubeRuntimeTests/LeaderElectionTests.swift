import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Synchronization
import Testing

/// Tracks who leads: overlapping leaders would show as `maxConcurrent > 1`.
final class Leadership: Sendable {
    struct State: Sendable {
        var current = Set<String>()
        var maxConcurrent = 0
        var history: [String] = []
    }

    let state = Observed(State())

    func lead(_ who: String) async {
        state.update { s in
            s.current.insert(who)
            s.maxConcurrent = max(s.maxConcurrent, s.current.count)
            s.history.append("+\(who)")
        }
        // Lead until cancelled.
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        state.update { s in
            s.current.remove(who)
            s.history.append("-\(who)")
        }
    }

    func wait(sourceLocation: String = #fileID, line: Int = #line, until condition: @escaping @Sendable ([String]) -> Bool) async throws {
        try await state.wait(sourceLocation: sourceLocation, line: line) { condition($0.history) }
    }

    var maxConcurrent: Int { state.value.maxConcurrent }
    var history: [String] { state.value.history }
}

/// Production-like timings (controller-runtime's 15 s / 10 s): a loaded CI machine can stall a renewal for
/// seconds, and a test that is not about expiry must not lose its lease to that.
func electionConfig(_ id: String, namespace: String = "default") -> LeaderElector.Configuration {
    LeaderElector.Configuration(
        leaseName: "meteor-operator", namespace: namespace, identity: id, leaseDuration: .seconds(15), renewDeadline: .seconds(10),
        retryPeriod: .milliseconds(200))
}

/// A short lease, for the test that waits for one to expire. The 1.5 s between renew deadline and lease duration is
/// what keeps two leaders apart while the old one notices it lost; on a loaded 2-core CI machine with a real
/// kube-apiserver beside the tests, 0.5 s was once not enough (the follower led before the old leader stopped).
func expiringElectionConfig(_ id: String, namespace: String = "default") -> LeaderElector.Configuration {
    LeaderElector.Configuration(
        leaseName: "meteor-operator", namespace: namespace, identity: id, leaseDuration: .seconds(3), renewDeadline: .milliseconds(1500),
        retryPeriod: .milliseconds(200))
}

@Suite struct LeaderElectionTests {
    @Test(arguments: Backend.testable) func gracefulStopHandsOverAtOnce(_ backend: Backend) async throws {
        try await TestCluster.on(backend, crds: [], namespacePrefix: "lease").run { c in
            let leadership = Leadership()
            // A long lease: taking over by expiry would need 30 s, taking over a released lease one retry period.
            func longLease(_ id: String) -> LeaderElector.Configuration {
                LeaderElector.Configuration(
                    leaseName: "meteor-operator", namespace: c.namespace, identity: id, leaseDuration: .seconds(30), renewDeadline: .seconds(20),
                    retryPeriod: .milliseconds(200))
            }
            let a = LeaderElector(client: c.client, configuration: longLease("a"))
            let b = LeaderElector(client: c.client, configuration: longLease("b"))
            let ta = Task { await a.run { await leadership.lead("a") } }
            try await leadership.wait { $0.contains("+a") }
            let tb = Task { await b.run { await leadership.lead("b") } }
            #expect(!b.isLeader)
            let stoppedAt = ContinuousClock.now
            ta.cancel()
            #expect(await ta.value == .cancelled)
            // Released on the way out (the follower may already have taken it by now).
            #expect(try await c.client.api(Lease.self, namespace: c.namespace).get("meteor-operator").spec?.holderIdentity != "a")
            try await leadership.wait { $0.contains("+b") }
            // Released, not expired: the follower needs only its retry period, not the 30 s lease duration.
            #expect(ContinuousClock.now - stoppedAt < .seconds(15))
            #expect(leadership.maxConcurrent == 1)
            let lease = try await c.client.api(Lease.self, namespace: c.namespace).get("meteor-operator")
            #expect(lease.spec?.holderIdentity == "b")
            #expect(lease.spec?.leaseTransitions == 1)
            tb.cancel()
            _ = await tb.value
        }
    }

    @Test(arguments: Backend.testable) func killedLeaderIsReplacedAfterTheLeaseExpiresNeverBefore(_ backend: Backend) async throws {
        try await TestCluster.on(backend, crds: [], namespacePrefix: "lease").run { c in
            let leadership = Leadership()
            // The doomed leader talks through its own client; shutting that down is a kill: no renewals, no release.
            let doomedClient = try c.newClient()
            let a = LeaderElector(client: doomedClient, configuration: expiringElectionConfig("a", namespace: c.namespace))
            let b = LeaderElector(client: c.client, configuration: expiringElectionConfig("b", namespace: c.namespace))
            let ta = Task { await a.run { await leadership.lead("a") } }
            try await leadership.wait { $0.contains("+a") }
            let tb = Task { await b.run { await leadership.lead("b") } }
            let killedAt = ContinuousClock.now
            try await doomedClient.shutdown()
            // The old leader stops itself after renewDeadline, before the lease can expire for b.
            #expect(await ta.value == .lostLease)
            try await leadership.wait { $0.contains("+b") }
            let takeover = ContinuousClock.now - killedAt
            // Never before the lease could expire; soon after it does (generous: the machine may be loaded).
            #expect(takeover >= .milliseconds(2800))
            #expect(takeover < .seconds(12))
            let history = leadership.history
            #expect(history.firstIndex(of: "-a")! < history.firstIndex(of: "+b")!)
            #expect(leadership.maxConcurrent == 1)
            tb.cancel()
            _ = await tb.value
        }
    }

    /// A leader whose clock is an hour behind writes renewTimes an hour old; a follower that compared them with its
    /// own clock would take the lease at once and two would lead. Ours judges expiry by when it saw the record
    /// change (its monotonic clock, as client-go does): it waits while the renewals go on, however old their
    /// stamps, and takes over one lease duration after they stop.
    @Test(arguments: Backend.testable) func aLeaderWhoseClockIsBehindKeepsItsLeaseWhileItRenews(_ backend: Backend) async throws {
        try await TestCluster.on(backend, crds: [], namespacePrefix: "lease").run { c in
            let leases = c.client.api(Lease.self, namespace: c.namespace)
            let config = expiringElectionConfig("follower", namespace: c.namespace)
            func stamp() -> String { KubeTime.formatMicro(Date().addingTimeInterval(-3600)) }
            _ = try await leases.create(
                Lease(
                    metadata: ObjectMeta(name: config.leaseName, namespace: c.namespace),
                    spec: Lease.Spec(
                        holderIdentity: "slow-clock", leaseDurationSeconds: 3, acquireTime: stamp(), renewTime: stamp(), leaseTransitions: 0)))
            let leadership = Leadership()
            let follower = LeaderElector(client: c.client, configuration: config)
            let following = Task { await follower.run { await leadership.lead("follower") } }
            // The slow-clock leader renews every 500 ms for three lease durations.
            var renewals = 0
            let renewing = ContinuousClock.now
            while ContinuousClock.now - renewing < config.leaseDuration * 3 {
                var lease = try await leases.get(config.leaseName)
                lease.spec?.renewTime = stamp()
                _ = try await leases.replace(lease)
                renewals += 1
                try await Task.sleep(for: .milliseconds(500))
                #expect(!follower.isLeader, "the follower took a lease that was being renewed")
            }
            let stopped = ContinuousClock.now
            try await leadership.wait { $0.contains("+follower") }
            let takeover = ContinuousClock.now - stopped
            #expect(takeover >= .milliseconds(2500) && takeover < .seconds(12), "took over \(takeover) after the renewals stopped")
            ReliabilityReport.row(
                "A leader whose clock is an hour behind (its renewTimes an hour old)", injected: "\(renewals) renewals stamped −3600 s",
                did: "the follower waited while they went on and took over \(ReliabilityReport.seconds(takeover)) after they stopped (lease 3 s)",
                lost: "0; two leaders: 0", backend: backend)
            following.cancel()
            _ = await following.value
        }
    }

    /// A leader whose renewals stall (the server holds them) stops writing at its renew deadline, before the lease
    /// can pass to anyone: its work is cancelled, and what its work started that outlives cancellation (here a
    /// fire-and-forget `Task {}` writing ConfigMaps) has each write refused before it is sent (`KubeError.fenced`).
    /// The same fence makes a leader woken from SIGSTOP past its lease write nothing
    /// (`ProcessFaultTests.aPausedLeaderThatWakesAfterItsLeaseWasTakenWritesNothing`). Before the fence: the stray
    /// task's creates went on reaching the server after the leader had lost its lease.
    @Test func aLeaderPastItsRenewDeadlineSendsNoWriteEvenFromWorkThatOutlivesItsCancellation() async throws {
        try await TestCluster.with(crds: []) { c in
            var options = KubeClient.Options()
            options.userAgent = "stalled-leader"
            let leaderClient = try c.newClient(options: options)
            defer { Task { try? await leaderClient.shutdown() } }
            let config = expiringElectionConfig("stalled")
            let elector = LeaderElector(client: leaderClient, configuration: config)
            let attempts = Observed<[(at: ContinuousClock.Instant, sent: Bool)]>([])
            let done = Observed(false)
            let configMaps = leaderClient.api(ConfigMap.self, namespace: "default")
            let stray = Mutex<Task<Void, Never>?>(nil)
            let leading = Task {
                await elector.run {
                    // Unstructured: cancelling the leader's work does not cancel it (it inherits the fence).
                    stray.withLock {
                        $0 = Task {
                            var i = 0
                            while !done.value {
                                let at = ContinuousClock.now
                                do {
                                    _ = try await configMaps.create(ConfigMap(metadata: ObjectMeta(name: "stray-\(i)")))
                                    attempts.update { $0.append((at, true)) }
                                } catch let e as KubeError where e.isFenced {
                                    attempts.update { $0.append((at, false)) }
                                } catch {
                                    attempts.update { $0.append((at, true)) }
                                }
                                i += 1
                                try? await Task.sleep(for: .milliseconds(50))
                            }
                        }
                    }
                    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                }
            }
            try await attempts.wait { $0.filter(\.sent).count >= 3 }
            let stalled = ContinuousClock.now
            c.server.inject(InjectedFault(.hold, pathContains: "/leases/", userAgentContains: "stalled-leader", count: 1000))
            #expect(await leading.value == .lostLease)
            let lost = ContinuousClock.now
            let lostWall = Date()
            try await attempts.wait { $0.filter { $0.at > lost }.count >= 5 }
            done.update { $0 = true }
            await stray.withLock { $0 }?.value
            c.server.releaseHeldRequests()
            let all = attempts.value
            // No write once the deadline had passed, whenever the renew loop got round to noticing.
            let sentLate = all.filter { $0.sent && $0.at >= stalled + config.renewDeadline }.count
            let refused = all.filter { !$0.sent }.count
            #expect(sentLate == 0, "\(sentLate) writes sent after the renew deadline")
            #expect(refused >= 5)
            let reachedServer = c.server.requestLog.filter { $0.userAgent == "stalled-leader" && $0.method == "POST" && $0.time > lostWall }.count
            #expect(reachedServer == 0, "\(reachedServer) creates reached the server after the leader lost its lease")
            #expect(lost - stalled < config.leaseDuration, "stopped leading \(lost - stalled) after its renewals stalled")
            ReliabilityReport.row(
                "The leader's renewals held by the server, its work leaving a task that ignores cancellation",
                injected: "renew deadline 1.5 s, \(all.count) writes attempted",
                did:
                    "stopped leading \(ReliabilityReport.seconds(lost - stalled)) after the stall; \(refused) writes refused before sending (KubeError.fenced)",
                lost: "0; writes sent after the deadline: \(sentLate), reaching the server after the lease was lost: \(reachedServer)")
        }
    }
}

@Suite struct HelperTests {
    /// Cut to a byte limit on a character boundary, the marker inside the limit; the same long message set twice
    /// is no change (the cut is stable, so a steady state writes nothing).
    @Test func longMessagesAreCutToTheirLimitOnCharacterBoundaries() {
        for text in [String(repeating: "é", count: 40_000), String(repeating: "👩‍🚀", count: 9_000), String(repeating: "a", count: 32_769)] {
            let cut = ObjectHelpers.truncated(text, maxBytes: Condition.maxMessageBytes)
            #expect(
                cut.utf8.count <= Condition.maxMessageBytes && cut.utf8.count > Condition.maxMessageBytes - 32
                    && cut.hasSuffix(ObjectHelpers.truncationMarker))
            #expect(text.hasPrefix(String(cut.dropLast(ObjectHelpers.truncationMarker.count))))
            var conditions: [Condition] = []
            let t = Date(timeIntervalSince1970: 0)
            #expect(
                ObjectHelpers.setCondition(&conditions, Condition(type: "Ready", status: .false, lastTransitionTime: t, reason: "R", message: text)))
            #expect(conditions[0].message == cut)
            #expect(
                !ObjectHelpers.setCondition(&conditions, Condition(type: "Ready", status: .false, lastTransitionTime: t, reason: "R", message: text)))
        }
        #expect(ObjectHelpers.truncated("short", maxBytes: 10) == "short")
    }

    @Test func conditionsKeepTransitionTimeUnlessStatusChanges() {
        var conditions: [Condition] = []
        let t0 = Date(timeIntervalSince1970: 1000)
        #expect(
            ObjectHelpers.setCondition(
                &conditions, Condition(type: "Ready", status: .false, observedGeneration: 1, lastTransitionTime: t0, reason: "Building", message: "a")
            ))
        #expect(
            !ObjectHelpers.setCondition(
                &conditions,
                Condition(
                    type: "Ready", status: .false, observedGeneration: 1, lastTransitionTime: Date(timeIntervalSince1970: 2000), reason: "Building",
                    message: "a")))
        #expect(
            ObjectHelpers.setCondition(
                &conditions,
                Condition(
                    type: "Ready", status: .false, observedGeneration: 2, lastTransitionTime: Date(timeIntervalSince1970: 3000), reason: "Building",
                    message: "b")))
        #expect(conditions[0].lastTransitionTime == t0)
        #expect(conditions[0].observedGeneration == 2)
        let t4 = Date(timeIntervalSince1970: 4000)
        #expect(
            ObjectHelpers.setCondition(
                &conditions, Condition(type: "Ready", status: .true, observedGeneration: 2, lastTransitionTime: t4, reason: "Done", message: "c")))
        #expect(conditions[0].lastTransitionTime == t4)
        #expect(conditions.count == 1)
    }

    /// A remembered write is forgotten as soon as the informer shows it, without waiting for a read or the TTL.
    @Test func ownWritesAreForgottenWhenTheCacheCatchesUp() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            let informer = DynamicInformer(api: api)
            let recent = RecentWrites()
            await recent.track(informer)
            let seen = Observed<Set<String>>([])
            await informer.addHandler { e in seen.update { _ = $0.insert(e.object[path: "metadata", "resourceVersion"]?.stringValue ?? "") } }
            let running = Task { await informer.run() }
            defer { running.cancel() }
            await informer.waitForSync()
            let created = try await api.create(meteor("mine"))
            recent.record(created)
            let patched = try await api.patch("mine", .merge(["metadata": ["labels": ["a": "b"]]]))
            recent.record(patched)
            let rv = try #require(patched[path: "metadata", "resourceVersion"]?.stringValue)
            // Each handler has its own queue: once the cache shows the patch, every handler has it or will.
            try await seen.wait { $0.contains(rv) }
            await informer.handlersIdle()
            #expect(recent.count == 0)
        }
    }

    /// An own write is remembered in the form its informer caches (here without managedFields and without a
    /// field the transform drops), not as the whole object the server answered.
    @Test func ownWritesAreRememberedInTheCachesForm() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            let informer = DynamicInformer(
                api: api,
                transform: CacheTransform("noSpec") { o in
                    var v = CacheTransform.dropManagedFieldsFunction(o)
                    v["spec"] = nil
                    return v
                })
            let recent = RecentWrites()
            await recent.track(informer)
            // Not run: the cache never catches up, so the read is the remembered write.
            var m = meteor("kept")
            m["spec"] = ["url": "https://example.com/big", "ref": "main"]
            let created = try await api.create(m)
            #expect(created["spec"] != nil)
            recent.record(created)
            let remembered = try #require(recent.read(ObjectKey(namespace: "default", name: "kept"), kind: "Meteor", from: informer))
            #expect(remembered["spec"] == nil)
            #expect(remembered[path: "metadata", "managedFields"] == nil)
            #expect(remembered[path: "metadata", "resourceVersion"] == created[path: "metadata", "resourceVersion"])
        }
    }

    @Test func cachedObjectsLeaveOutManagedFieldsAndKubectlsCopy() {
        let applied: JSONValue = [
            "metadata": [
                "name": "m", "managedFields": [["manager": "kubectl"]],
                "annotations": ["kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}", "meteor.zone/submitted-by": "alice"],
            ], "spec": ["url": "u"],
        ]
        let cached = CacheTransform.dropManagedFieldsFunction(applied)
        #expect(cached[path: "metadata", "managedFields"] == nil)
        #expect(cached[path: "metadata", "annotations"] == ["meteor.zone/submitted-by": "alice"])
        #expect(cached["spec"] == applied["spec"])
        var onlyKubectl = applied
        onlyKubectl[path: "metadata", "annotations"] = ["kubectl.kubernetes.io/last-applied-configuration": "{}"]
        #expect(CacheTransform.dropManagedFieldsFunction(onlyKubectl)[path: "metadata", "annotations"] == nil)
    }

    @Test func desiredFieldsAreComparedIgnoringWhatOthersAdd() {
        let desired: JSONValue = [
            "replicas": 1, "containers": [["name": "book", "image": "a@sha256:1", "ports": [["containerPort": 8080]]]], "paused": .null,
        ]
        let defaulted: JSONValue = [
            "replicas": 1.0, "revisionHistoryLimit": 10,
            "containers": [
                ["name": "book", "image": "a@sha256:1", "imagePullPolicy": "IfNotPresent", "ports": [["containerPort": 8080, "protocol": "TCP"]]]
            ],
        ]
        #expect(ObjectHelpers.satisfies(defaulted, desired))
        var otherImage = defaulted
        otherImage[path: "containers"] = [["name": "book", "image": "b", "ports": [["containerPort": 8080]]]]
        #expect(!ObjectHelpers.satisfies(otherImage, desired))
        var extraContainer = defaulted
        extraContainer[path: "containers"] = .array((defaulted["containers"]?.arrayValue ?? []) + [["name": "sidecar"]])
        #expect(!ObjectHelpers.satisfies(extraContainer, desired), "lists must match in length")
        var paused = defaulted
        paused["paused"] = true
        #expect(!ObjectHelpers.satisfies(paused, desired), "null in desired means absent")
        #expect(!ObjectHelpers.satisfies(nil, desired))
    }

    @Test func finalizersOwnerReferencesAndStatusWritesOnlyWhenChanged() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            let m = try await api.create(meteor("h"))
            let withFinalizer = try await ObjectHelpers.addFinalizer("meteor.zone/cleanup", to: m, api: api)
            #expect(ObjectHelpers.hasFinalizer(withFinalizer, "meteor.zone/cleanup"))
            c.server.clearRequestLog()
            _ = try await ObjectHelpers.addFinalizer("meteor.zone/cleanup", to: withFinalizer, api: api)
            #expect(c.server.requestLog.isEmpty)
            // A decision made on a stale version is refused, not applied over someone else's change.
            await #expect { try await ObjectHelpers.addFinalizer("other", to: m, api: api) } throws: { ($0 as? KubeError)?.isConflict == true }

            let updated = try await ObjectHelpers.patchStatusIfChanged(withFinalizer, status: ["phase": "Building"], api: api)
            #expect(updated?[path: "status", "phase"] == "Building")
            c.server.clearRequestLog()
            #expect(try await ObjectHelpers.patchStatusIfChanged(updated!, status: ["phase": "Building"], api: api) == nil)
            #expect(c.server.requestLog.isEmpty)

            let ref = ObjectHelpers.controllerReference(to: updated!)!
            #expect(ref["controller"] == true && ref["blockOwnerDeletion"] == true && ref["uid"] == m[path: "metadata", "uid"])

            try await api.delete("h")
            let current = try await api.get("h")
            let removed = try await ObjectHelpers.removeFinalizer("meteor.zone/cleanup", from: current, api: api)
            #expect(removed.map { ObjectHelpers.hasFinalizer($0, "meteor.zone/cleanup") } == false)
            await #expect { _ = try await api.get("h") } throws: { ($0 as? KubeError)?.isNotFound == true }
        }
    }

    @Test func repeatedEventsAreAggregated() async throws {
        try await TestCluster.with { c in
            let m = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("ev"))
            let recorder = EventRecorder(client: c.client, component: "meteor-operator", host: "test")
            for _ in 0..<5 { await recorder.record(m, type: .warning, reason: "InvalidSpec", message: "spec.url: bad") }
            await recorder.record(m, type: .normal, reason: "Created", message: "PipelineRun created")
            let events = try await c.client.api(Event.self, namespace: "default").list().items
            #expect(events.count == 2)
            let warning = try #require(events.first { $0.reason == "InvalidSpec" })
            #expect(warning.count == 5)
            #expect(warning.type == "Warning")
            #expect(warning.involvedObject.uid == m[path: "metadata", "uid"]?.stringValue)
            #expect(warning.source?.component == "meteor-operator")
        }
    }

    /// Only the least recently used event is forgotten when the memory is full; a forgotten one starts anew.
    @Test func theLeastRecentlyUsedEventIsForgotten() async throws {
        try await TestCluster.with { c in
            let m = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("lru"))
            let recorder = EventRecorder(client: c.client, component: "meteor-operator", host: "test", cacheLimit: 2)
            for reason in ["A", "B", "A", "C", "A", "B"] { await recorder.record(m, type: .normal, reason: reason, message: "m") }
            let events = try await c.client.api(Event.self, namespace: "default").list().items
            let byReason = Dictionary(grouping: events, by: { $0.reason ?? "" })
            // A stayed in memory (used before C evicted the least recent, B): one event, counted 3 times.
            #expect(byReason["A"]?.count == 1 && byReason["A"]?.first?.count == 3)
            #expect(byReason["C"]?.count == 1)
            // B was forgotten when C came, so it was created again rather than counted.
            #expect(byReason["B"]?.count == 2 && byReason["B"]?.allSatisfy { $0.count == 1 } == true)
        }
    }
}
