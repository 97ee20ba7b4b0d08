import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Synchronization
import Testing

let pipelineRunType = ResourceType(group: "tekton.dev", version: "v1", kind: "PipelineRun", plural: "pipelineruns", namespaced: true)

/// Counts reconciles per key, flags overlapping ones, and lets tests wait for a count.
final class ReconcileProbe: Sendable {
    struct State: Sendable {
        var calls: [ObjectKey: Int] = [:]
        var inFlight = Set<ObjectKey>()
        var overlaps = 0
    }

    let state = Observed(State())

    func begin(_ key: ObjectKey) {
        state.update { s in
            if !s.inFlight.insert(key).inserted { s.overlaps += 1 }
        }
    }

    func end(_ key: ObjectKey) {
        state.update { s in
            s.inFlight.remove(key)
            s.calls[key, default: 0] += 1
        }
    }

    func calls(_ key: ObjectKey) -> Int { state.value.calls[key, default: 0] }
    var overlaps: Int { state.value.overlaps }

    func wait(sourceLocation: String = #fileID, line: Int = #line, until condition: @escaping @Sendable ([ObjectKey: Int]) -> Bool) async throws {
        try await state.wait(sourceLocation: sourceLocation, line: line) { condition($0.calls) }
    }
}

func run<K: CachedResource>(_ controller: Controller<K>, informers: [any RunnableInformer]) -> Task<Void, Never> {
    Task {
        await withTaskGroup(of: Void.self) { group in
            for i in informers { group.addTask { await i.run() } }
            group.addTask { await controller.run() }
        }
    }
}

@Suite struct ControllerTests {
    @Test func ownedTektonPipelineRunsEnqueueTheirMeteor() async throws {
        try await TestCluster.with(crds: ["crds/reference/meteor.zone_meteors.yaml", "crds/tekton/300-pipelinerun.yaml"]) { c in
            let owner = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("owner"))
            let ownerKey = ObjectKey(namespace: "default", name: "owner")
            let probe = ReconcileProbe()
            let meteors = DynamicInformer(api: c.client.dynamic(meteorType))
            let runs = DynamicInformer(api: c.client.dynamic(pipelineRunType))
            let controller = Controller(name: "meteor", for: meteors) { key in
                probe.begin(key)
                probe.end(key)
                return .done
            }
            await controller.enqueuePrimaryChanges()
            await controller.owns(runs)
            let task = run(controller, informers: [meteors, runs])
            try await probe.wait { $0[ownerKey] == 1 }

            let prs = c.client.dynamic(pipelineRunType, namespace: "default")
            _ = try await prs.create([
                "metadata": [
                    "name": "owner-book",
                    "ownerReferences": [
                        [
                            "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "name": "owner", "uid": owner[path: "metadata", "uid"]!,
                            "controller": true, "blockOwnerDeletion": true,
                        ]
                    ],
                ],
                "spec": ["pipelineRef": ["name": "meteor-jupyterbook"]],
            ])
            try await probe.wait { $0[ownerKey] == 2 }
            _ = try await prs.patchStatus(
                "owner-book", .merge(["status": ["conditions": [["type": "Succeeded", "status": "True", "reason": "Succeeded"]]]]))
            try await probe.wait { $0[ownerKey] == 3 }
            // A PipelineRun without a controller reference to a Meteor enqueues nothing.
            _ = try await prs.create(["metadata": ["name": "stray"], "spec": ["pipelineRef": ["name": "x"]]])
            _ = try await prs.patch("stray", .merge(["metadata": ["labels": ["a": "b"]]]))
            #expect(probe.calls(ObjectKey(namespace: "default", name: "stray")) == 0)
            task.cancel()
            await task.value
        }
    }

    @Test func aKeyIsNeverReconciledConcurrently() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            for i in 0..<4 { _ = try await api.create(meteor("k\(i)")) }
            let probe = ReconcileProbe()
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            var options = ControllerOptions()
            options.workers = 4
            let controller = Controller(name: "concurrency", for: informer, options: options) { key in
                probe.begin(key)
                await Task.yield()
                try await Task.sleep(for: .milliseconds(2))
                probe.end(key)
                return .done
            }
            await controller.enqueuePrimaryChanges()
            let task = run(controller, informers: [informer])
            // Many rapid changes to the same four keys while workers are busy with them.
            for round in 0..<15 {
                for i in 0..<4 { _ = try await api.patch("k\(i)", .merge(["metadata": ["labels": ["round": .string("\(round)")]]])) }
            }
            let last = ["k0", "k1", "k2", "k3"].map { ObjectKey(namespace: "default", name: $0) }
            // Every key ends up reconciled after its last change (the queue re-adds keys changed mid-reconcile).
            await informer.waitForSync()
            try await probe.wait { calls in last.allSatisfy { (calls[$0] ?? 0) >= 2 } }
            task.cancel()
            await task.value
            #expect(probe.overlaps == 0)
        }
    }

    @Test func failedReconcilesAreRetriedThenForgotten() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("flaky"))
            let probe = ReconcileProbe()
            let outcomes = Observed<[Bool]>([])
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            var options = ControllerOptions()
            // Called once the worker has handled the result (the queue forgot or re-added the key).
            options.onReconciled = { _, succeeded in outcomes.update { $0.append(succeeded) } }
            let controller = Controller(name: "retry", for: informer, options: options) { key in
                probe.begin(key)
                probe.end(key)
                if probe.calls(key) < 3 { throw KubeError.transport("simulated failure") }
                return .done
            }
            await controller.enqueuePrimaryChanges()
            let task = run(controller, informers: [informer])
            let key = ObjectKey(namespace: "default", name: "flaky")
            try await outcomes.wait { $0.contains(true) }
            #expect(outcomes.value == [false, false, true])
            #expect(await controller.queue.retries(key) == 0)
            task.cancel()
            await task.value
        }
    }

    @Test func generationFilterIgnoresStatusOnlyWrites() async throws {
        try await TestCluster.with { c in
            let api = c.client.dynamic(meteorType, namespace: "default")
            _ = try await api.create(meteor("gen"))
            let probe = ReconcileProbe()
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            let seen = EventLog()
            await informer.addHandler { seen.record($0) }
            var options = ControllerOptions()
            options.generationChangedOnly = true
            let controller = Controller(name: "generation", for: informer, options: options) { key in
                probe.begin(key)
                probe.end(key)
                return .done
            }
            await controller.enqueuePrimaryChanges()
            let task = run(controller, informers: [informer])
            let key = ObjectKey(namespace: "default", name: "gen")
            try await probe.wait { $0[key] == 1 }
            _ = try await api.patchStatus("gen", .merge(["status": ["phase": "Building"]]))
            _ = try await api.patch("gen", .merge(["metadata": ["labels": ["x": "y"]]]))
            // Both updates reached the informer; neither reached the reconciler.
            try await seen.wait { $0.filter { $0 == "updated default/gen" }.count == 2 }
            _ = try await api.patch("gen", .merge(["spec": ["ref": "v2"]]))
            try await probe.wait { $0[key] == 2 }
            task.cancel()
            await task.value
            #expect(probe.calls(key) == 2)
        }
    }

    @Test func requeueAfterRunsAgainWhenTheClockSaysSo() async throws {
        try await TestCluster.with { c in
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("ttl"))
            let probe = ReconcileProbe()
            let clock = ManualClock()
            let informer = DynamicInformer(api: c.client.dynamic(meteorType))
            var options = ControllerOptions()
            options.clock = clock
            let controller = Controller(name: "requeue", for: informer, options: options) { key in
                probe.begin(key)
                probe.end(key)
                return .requeueAfter(.seconds(3600))
            }
            await controller.enqueuePrimaryChanges()
            let task = run(controller, informers: [informer])
            let key = ObjectKey(namespace: "default", name: "ttl")
            try await probe.wait { $0[key] == 1 }
            for _ in 0..<1_000_000 where clock.sleeperCount == 0 { await Task.yield() }
            clock.advance(by: .seconds(3599))
            #expect(clock.sleeperCount == 1, "the requeue must still be waiting one second before its deadline")
            #expect(probe.calls(key) == 1)
            clock.advance(by: .seconds(1))
            try await probe.wait { $0[key] == 2 }
            task.cancel()
            await task.value
        }
    }
}
