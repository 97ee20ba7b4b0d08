import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Synchronization
import Testing

/// Counts what matters for "no duplicate work" from the embedded server's request log.
struct RequestTally {
    var log: [RequestRecord]
    func count(_ method: String, _ pathSuffix: String, code: Int? = nil) -> Int {
        log.filter { $0.method == method && $0.path.hasSuffix(pathSuffix) && (code == nil || $0.code == code) }.count
    }
    func count(_ method: String, containing: String, code: Int? = nil) -> Int {
        log.filter { $0.method == method && $0.path.contains(containing) && (code == nil || $0.code == code) }.count
    }
}

extension TestCluster {
    func createMeteors(_ names: [String]) async throws {
        for name in names { _ = try await meteors.create(Self.demoMeteor(name)) }
    }

    /// The Meteor the fault tests create by the hundred: the demo repository, the default pipelines.
    static func demoMeteor(_ name: String) -> JSONValue {
        [
            "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": .string(name)],
            "spec": ["url": "https://github.com/aicoe-aiops/meteor-demo", "ref": "main"],
        ]
    }

    /// Waits (on a watch) until every named Meteor satisfies `done`.
    func waitForAll(_ names: [String], timeout: Duration = .seconds(60 * Scale.factor), _ done: @escaping @Sendable (JSONValue) -> Bool) async throws
    {
        let wanted = Set(names)
        let informer = DynamicInformer(api: meteors)
        let satisfied = Observed<Set<String>>([])
        await informer.addHandler { event in
            switch event {
            case .added(let m), .updated(_, let m):
                if let n = m[path: "metadata", "name"]?.stringValue, wanted.contains(n), done(m) { satisfied.update { $0.insert(n) } }
            case .deleted: break
            }
        }
        let run = Task { await informer.run() }
        defer { run.cancel() }
        do {
            try await satisfied.wait(timeout: timeout) { $0.isSuperset(of: wanted) }
        } catch is TimedOut {
            throw TimedOut(what: "\(wanted.subtracting(satisfied.value).sorted().prefix(5)) of \(wanted.count) Meteors", after: timeout)
        }
    }

    /// Plays Tekton: every PipelineRun of these Meteors succeeds.
    func succeedAllRuns(of names: [String]) async throws {
        for name in names {
            for pipeline in [Pipeline.jupyterhub, .jupyterbook] {
                let run = PipelineRunBuilder.name(meteor: name, pipeline: pipeline, generation: 1)
                try await tekton(
                    run, .succeeded,
                    results: ["IMAGE_URL": "r/\(run):g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "d", count: 64), "URL": "http://book"])
            }
        }
    }

    /// Every Meteor has exactly its two generation-1 PipelineRuns, and there are no others.
    func expectExactlyTwoRunsEach(_ names: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let runs = try await self.runs.list().items
        let byMeteor = Dictionary(grouping: runs) { $0[path: "metadata", "labels", MeteorLabels.meteor]?.stringValue ?? "" }
        #expect(runs.count == 2 * names.count, "\(runs.count) PipelineRuns for \(names.count) Meteors", sourceLocation: sourceLocation)
        for name in names {
            let mine = byMeteor[name] ?? []
            let pipelines = mine.compactMap { $0[path: "metadata", "labels", MeteorLabels.pipeline]?.stringValue }.sorted()
            #expect(pipelines == ["jupyterbook", "jupyterhub"], "\(name): \(pipelines)", sourceLocation: sourceLocation)
            #expect(mine.allSatisfy { $0[path: "metadata", "labels", MeteorLabels.generation] == "1" }, sourceLocation: sourceLocation)
        }
    }
}

/// The User-Agent of the operator's own client in these tests, which faults can aim at.
let operatorUnderTest = "meteor-operator/under-test"

let converged: @Sendable (JSONValue) -> Bool = {
    $0[path: "status", "observedGeneration"] == 1 && ($0[path: "status", "pipelines"]?.arrayValue?.count ?? 0) == 2
}
let isReady: @Sendable (JSONValue) -> Bool = { $0[path: "status", "phase"] == "Ready" }

/// Faults the API server produces (restarts, cut watches, 410 storms, 409/429/5xx, slow answers). Embedded server
/// only: these need its fault injection and request log, which a real kube-apiserver does not offer.
@Suite(.serialized, .timeLimit(.minutes(3 * Scale.factor))) struct FaultTests {
    @Test func apiServerRestartsMidReconcileSameAndEmptyStore() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            let names = (0..<Scale.of(30)).map { "restart-\($0)" }
            // Hold the first PipelineRun create: the restart lands in the middle of a reconcile.
            c.server.inject(InjectedFault(.hold, verb: "create", pathContains: "/pipelineruns"))
            try await c.createMeteors(names)
            try await within(defaultWaitTimeout, "a held request") { await c.server.waitForHeldRequest() }
            try await c.server.restart()
            try await c.waitForAll(names, converged)
            try await c.expectExactlyTwoRunsEach(names)
            let afterRestart = RequestTally(log: c.server.requestLog)
            try await c.succeedAllRuns(of: names)
            try await c.waitForAll(names, isReady)
            ReliabilityReport.row(
                "API server restarted in the middle of a reconcile (a PipelineRun create held), same store",
                injected: "\(names.count) Meteors, 1 restart",
                did:
                    "all \(names.count) Ready; \(afterRestart.count("POST", "/pipelineruns", code: 201)) PipelineRuns created, \(afterRestart.count("POST", "/pipelineruns", code: 409)) creates refused as duplicates",
                lost: "0 Meteors, 0 runs (exactly 2 each)")

            // The store is lost and GitOps re-creates the Meteors: the operator re-lists (its old versions are
            // gone) and builds them again, once each.
            try await c.server.restart(emptyStore: true)
            c.server.clearRequestLog()
            try await c.createMeteors(names)
            try await c.waitForAll(names, converged)
            try await c.expectExactlyTwoRunsEach(names)
            let tally = RequestTally(log: c.server.requestLog)
            #expect(tally.count("POST", "/pipelineruns", code: 201) == 2 * names.count)
            #expect(tally.count("POST", "/events") <= 2 * names.count, "no event storm")
            ReliabilityReport.row(
                "API server restarted with an empty store, the Meteors created again (GitOps)", injected: "\(names.count) Meteors, 1 restart",
                did:
                    "re-listed and built each once: \(tally.count("POST", "/pipelineruns", code: 201)) PipelineRuns created, \(tally.count("POST", "/events")) Events",
                lost: "0 Meteors, 0 runs (exactly 2 each)")
        }
    }

    /// Cut watches and 410 storms aimed at the operator's own watches (by its User-Agent; the test's informers
    /// are left alone): nothing lost, nothing built twice, and exactly one re-list per 410 it was given.
    @Test func cutWatchesAndGoneStormsLoseNothingAndDuplicateNothing() async throws {
        try await MeteorEnvironment.with(clientOptions: { $0.userAgent = operatorUnderTest }) { env in
            let c = env.cluster
            // Every 3rd event the server cuts all watches; every 7th the operator's next two Meteor watches get
            // 410 Expired, as from a compacted version.
            let observer = DynamicInformer(api: c.client.dynamic(Meteor.resourceType))
            let seen = Mutex(0)
            await observer.addHandler { _ in
                let n = seen.withLock {
                    $0 += 1; return $0
                }
                if n % 3 == 0 { c.server.cutWatches() }
                if n % 7 == 0 {
                    c.server.inject(
                        InjectedFault(.expiredWatch, verb: "watch", pathContains: "/meteors", userAgentContains: operatorUnderTest, count: 2))
                }
            }
            let observing = Task { await observer.run() }
            defer { observing.cancel() }
            c.server.clearRequestLog()
            await env.reconciler.meteors.waitForSync()
            let listsBefore = env.reconciler.meteors.listCount
            let names = (0..<Scale.of(40)).map { "storm-\($0)" }
            try await c.createMeteors(names)
            try await c.waitForAll(names, converged)
            // A spec change in the storm: the new generation is built once, the old one cancelled.
            _ = try await c.meteors.patch(names[0], .merge(["spec": ["ref": "v2"]]))
            try await c.waitForAll([names[0]]) { $0[path: "status", "observedGeneration"] == 2 }
            try await c.succeedAllRuns(of: Array(names.dropFirst()))
            try await c.waitForAll(Array(names.dropFirst()), isReady)
            observing.cancel()
            await observing.value
            c.server.clearFaults()
            // The last 410 may still be on its way to the operator: its re-list follows it.
            let expired = c.server.injectedFaultsServed
            try await within(defaultWaitTimeout, "a re-list for each of the \(expired) 410s") {
                while env.reconciler.meteors.listCount - listsBefore < expired { try await Task.sleep(for: .milliseconds(20)) }
            }
            let tally = RequestTally(log: c.server.requestLog)
            #expect(tally.count("POST", "/pipelineruns", code: 201) == 2 * names.count + 2, "two runs per Meteor, two more for the new generation")
            #expect(tally.count("POST", "/pipelineruns", code: 409) <= 4, "creates are not repeated after every re-list")
            #expect(expired > 0, "the storm reached the operator")
            #expect(env.reconciler.meteors.listCount - listsBefore == expired, "one re-list per 410, none for a cut watch")
            ReliabilityReport.row(
                "Watch streams cut every 3rd event; the operator's Meteor watches answered 200 + ERROR 410 Expired; a spec change in the storm",
                injected: "\(seen.withLock { $0 } / 3) cuts, \(expired) forced 410s",
                did:
                    "re-listed \(env.reconciler.meteors.listCount - listsBefore) times (once per 410, never for a cut); \(tally.count("POST", "/pipelineruns", code: 201)) PipelineRuns created (2 for the new generation), \(tally.count("POST", "/pipelineruns", code: 409)) creates refused as duplicates",
                lost: "0 of \(names.count) Meteors, 0 runs")
        }
    }

    @Test
    func conflictsThrottlingServerErrorsAndSlowResponsesAreRetriedToConvergence() async throws {
        try await MeteorEnvironment.with(clientOptions: { $0.userAgent = operatorUnderTest }) { env in
            let c = env.cluster
            c.server.clearRequestLog()
            // The Meteors exist first; the faults then hit the operator's own requests (by its User-Agent).
            let names = (0..<Scale.of(12)).map { "faulty-\($0)" }
            c.server.inject(InjectedFault(.hold, verb: "create", pathContains: "/pipelineruns", userAgentContains: operatorUnderTest))
            try await c.createMeteors(names)
            try await within(defaultWaitTimeout, "a held request") { await c.server.waitForHeldRequest() }
            var injected = 1
            for verb in ["create", "patch"] {
                c.server.inject(InjectedFault(.status(409, retryAfterSeconds: nil), verb: verb, userAgentContains: operatorUnderTest, count: 3))
                c.server.inject(InjectedFault(.status(429, retryAfterSeconds: 1), verb: verb, userAgentContains: operatorUnderTest, count: 2))
                c.server.inject(InjectedFault(.status(500, retryAfterSeconds: nil), verb: verb, userAgentContains: operatorUnderTest, count: 3))
                c.server.inject(InjectedFault(.status(503, retryAfterSeconds: nil), verb: verb, userAgentContains: operatorUnderTest, count: 3))
                c.server.inject(InjectedFault(.delay(.seconds(2)), verb: verb, userAgentContains: operatorUnderTest, count: 2))
                injected += 13
            }
            c.server.inject(InjectedFault(.status(500, retryAfterSeconds: nil), verb: "watch", userAgentContains: operatorUnderTest, count: 2))
            injected += 2
            // The operator's watches are open already: cut them, so its re-watches meet the 500s.
            c.server.cutWatches()
            c.server.releaseHeldRequests()
            try await c.waitForAll(names, converged)
            try await c.expectExactlyTwoRunsEach(names)
            let mine = c.server.requestLog.filter { $0.userAgent.contains(operatorUnderTest) }
            // Every fault reached the operator and none reached the test's clients.
            #expect(c.server.injectedFaultsServed == injected)
            #expect(!c.server.requestLog.contains { !$0.userAgent.contains(operatorUnderTest) && [409, 429, 500, 503].contains($0.code) })
            for code in [409, 429, 500, 503] { #expect(mine.contains { $0.code == code }, "the operator met \(code)") }
            let met = [409, 429, 500, 503].map { code in "\(code) × \(mine.filter { $0.code == code }.count)" }.joined(separator: ", ")
            ReliabilityReport.row(
                "409, 429 (Retry-After 1 s), 500, 503 and 2 s delays on the operator's creates and patches; 500 on its re-watches",
                injected: "\(c.server.injectedFaultsServed) faults (only its User-Agent)",
                did: "met \(met) and retried each to convergence", lost: "0 of \(names.count) Meteors, 0 runs (exactly 2 each)")
        }
    }

    /// The registry or the git remote is down: the conditions say so, retries back off, nothing is deployed.
    @Test func unreachableRegistryAndGitRemoteAreNamedAndNothingIsDeployed() async throws {
        let closed = try LocalRegistry.freePort()
        try await MeteorEnvironment.with(configure: { c in
            var edge = EdgeSettings()
            edge.insecureRegistries = ["127.0.0.1:\(closed)"]
            edge.verificationRetry = .milliseconds(300)
            c.edge = edge
        }) { env in
            let c = env.cluster
            _ = try await c.trustedSigner()
            var edge = Edge(
                images: [.init(name: "car", dockerfile: "Dockerfile", platform: "linux/arm64", repository: "127.0.0.1:\(closed)/meteor/car")],
                signing: .init(publicKeySecretRef: .init(name: "cosign-pub")),
                targets: [.init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy", namespace: "car")])
            _ = try await c.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: "offline"),
                        spec: .init(url: "https://github.com/x/car", ref: "main", pipelines: ["edge"], edge: edge))))
            let run = EdgePipelineRunBuilder.name(meteor: "offline", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await c.waitFor(c.runs, run) { $0 != nil }
            try await c.tekton(
                run, .succeeded,
                results: ["IMAGE_URL": "127.0.0.1:\(closed)/meteor/car:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "e", count: 64)])
            let m = try await c.waitFor(c.meteors, "offline") { condition($0, "ImagesVerified")?["reason"] == "RegistryUnavailable" }
            #expect(condition(m, "ImagesVerified")?["message"]?.stringValue?.contains("127.0.0.1:\(closed)") == true)
            #expect(try await c.applications.list().items.isEmpty)

            edge.release = .init(tagPattern: "v*")
            _ = try await c.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: "no-remote"),
                        spec: .init(url: "http://127.0.0.1:\(closed)/x/car.git", ref: "main", pipelines: ["edge"], edge: edge))))
            let r = try await c.waitFor(c.meteors, "no-remote") { condition($0, "ImagesBuilt")?["reason"] == "GitRemoteUnavailable" }
            #expect(condition(r, "ImagesBuilt")?["message"]?.stringValue?.contains("cannot reach") == true)
            #expect(try await c.runs.list(ListOptions(labelSelector: "\(MeteorLabels.meteor)=no-remote")).items.isEmpty)
            ReliabilityReport.row(
                "Registry and git remote unreachable (a closed port)", injected: "1 registry, 1 remote",
                did: "ImagesVerified=False RegistryUnavailable, ImagesBuilt=False GitRemoteUnavailable, retried with backoff",
                lost: "nothing deployed unverified (0 Applications), 0 runs")
        }
    }
}
