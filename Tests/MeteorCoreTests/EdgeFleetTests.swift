import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// Edge delivery to fleets, end to end on both backends: clusters chosen by the labels of Argo CD's cluster Secrets,
/// a staged rollout twin → soak → gate → car, and the rollback of a Degraded twin. The builds are played (embedded)
/// or run by real Tekton with the fake kubelet reporting the pushed digest (real); the gate is the sample gate
/// Pipeline (`manifests/tekton/samples`), run by real Tekton on the real control plane; Argo CD's status is played.
@Suite(.serialized) struct EdgeFleetTests {
    static let taskType = ResourceType(group: "tekton.dev", version: "v1", kind: "Task", plural: "tasks", namespaced: true)

    /// What the fake kubelet reports for a Task's first step (`FAKE_RESULT_<NAME>`), replacing earlier values.
    static func fakeResults(_ c: TestCluster, task: String, _ values: [String: String]) async throws {
        let tasks = c.client.dynamic(taskType, namespace: c.namespace)
        var body = try await tasks.get(task)
        var steps = try #require(body[path: "spec", "steps"]?.arrayValue)
        var env = (steps[0]["env"]?.arrayValue ?? []).filter { e in !values.keys.contains { "FAKE_RESULT_\($0)" == e["name"]?.stringValue } }
        for (k, v) in values.sorted(by: { $0.key < $1.key }) { env.append(["name": .string("FAKE_RESULT_\(k)"), "value": .string(v)]) }
        steps[0]["env"] = .array(env)
        body[path: "spec", "steps"] = .array(steps)
        _ = try await tasks.replace(body)
    }

    /// Argo CD's cluster Secret for a device: labelled for this test's fleet only (the real server is shared).
    static func register(_ c: TestCluster, _ cluster: String, role: String?) async throws {
        let secrets = c.client.api(Secret.self, namespace: "argocd")
        var labels = ["argocd.argoproj.io/secret-type": "cluster", "meteor.zone/test-fleet": c.namespace]
        if let role { labels["role"] = role }
        let name = "cluster-\(c.namespace)-\(cluster)"
        if var existing = try await secrets.getOptional(name) {
            existing.metadata.labels = labels
            _ = try await secrets.replace(existing)
        } else {
            _ = try await secrets.create(
                Secret(
                    metadata: ObjectMeta(name: name, namespace: "argocd", labels: labels),
                    stringData: ["name": cluster, "server": "https://\(cluster).local:6443", "config": #"{"bearerToken":"device-token"}"#]))
        }
    }

    static func cleanUp(_ c: TestCluster) async throws {
        guard c.kit != nil else { return }
        try await c.client.api(Secret.self, namespace: "argocd").dynamic.deleteCollection(
            ListOptions(labelSelector: "meteor.zone/test-fleet=\(c.namespace)"))
    }

    /// Edge delivery with clusters chosen by label, on `backend`. The test's cluster Secrets are removed after `body`,
    /// passed or failed (the real server's Argo CD namespace is shared).
    static func withFleet(on backend: Backend, _ body: (TestCluster, EdgeDeliveryTests.Fixture) async throws -> Void) async throws {
        try await EdgeDeliveryTests.withEdge(on: backend, edge: { $0.clusterSelectors = true }) { env, f in
            do {
                try await body(env.cluster, f)
            } catch {
                try? await cleanUp(env.cluster)
                throw error
            }
            try await cleanUp(env.cluster)
        }
    }

    static func selector(_ c: TestCluster, role: String) -> Edge.ClusterSelector {
        .init(matchLabels: ["role": role, "meteor.zone/test-fleet": c.namespace])
    }

    static func fleetMeteor(
        _ c: TestCluster, _ f: EdgeDeliveryTests.Fixture, targets: [Edge.Target], rollout: Edge.Rollout? = nil
    ) throws -> JSONValue {
        let edge = Edge(
            images: [
                .init(name: "car", dockerfile: "Dockerfile.donkey.arm64", platform: "linux/arm64", repository: "\(f.address)/meteor/fleet-car"),
                .init(name: "twin", dockerfile: "Dockerfile.donkey", platform: "linux/amd64", repository: "\(f.address)/meteor/fleet-twin"),
            ],
            targets: targets, rollout: rollout)
        var meteor = try EdgeDeliveryTests.donkeycar(edge)
        meteor[path: "metadata", "namespace"] = .string(c.namespace)
        return meteor
    }

    /// The fleet Meteor whose targets choose this test's twins and cars by label, created and (embedded) built.
    static func createTwinsAndCars(_ c: TestCluster, _ f: EdgeDeliveryTests.Fixture, digest: String) async throws {
        let meteor = try fleetMeteor(
            c, f,
            targets: [
                .init(name: "twins", clusterSelector: selector(c, role: "twin"), image: "twin", path: "deploy/twin", namespace: "donkeycar"),
                .init(name: "cars", clusterSelector: selector(c, role: "car"), image: "car", path: "deploy/car", namespace: "donkeycar"),
            ])
        _ = try await c.meteors.create(meteor, params: WriteParams(fieldValidation: .strict))
        try await builds(c, f, generation: 1, digest: digest)
    }

    /// Pushes and signs one image content for both repositories at `tag` (one digest serves both runs); on the real
    /// control plane, has the fake kubelet report it (and the commit of `ref`) from the build and clone Tasks.
    static func images(_ c: TestCluster, _ f: EdgeDeliveryTests.Fixture, tag: String, ref: String, content: String) async throws -> String {
        let digest = try await f.image("meteor/fleet-car", tag: tag, platform: "linux/arm64", content: content, signedBy: f.signer)
        _ = try await f.image("meteor/fleet-twin", tag: tag, platform: "linux/arm64", content: content, signedBy: f.signer)
        if c.kit != nil {
            try await fakeResults(c, task: "meteor-buildah", ["IMAGE_URL": "$(params.image)", "IMAGE_DIGEST": digest])
            try await fakeResults(c, task: "meteor-git-clone", ["commit": TestCluster.commit(of: ref)])
        }
        return digest
    }

    /// Plays Tekton for both edge builds of `generation` on the embedded server (real Tekton runs them on the real one).
    static func builds(_ c: TestCluster, _ f: EdgeDeliveryTests.Fixture, generation: Int64, digest: String) async throws {
        let build = EdgeBuild(ref: "unused", release: nil, generation: generation)
        for (image, repository) in [("car", "fleet-car"), ("twin", "fleet-twin")] {
            let run = EdgePipelineRunBuilder.name(meteor: "donkeycar", image: image, build: build)
            _ = try await c.waitFor(c.runs, run) { $0 != nil }
            if c.kit == nil {
                try await c.tekton(
                    run, .succeeded, results: ["IMAGE_URL": "\(f.address)/meteor/\(repository):g\(generation)", "IMAGE_DIGEST": digest])
            }
        }
    }

    static func app(_ c: TestCluster, _ target: String, _ cluster: String? = nil) -> String {
        cluster.map { ArgoApplicationBuilder.name(meteorNamespace: c.namespace, meteor: "donkeycar", target: "\(target)-\(EdgeBuild.slug($0))") }
            ?? ArgoApplicationBuilder.name(meteorNamespace: c.namespace, meteor: "donkeycar", target: target)
    }

    /// Waits for the Meteor, and on a timeout records what its status said.
    @discardableResult
    static func meteor(
        _ c: TestCluster, timeout: Duration = .seconds(60), _ condition: @escaping @Sendable (JSONValue?) -> Bool
    ) async throws -> JSONValue? {
        do {
            return try await c.waitFor(c.meteors, "donkeycar", timeout: timeout, condition)
        } catch {
            Issue.record("donkeycar's status: \((try? await c.meteors.get("donkeycar"))?["status"]?.serializedString() ?? "-")")
            throw error
        }
    }

    static func image(_ app: JSONValue?) -> String? { app?[path: "metadata", "annotations", "meteor.zone/image"]?.stringValue }

    @Test(EdgeDeliveryTests.needsRegistry, arguments: Backend.testable) func clustersChosenByLabelEachGetAnApplicationAndLeaveWhenUnlabelled(
        _ backend: Backend
    ) async throws {
        try await Self.withFleet(on: backend) { c, f in
            let digest = try await Self.images(c, f, tag: "g1", ref: "main", content: "fleet")
            for (cluster, role) in [("nuc-1", "twin"), ("nuc-2", "twin"), ("rpi-1", "car")] { try await Self.register(c, cluster, role: role) }
            // A twin of another fleet (another label value) is never chosen.
            _ = try await c.client.api(Secret.self, namespace: "argocd").create(
                Secret(
                    metadata: ObjectMeta(
                        name: "cluster-\(c.namespace)-stranger", namespace: "argocd",
                        labels: ["argocd.argoproj.io/secret-type": "cluster", "role": "twin", "meteor.zone/test-fleet": "\(c.namespace)-other"]),
                    stringData: ["name": "stranger"]))
            try await Self.createTwinsAndCars(c, f, digest: digest)

            var pinned: [String: String] = [:]
            for (target, cluster, repository) in [("twins", "nuc-1", "fleet-twin"), ("twins", "nuc-2", "fleet-twin"), ("cars", "rpi-1", "fleet-car")]
            {
                let app = try #require(try await c.waitFor(c.applications, Self.app(c, target, cluster), timeout: .seconds(90)) { $0 != nil })
                #expect(app[path: "spec", "destination", "name"] == .string(cluster))
                #expect(app[path: "metadata", "labels", MeteorLabels.target] == .string(target))
                pinned[cluster] = "\(f.address)/meteor/\(repository)@\(digest)"
                #expect(Self.image(app) == pinned[cluster])
            }
            // Labelling a new twin adds an Application for it; unlabelling one removes its Application.
            try await Self.register(c, "nuc-3", role: "twin")
            _ = try await c.waitFor(c.applications, Self.app(c, "twins", "nuc-3")) { $0?[path: "spec", "destination", "name"] == "nuc-3" }
            try await Self.register(c, "nuc-1", role: nil)
            let gone = try await c.waitFor(c.applications, Self.app(c, "twins", "nuc-1")) {
                $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil
            }
            #expect(gone == nil || gone?[path: "metadata", "deletionTimestamp"] != nil)
            let stranger = try await c.applications.list(ListOptions(labelSelector: "\(MeteorLabels.meteorNamespace)=\(c.namespace)")).items.filter {
                $0[path: "spec", "destination", "name"] == "stranger"
            }
            #expect(stranger.isEmpty)

            // Argo CD reports each synced and healthy: Ready, counted per target, no per-device list for selected ones.
            pinned["nuc-3"] = pinned["nuc-2"]
            for (target, cluster) in [("twins", "nuc-2"), ("twins", "nuc-3"), ("cars", "rpi-1")] {
                try await c.argo(Self.app(c, target, cluster), sync: "Synced", health: "Healthy", images: [pinned[cluster]!])
            }
            let ready = try await Self.meteor(c) { condition($0, "Ready")?["status"] == "True" }
            #expect(
                ready?[path: "status", "targets"] == [
                    [
                        "name": "twins", "clusterSelector": .string("meteor.zone/test-fleet=\(c.namespace),role=twin"), "desired": 2, "synced": 2,
                        "healthy": 2, "degraded": 0,
                    ],
                    [
                        "name": "cars", "clusterSelector": .string("meteor.zone/test-fleet=\(c.namespace),role=car"), "desired": 1, "synced": 1,
                        "healthy": 1, "degraded": 0,
                    ],
                ])
            #expect(ready?[path: "status", "deployments"] == [])
            #expect(condition(ready, "Deployed")?["message"] == "Deployed to nuc-2, nuc-3, rpi-1: synced and healthy")
        }
    }

    /// The staged DonkeyCar release: v1 goes to the two twins, soaks, passes the gate (the sample gate Pipeline, run
    /// by real Tekton on the real control plane) and only then reaches the car. A second release reaches the twins,
    /// one turns Degraded: the twins return to v1's digest, the car never receives the second release, and the
    /// Meteor says RolledBack (condition and Event).
    @Test(EdgeDeliveryTests.needsRegistry, arguments: Backend.testable) func aReleaseGoesTwinSoakGateThenCarAndADegradedTwinRollsBack(
        _ backend: Backend
    ) async throws {
        try await Self.withFleet(on: backend) { c, f in
            if let kit = c.kit {
                try await kit.kubectlOK(
                    "-n", c.namespace, "apply", "-k", TestCluster.repositoryDirectory.appendingPathComponent("manifests/tekton/samples").path)
            }
            let v1 = try await Self.images(c, f, tag: "g1", ref: "main", content: "model v1")
            for cluster in ["nuc-1", "nuc-2"] { try await Self.register(c, cluster, role: "twin") }
            let meteor = try Self.fleetMeteor(
                c, f,
                targets: [
                    .init(name: "twins", clusterSelector: Self.selector(c, role: "twin"), image: "twin", path: "deploy/twin", namespace: "donkeycar"),
                    .init(name: "car", cluster: "rpi-1", image: "car", path: "deploy/car", namespace: "donkeycar"),
                ],
                rollout: .init(stages: [
                    .init(name: "twin", targets: ["twins"], soakSeconds: 1, gate: .init(pipelineRef: "meteor-edge-gate")),
                    .init(name: "car", targets: ["car"]),
                ]))
            _ = try await c.meteors.create(meteor, params: WriteParams(fieldValidation: .strict))
            try await Self.builds(c, f, generation: 1, digest: v1)
            let twinV1 = "\(f.address)/meteor/fleet-twin@\(v1)", carV1 = "\(f.address)/meteor/fleet-car@\(v1)"
            for cluster in ["nuc-1", "nuc-2"] {
                _ = try await c.waitFor(c.applications, Self.app(c, "twins", cluster), timeout: .seconds(90)) { Self.image($0) == twinV1 }
            }
            let twinStage = try await Self.meteor(c) { $0?[path: "status", "rollout", "stage"] == "twin" }
            #expect(condition(twinStage, "Deployed")?["reason"] == "RollingOut")
            #expect(try await c.applications.getOptional(Self.app(c, "car")) == nil, "the car waits for the twin")

            // Held by the fleet's operators: the twins synced and healthy, yet no soak, no gate, no car.
            _ = try await c.meteors.patch("donkeycar", .merge(["metadata": ["annotations": [MeteorAnnotations.rollout: "paused"]]]))
            for cluster in ["nuc-1", "nuc-2"] { try await c.argo(Self.app(c, "twins", cluster), sync: "Synced", health: "Healthy", images: [twinV1]) }
            let paused = try await Self.meteor(c) {
                $0?[path: "status", "targets"]?.arrayValue?.first?["healthy"] == 2 && $0?[path: "status", "rollout", "paused"] == true
            }
            #expect(
                condition(paused, "Deployed")?["reason"] == "RolloutPaused"
                    && paused?[path: "status", "rollout", "waiting"] == "Paused (annotation meteor.zone/rollout=paused) at stage twin")
            #expect(paused?[path: "status", "rollout", "gateRun"] == nil && paused?[path: "status", "rollout", "healthySince"] == nil)
            #expect(try await c.runs.list().items.filter { $0[path: "metadata", "labels", MeteorLabels.gate] != nil }.isEmpty)
            // Resumed: soak, then the gate.
            _ = try await c.meteors.patch("donkeycar", .merge(["metadata": ["annotations": [MeteorAnnotations.rollout: .null]]]))
            let gating = try await Self.meteor(c) { $0?[path: "status", "rollout", "gateRun"] != nil }
            let gate = try #require(gating?[path: "status", "rollout", "gateRun"]?.stringValue)
            #expect(gating?[path: "status", "rollout", "healthySince"] != nil)
            let gateRun = try #require(try await c.waitFor(c.runs, gate) { $0 != nil })
            let params = Dictionary(
                uniqueKeysWithValues: (gateRun[path: "spec", "params"]?.arrayValue ?? []).map {
                    ($0["name"]!.stringValue!, $0["value"]!.stringValue!)
                })
            #expect(
                params["images"] == twinV1 && params["clusters"] == "nuc-1 nuc-2" && params["stage"] == "twin"
                    && params["commit"] == TestCluster.commit(of: "main"))
            #expect(gateRun[path: "spec", "pipelineRef", "name"] == "meteor-edge-gate")
            #expect(try await c.applications.getOptional(Self.app(c, "car")) == nil, "the car waits for the gate")
            if c.kit == nil { try await c.tekton(gate, .succeeded) }

            // Gate passed: the car gets v1.
            _ = try await c.waitFor(c.applications, Self.app(c, "car"), timeout: .seconds(90)) { Self.image($0) == carV1 }
            try await c.waitForEvent(about: "donkeycar", reason: "RolloutStageStarted")
            try await c.argo(Self.app(c, "car"), sync: "Synced", health: "Healthy", images: [carV1])
            let done = try await Self.meteor(c) { condition($0, "Ready")?["status"] == "True" }
            #expect(done?[path: "status", "rollout", "completed"] == true && done?[path: "status", "rollout", "stage"] == nil)
            #expect((done?[path: "status", "rollout", "lastHealthy"]?.arrayValue ?? []).map { $0["image"] } == [.string(carV1), .string(twinV1)])

            // A second release (a new generation built at another ref): it starts over at the twins.
            let v2 = try await Self.images(c, f, tag: "g2", ref: "release-2", content: "model v2")
            _ = try await c.meteors.patch("donkeycar", .merge(["spec": ["ref": "release-2"]]))
            try await Self.builds(c, f, generation: 2, digest: v2)
            let twinV2 = "\(f.address)/meteor/fleet-twin@\(v2)"
            for cluster in ["nuc-1", "nuc-2"] {
                _ = try await c.waitFor(c.applications, Self.app(c, "twins", cluster), timeout: .seconds(90)) { Self.image($0) == twinV2 }
            }
            // One twin turns Degraded running it: both twins return to v1; the car never sees v2.
            try await c.argo(Self.app(c, "twins", "nuc-1"), sync: "Synced", health: "Healthy", images: [twinV2])
            try await c.argo(
                Self.app(c, "twins", "nuc-2"), sync: "Synced", health: "Degraded", message: "CrashLoopBackOff: steering model failed to load",
                images: [twinV2])
            let rolledBack = try await Self.meteor(c) { condition($0, "Deployed")?["reason"] == "RolledBack" }
            #expect(condition(rolledBack, "Ready")?["status"] == "False")
            #expect(
                rolledBack?[path: "status", "rollout", "halted", "stage"] == "twin"
                    && rolledBack?[path: "status", "rollout", "halted", "reason"] == "Degraded")
            #expect(
                condition(rolledBack, "Deployed")?["message"]?.stringValue?.hasPrefix(
                    "\(Self.app(c, "twins", "nuc-2")) on nuc-2 turned Degraded running release-2") == true)
            for cluster in ["nuc-1", "nuc-2"] {
                let app = try await c.waitFor(c.applications, Self.app(c, "twins", cluster)) { Self.image($0) == twinV1 }
                #expect(app?[path: "spec", "source", "targetRevision"] == .string(TestCluster.commit(of: "main")))
            }
            let event = try await c.waitForEvent(about: "donkeycar", reason: "RolledBack")
            #expect(event?["type"] == "Warning")
            #expect(Self.image(try await c.applications.get(Self.app(c, "car"))) == carV1)
            #expect(
                try await c.runs.list().items.filter { $0[path: "metadata", "labels", MeteorLabels.gate] != nil }.count == 1,
                "the halted release ran no gate")
        }
    }

    /// 500 matching clusters: 500 Applications, and a status that counts them instead of listing them.
    @Test(EdgeDeliveryTests.needsRegistry, arguments: Backend.testable) func statusStaysSmallWithFiveHundredMatchingClusters(
        _ backend: Backend
    ) async throws {
        try await Self.withFleet(on: backend) { c, f in
            let digest = try await Self.images(c, f, tag: "g1", ref: "main", content: "fleet")
            for chunk in stride(from: 0, to: 500, by: 25) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in chunk..<chunk + 25 { group.addTask { try await Self.register(c, "twin-\(i)", role: "twin") } }
                    try await group.waitForAll()
                }
            }
            try await Self.register(c, "rpi-1", role: "car")
            try await Self.createTwinsAndCars(c, f, digest: digest)
            let counted = try await c.waitFor(c.meteors, "donkeycar", timeout: .seconds(180)) { m in
                // Every cluster in the operator's cache (the car's Secret was registered last), both images verified
                // (on the real control plane the two builds finish apart), and an Application each.
                let targets = m?[path: "status", "targets"]?.arrayValue ?? []
                return targets.map { $0["desired"] } == [500, 1] && targets.map { $0["notHealthy"]?.arrayValue?.count } == [5, 1]
                    && condition(m, "ImagesVerified")?["status"] == "True"
            }
            let apps = try await c.applications.listAll(ListOptions(labelSelector: "\(MeteorLabels.meteorNamespace)=\(c.namespace)")).items
            let expected = Set((0..<500).map { "twin-\($0)" } + ["rpi-1"])
            #expect(apps.count == 501, "missing: \(expected.subtracting(apps.compactMap { $0[path: "spec", "destination", "name"]?.stringValue }))")
            // Long Argo CD messages on every device: still counts and five entries.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for app in apps.prefix(50) {
                    group.addTask {
                        try await c.argo(
                            app[path: "metadata", "name"]!.stringValue!, sync: "OutOfSync", health: "Degraded",
                            message: String(repeating: "ImagePullBackOff ", count: 200))
                    }
                }
                try await group.waitForAll()
            }
            let degraded = try await Self.meteor(c) {
                ($0?[path: "status", "targets"]?.arrayValue?.reduce(Int64(0)) { $0 + ($1["degraded"]?.intValue ?? 0) } ?? 0) == 50
            }
            let bytes = try #require(degraded?["status"]).serializedString().utf8.count
            #expect(bytes < 32 * 1024, "status is \(bytes) bytes")
            #expect(condition(degraded, "Deployed")?["message"]?.stringValue?.hasSuffix("; and 45 more") == true)
            _ = counted
        }
    }

    /// Choosing clusters by label is the cluster admin's opt-in (it lets the operator list Argo CD's Secrets):
    /// without it a selector target is InvalidSpec, saying how to enable it.
    @Test func aSelectorTargetIsRefusedWhereClusterSelectionIsOff() async throws {
        try await MeteorEnvironment.with(configure: { $0.edge = EdgeSettings() }) { env in
            let c = env.cluster
            let edge = Edge(
                images: [.init(name: "twin", dockerfile: "Dockerfile", platform: "linux/amd64", repository: "quay.io/o/twin")],
                targets: [
                    .init(name: "twins", clusterSelector: .init(matchLabels: ["role": "twin"]), image: "twin", path: "deploy", namespace: "donkeycar")
                ])
            _ = try await c.meteors.create(try EdgeDeliveryTests.donkeycar(edge))
            let refused = try await Self.meteor(c) { condition($0, "Ready")?["reason"] == "InvalidSpec" }
            #expect(
                condition(refused, "Ready")?["message"]?.stringValue?.contains(
                    "spec.edge.targets[0].clusterSelector: choosing clusters by label is off on this operator: the cluster admin enables it with --edge-cluster-selectors"
                ) == true)
            #expect(try await c.runs.list().items.isEmpty)
        }
    }
}
