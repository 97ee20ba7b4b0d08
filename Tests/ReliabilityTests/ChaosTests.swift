import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Synchronization
import Testing

/// Chaos on the real control plane: the operator process, kube-apiserver and etcd are SIGKILLed at seeded random
/// points while Meteors converge (the test plays Tekton, so runs finish and Meteors become Ready meanwhile), each
/// started again after a seeded pause. A control plane of the test's own (killing the shared one would fail every
/// other test), Tekton's CRDs without its controller.
///
/// `METEOR_CHAOS_SEED=N` replays a run whose seed was printed; `METEOR_RELIABILITY_SCALE=13` is the long variant
/// (520 Meteors, 42 kills).
@Suite(.serialized, .timeLimit(.minutes(5 * Scale.factor))) struct ChaosTests {
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit"))
    func operatorAPIServerAndEtcdKilledAtSeededPointsLoseNothingAndRepeatNothing() async throws {
        let plane = try await KitControlPlane.startDedicated()
        defer { Task { await plane.stop() } }
        let cluster = try await TestCluster.real(
            on: plane, namespacePrefix: "chaos", crds: ["crds/meteor.zone_meteors.yaml", "crds/tekton/300-pipelinerun.yaml"])
        try await cluster.run { c in
            let names = (0..<Scale.of(40)).map { "chaos-\($0)" }
            // Each Ready Meteor serves its book through a Service; the kit's service range (a /24) holds 254, the
            // long variant makes 520. (Found by the long variant: creates refused 500, "range is full".)
            let serviceCIDRs = c.client.dynamic(
                ResourceType(group: "networking.k8s.io", version: "v1", kind: "ServiceCIDR", plural: "servicecidrs", namespaced: false))
            _ = try await serviceCIDRs.create([
                "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": ["name": "chaos-books"], "spec": ["cidrs": ["10.1.0.0/20"]],
            ])
            var rng = SystemRandomNumberGenerator()
            let seed = ProcessInfo.processInfo.environment["METEOR_CHAOS_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 0...UInt64.max, using: &rng)
            print("chaos test: METEOR_CHAOS_SEED=\(seed)")
            var generator = SplitMix(seed: seed)
            // Every kind of kill equally often, in a seeded order, at seeded points of progress (runs created plus
            // Meteors Ready: 3 per Meteor), each followed by a seeded pause before the restart.
            let perKind = 1 + Scale.factor
            var kinds = Array(repeating: ["operator", "kube-apiserver", "etcd"], count: perKind).flatMap { $0 }
            kinds.shuffle(using: &generator)
            let points = kinds.map { _ in Int.random(in: 1...(3 * names.count - 1), using: &generator) }.sorted()
            let pauses = kinds.map { _ in Int.random(in: 0...1500, using: &generator) }

            let watch = ChaosWatch()
            let runsInformer = DynamicInformer(api: c.runs)
            let meteorsInformer = DynamicInformer(api: c.meteors)
            let tekton = AsyncStream<String>.makeStream()
            await runsInformer.addHandler { e in
                guard case .added(let run) = e else { return }
                watch.runAdded()
                if let name = run[path: "metadata", "name"]?.stringValue, run[path: "status", "conditions"] == nil { tekton.continuation.yield(name) }
            }
            await meteorsInformer.addHandler { watch.observe($0) }
            let observing = [Task { await runsInformer.run() }, Task { await meteorsInformer.run() }]
            // Tekton, played: every run succeeds with its results (written again until the server takes it).
            let playing = Task {
                for await run in tekton.stream {
                    try await persistently("the status of \(run)") {
                        do {
                            try await c.tekton(
                                run, .succeeded,
                                results: [
                                    "IMAGE_URL": "r/\(run):g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "c", count: 64),
                                    "URL": "http://book/\(run)",
                                ])
                        } catch let e as KubeError where e.isNotFound {}
                    }
                }
            }
            defer {
                tekton.continuation.finish()
                playing.cancel()
                for t in observing { t.cancel() }
            }

            let kubeconfig = try c.writeKubeconfig()
            let namespaceFlag = ["--namespace", c.namespace]
            var op = try ProcessFaultTests.startOperator(kubeconfig, extra: namespaceFlag)
            defer { op.terminate() }
            for name in names {
                try await persistently("creating \(name)") {
                    do {
                        _ = try await c.meteors.create(TestCluster.demoMeteor(name))
                    } catch let e as KubeError where e.isAlreadyExists {}  // an earlier attempt's answer was lost
                }
            }

            var requests: [String: Int] = [:]
            var killed: [String: Int] = [:]
            for (i, kind) in kinds.enumerated() {
                do {
                    // Progress between two kill points takes seconds; minutes without any is the operator stuck.
                    try await watch.progress.wait(timeout: .seconds(180)) { $0 >= points[i] }
                } catch {
                    Issue.record(
                        "seed \(seed): progress stalled at \(watch.progress.value) of \(points[i]) before kill \(i + 1) (\(kind)); the operator printed:\n\(op.text.suffix(8000))"
                    )
                    throw error
                }
                switch kind {
                case "operator":
                    op.signal(SIGKILL)
                    _ = await op.wait()
                    try await Task.sleep(for: .milliseconds(pauses[i]))  // the outage itself, not synchronisation
                    op = try ProcessFaultTests.startOperator(kubeconfig, extra: namespaceFlag)
                default:
                    let component: KitControlPlane.Component = kind == "etcd" ? .etcd : .kubeAPIServer
                    // The server's own counters die with it: read them first.
                    if component == .kubeAPIServer { requests.merge(try await plane.requestCounts(), uniquingKeysWith: +) }
                    let dead = try await plane.kill(component)
                    try await Task.sleep(for: .milliseconds(pauses[i]))  // the outage itself
                    try await plane.restart(dead)
                    #expect(op.isRunning, "the operator exited by itself while \(kind) was down:\n\(op.text.suffix(3000))")
                }
                killed[kind, default: 0] += 1
            }
            do {
                try await c.waitForAll(names, timeout: .seconds(180 * Scale.factor), isReady)
            } catch {
                Issue.record("seed \(seed); the operator printed:\n\(op.text.suffix(4000))")
                throw error
            }
            requests.merge(try await plane.requestCounts(), uniquingKeysWith: +)
            try await c.expectExactlyTwoRunsEach(names)
            #expect(watch.regressions.isEmpty, "status went back in time (seed \(seed)): \(watch.regressions.prefix(5))")
            #expect(killed == ["operator": perKind, "kube-apiserver": perKind, "etcd": perKind])
            #expect(op.isRunning)
            let created = requests["POST pipelineruns 201"] ?? 0
            let refused = requests["POST pipelineruns 409"] ?? 0
            let otherwise = requests.filter { $0.key.hasPrefix("POST pipelineruns ") && !$0.key.hasSuffix(" 201") && !$0.key.hasSuffix(" 409") }
                .sorted { $0.key < $1.key }.map { "\($0.key.split(separator: " ").last!) × \($0.value)" }
            print(
                "chaos test: \(names.count) Meteors Ready; kills \(killed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); PipelineRuns \(2 * names.count), creates answered 201: \(created), refused as duplicates (409): \(refused), answered otherwise: \(otherwise.isEmpty ? "none" : otherwise.joined(separator: ", ")); status regressions: \(watch.regressions.count); seed \(seed)"
            )
            // kube-apiserver's counters, read just before each kill: a create answered in the instant between the
            // reading and the kill is not counted, so 201s can fall short of the runs, never exceed them.
            #expect(created <= 2 * names.count)
            // A refused duplicate is a create whose run already existed: its answer was lost with a killed server,
            // or the operator was restarted before its cache saw the run. Bounded by the kills, not by the Meteors.
            #expect(refused <= 4 * kinds.count, "\(refused) refused duplicate creates for \(kinds.count) kills (seed \(seed))")
            ReliabilityReport.row(
                "kill -9 of the operator, of kube-apiserver and of etcd (a real control plane of the test's own) at seeded points while Meteors converge, each restarted after a seeded 0–1.5 s outage",
                injected:
                    "\(names.count) Meteors; kills: \(killed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); METEOR_CHAOS_SEED=\(seed)",
                did:
                    "all \(names.count) Ready, never exited by itself; kube-apiserver counted its run creates: 201 × \(created), 409 (refused duplicates) × \(refused)\(otherwise.isEmpty ? "" : ", " + otherwise.joined(separator: ", "))",
                lost: "0 Meteors, 0 runs (exactly 2 each), \(watch.regressions.count) status regressions")
        }
    }
}

/// What the test's own watch of the Meteors and runs saw: progress to aim kills at, and any status that went back
/// in time (a Meteor Ready and then not, an observedGeneration going down, a resourceVersion going back).
final class ChaosWatch: Sendable {
    let progress = Observed(0)
    let state = Mutex<(ready: Set<String>, generation: [String: Int], version: [String: UInt64], regressions: [String])>(([], [:], [:], []))

    func runAdded() { progress.update { $0 += 1 } }

    var regressions: [String] { state.withLock { $0.regressions } }

    func observe(_ event: InformerEvent<JSONValue>) {
        let m: JSONValue
        switch event {
        case .added(let o), .updated(_, let o): m = o
        case .deleted(let o): state.withLock { $0.regressions.append("\(ObjectKey(o)) deleted") }; return
        }
        let name = m[path: "metadata", "name"]?.stringValue ?? ""
        let ready = m[path: "status", "phase"] == "Ready"
        let generation = Int(m[path: "status", "observedGeneration"]?.intValue ?? 0)
        let version = m[path: "metadata", "resourceVersion"]?.stringValue.flatMap(UInt64.init) ?? 0
        let becameReady = state.withLock { s -> Bool in
            let phase = m[path: "status", "phase"]?.stringValue ?? "none"
            if s.ready.contains(name), !ready { s.regressions.append("\(name): Ready, then \(phase) at resourceVersion \(version)") }
            if let g = s.generation[name], generation < g { s.regressions.append("\(name): observedGeneration \(g), then \(generation)") }
            if let v = s.version[name], version < v { s.regressions.append("\(name): resourceVersion \(v), then \(version)") }
            s.generation[name] = max(generation, s.generation[name] ?? 0)
            s.version[name] = max(version, s.version[name] ?? 0)
            return ready && s.ready.insert(name).inserted
        }
        if becameReady { progress.update { $0 += 1 } }
    }
}
