import AsyncHTTPClient
import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import ServiceLifecycle
import Testing

func httpGet(_ url: String) async throws -> (Int, String) {
    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 10 * 1024 * 1024)
    return (Int(response.status.code), String(buffer: body))
}

/// The value of one Prometheus sample line, e.g. `controller_runtime_reconcile_total{controller="m",result="success"}`.
func sample(_ text: String, _ name: String, _ labels: [String: String]) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
        let hasAll = labels.allSatisfy { line.contains("\($0.key)=\"\($0.value)\"") }
        if hasAll, let v = line.split(separator: " ").last.flatMap({ Double($0) }) { return v }
    }
    return nil
}

/// Whether the lease gets released. The release runs in its own task as the manager stops, so this waits for it
/// on a watch (a lease that is still held after the watch's minute is not being released).
func leaseReleased(_ c: TestCluster) async throws -> Bool {
    let leases = c.client.dynamic(Lease.resourceType, namespace: "default")
    let current = try await leases.get("meteor-operator")
    if current[path: "spec", "holderIdentity"] == nil { return true }
    for try await event in leases.watch(
        WatchOptions(
            resourceVersion: current[path: "metadata", "resourceVersion"]?.stringValue, fieldSelector: "metadata.name=meteor-operator",
            timeoutSeconds: 60))
    {
        if case .modified(let l) = event, l[path: "spec", "holderIdentity"] == nil { return true }
    }
    return false
}

@Suite struct ManagerTests {
    @Test func metricsReadinessAndGracefulShutdown() async throws {
        try await TestCluster.with { c in
            let metrics = RuntimeMetrics()
            var clientOptions = KubeClient.Options()
            clientOptions.metrics = metrics.clientHook
            let client = try KubeClient(configuration: TestCluster.clusterConfiguration(c.server), options: clientOptions)
            // Shut down on every path: a failure below must be reported as one, not end the process in the
            // client's deinit check.
            defer { Task { try? await client.shutdown() } }
            var options = Manager.Options()
            options.metricsBindAddress = "127.0.0.1:0"
            options.healthProbeBindAddress = "127.0.0.1:0"
            // A lease that outlasts any stall of this process: in the full suite this test has taken 113 s where
            // it takes 0.1 s alone, and with a 10 s renew deadline its leader lost the lease (and so never released
            // it). Releasing on shutdown, not expiry, is what this test is about.
            var election = electionConfig("manager-under-test")
            election.leaseDuration = .seconds(180)
            election.renewDeadline = .seconds(150)
            options.leaderElection = election
            let manager = Manager(client: client, options: options, metrics: metrics)
            let meteors = manager.informer(for: meteorType)
            let probe = ReconcileProbe()
            let controller = Controller(name: "meteor", for: meteors, metricsFactory: manager.metricsFactory) { key in
                probe.begin(key)
                probe.end(key)
                if key.name == "bad" { throw KubeError.transport("simulated") }
                return key.name == "later" ? .requeueAfter(.seconds(3600)) : .done
            }
            manager.add(controller)
            // Hold the first list back so /readyz is seen unready before the caches sync.
            c.server.inject(InjectedFault(.hold, verb: "list", pathContains: "/meteors"))

            let group = ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "test")))
            let running = Task { try await group.run() }
            await manager.waitForServers()
            let health = "http://127.0.0.1:\(manager.boundPorts.health!)"
            #expect(try await httpGet(health + "/healthz").0 == 200)
            #expect(try await httpGet(health + "/readyz").0 == 503)
            c.server.releaseHeldRequests()
            await meteors.waitForSync()
            #expect(try await httpGet(health + "/readyz").0 == 200)

            let api = c.client.dynamic(meteorType, namespace: "default")
            for name in ["a", "b", "later"] { _ = try await api.create(meteor(name)) }
            try await probe.wait {
                $0[ObjectKey(namespace: "default", name: "later")] == 1 && $0[ObjectKey(namespace: "default", name: "a")] == 1
                    && $0[ObjectKey(namespace: "default", name: "b")] == 1
            }
            _ = try await api.create(meteor("bad"))
            try await probe.wait { ($0[ObjectKey(namespace: "default", name: "bad")] ?? 0) >= 2 }

            let text = try await httpGet("http://127.0.0.1:\(manager.boundPorts.metrics!)/metrics").1
            #expect(sample(text, "controller_runtime_reconcile_total", ["controller": "meteor", "result": "success"]) == 2)
            #expect(sample(text, "controller_runtime_reconcile_total", ["controller": "meteor", "result": "requeue_after"]) == 1)
            #expect((sample(text, "controller_runtime_reconcile_total", ["controller": "meteor", "result": "error"]) ?? 0) >= 2)
            #expect((sample(text, "controller_runtime_reconcile_errors_total", ["controller": "meteor"]) ?? 0) >= 2)
            #expect(sample(text, "controller_runtime_max_concurrent_reconciles", ["controller": "meteor"]) == 2)
            #expect(sample(text, "controller_runtime_active_workers", ["controller": "meteor"]) != nil)
            #expect(sample(text, "controller_runtime_reconcile_time_seconds_count", ["controller": "meteor"]) != nil)
            #expect((sample(text, "workqueue_adds_total", ["name": "meteor"]) ?? 0) >= 4)
            #expect(sample(text, "workqueue_depth", ["name": "meteor"]) != nil)
            #expect((sample(text, "workqueue_retries_total", ["name": "meteor"]) ?? 0) >= 1)
            #expect(sample(text, "workqueue_queue_duration_seconds_count", ["name": "meteor"]) != nil)
            #expect(sample(text, "workqueue_work_duration_seconds_count", ["name": "meteor"]) != nil)
            #expect((sample(text, "rest_client_requests_total", ["code": "200", "method": "GET"]) ?? 0) >= 1)
            #expect(sample(text, "leader_election_master_status", ["name": "meteor-operator"]) == 1)

            // SIGTERM's path: graceful shutdown drains, stops and releases the lease.
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(try await leaseReleased(c), "the lease was not released")
        }
    }
}

@Suite struct TwoReplicaTests {
    @Test func onlyTheLeaderReconcilesAndTheFollowerTakesOver() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            _ = try await api.create(meteor("shared"))
            let key = ObjectKey(namespace: "default", name: "shared")
            let overlap = ReconcileProbe()
            let byReplica = [ReconcileProbe(), ReconcileProbe()]
            var managers: [Manager] = []
            var groups: [ServiceGroup] = []
            for i in 0..<2 {
                var options = Manager.Options()
                options.metricsBindAddress = nil
                options.healthProbeBindAddress = "127.0.0.1:0"
                options.leaderElection = electionConfig("replica-\(i)")
                let manager = Manager(client: c.client, options: options)
                let probe = byReplica[i]
                let controller = Controller(name: "meteor", for: manager.informer(for: meteorType)) { k in
                    overlap.begin(k)
                    probe.begin(k)
                    try? await Task.sleep(for: .milliseconds(1))
                    probe.end(k)
                    overlap.end(k)
                    return .done
                }
                manager.add(controller)
                managers.append(manager)
                groups.append(ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "replica-\(i)"))))
            }
            let (leaderGroup, followerGroup) = (groups[0], groups[1])
            let follower = managers[1]
            let first = Task { try await leaderGroup.run() }
            try await byReplica[0].wait { $0[key] == 1 }
            let second = Task { try await followerGroup.run() }
            await follower.waitForServers()
            // The follower is live (and its caches fill) but does not reconcile.
            #expect(try await httpGet("http://127.0.0.1:\(follower.boundPorts.health!)/healthz").0 == 200)
            _ = try await api.patch("shared", .merge(["spec": ["ref": "v2"]]))
            try await byReplica[0].wait { $0[key] == 2 }
            #expect(byReplica[1].calls(key) == 0)

            await leaderGroup.triggerGracefulShutdown()
            try await first.value
            // Started fresh as leader, the follower reconciles what is there.
            try await byReplica[1].wait { $0[key] == 1 }
            #expect(overlap.overlaps == 0)
            await followerGroup.triggerGracefulShutdown()
            try await second.value
        }
    }
}

@Suite struct ShutdownTests {
    /// A follower told to stop stops at once, though its lease request hangs on an API server that never
    /// answers (one that has gone away). It used to campaign on after SIGTERM: CI found operator processes
    /// outliving their tests by minutes.
    @Test func aFollowerStopsAtOnceThoughItsLeaseRequestNeverReturns() async throws {
        try await TestCluster.with { c in
            let now = KubeTime.formatMicro(Date())
            let held = Lease.Spec(holderIdentity: "elsewhere", leaseDurationSeconds: 3600, acquireTime: now, renewTime: now, leaseTransitions: 0)
            _ = try await c.client.api(Lease.self, namespace: "default").create(
                Lease(metadata: ObjectMeta(name: "meteor-operator", namespace: "default"), spec: held))
            var options = Manager.Options()
            options.metricsBindAddress = nil
            options.healthProbeBindAddress = nil
            options.leaderElection = electionConfig("follower")
            let manager = Manager(client: c.client, options: options)
            let reconciles = Observed(0)
            manager.add(
                Controller(name: "follower", for: manager.informer(for: meteorType)) { _ in
                    reconciles.update { $0 += 1 }
                    return .done
                })
            let group = ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "follower")))
            let stopped = Observed(false)
            let running = Task {
                defer { stopped.update { $0 = true } }
                try await group.run()
            }
            // Its first attempt saw the lease taken; the next one the server holds without answering.
            await c.server.waitForRequest { $0.path.hasSuffix("/leases/meteor-operator") }
            c.server.inject(InjectedFault(.hold, verb: "get", pathContains: "/leases/", count: 1000))
            await c.server.waitForHeldRequest()
            await group.triggerGracefulShutdown()
            do {
                try await stopped.wait(timeout: .seconds(10)) { $0 }
            } catch {
                running.cancel()
                throw error
            }
            #expect(reconciles.value == 0)
            ReliabilityReport.row(
                "SIGTERM to a follower whose lease request the server holds unanswered", injected: "1 held GET",
                did: "stopped within 10 s, never reconciled (\(reconciles.value) reconciles), the lease untouched", lost: "—")
            c.server.clearFaults()
            c.server.releaseHeldRequests()
            #expect(try await c.client.api(Lease.self, namespace: "default").get("meteor-operator").spec?.holderIdentity == "elsewhere")
        }
    }

    @Test func gracefulShutdownDrainsInFlightReconciles() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("slow"))
            var options = Manager.Options()
            options.metricsBindAddress = nil
            options.healthProbeBindAddress = nil
            options.leaderElection = electionConfig("drainer")
            let manager = Manager(client: c.client, options: options)
            let inFlight = Observed<String>("idle")
            let gate = AsyncStream<Void>.makeStream()
            let controller = Controller(name: "slow", for: manager.informer(for: meteorType)) { _ in
                inFlight.update { $0 = "running" }
                for await _ in gate.stream { break }
                // Still allowed to talk to the API server: the reconcile was not cancelled.
                let cancelled = Task.isCancelled
                _ = try await c.client.dynamic(meteorType, namespace: "default").patchStatus("slow", .merge(["status": ["phase": "Building"]]))
                inFlight.update { $0 = cancelled ? "cancelled" : "finished" }
                return .done
            }
            manager.add(controller)
            let group = ServiceGroup(configuration: .init(services: [manager], logger: Logger(label: "drain")))
            let running = Task { try await group.run() }
            try await inFlight.wait { $0 == "running" }
            await group.triggerGracefulShutdown()
            // The manager waits for the reconcile; let it finish now.
            #expect(inFlight.value == "running")
            gate.continuation.yield()
            try await running.value
            #expect(inFlight.value == "finished")
            #expect(try await c.client.dynamic(meteorType, namespace: "default").get("slow")[path: "status", "phase"] == "Building")
            #expect(try await leaseReleased(c), "the lease was not released")
        }
    }
}
