import Foundation
import KubeModels
import KubeRuntime
@testable import MeteorCore
import Testing

/// The staged-rollout rules (`RolloutPlanner`) and fleet placement, without a server: each rule is one call with
/// what Argo CD reports, and the plan is what the reconciler then does.
@Suite struct EdgeRolloutTests {
    static let rollout = Edge.Rollout(stages: [
        .init(name: "twin", targets: ["twins"], soakSeconds: 60, gate: .init(pipelineRef: "sim-lap")),
        .init(name: "car", targets: ["cars"], soakSeconds: 30),
    ])
    static let v1 = [
        "twins": EdgeDelivered(target: "twins", image: "r/twin@sha256:1", revision: "c1"),
        "cars": EdgeDelivered(target: "cars", image: "r/car@sha256:1", revision: "c1"),
    ]
    static let v2 = [
        "twins": EdgeDelivered(target: "twins", image: "r/twin@sha256:2", revision: "c2"),
        "cars": EdgeDelivered(target: "cars", image: "r/car@sha256:2", revision: "c2"),
    ]
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    /// An Application for `target` on `cluster` given `delivered`, as Argo CD reports it.
    static func device(
        _ cluster: String, _ delivered: EdgeDelivered?, sync: String = "Synced", health: String = "Healthy", running: Bool = true
    ) -> RolloutPlanner.Device {
        var app: JSONValue = [
            "metadata": ["annotations": [:]], "spec": ["source": [:]], "status": ["sync": .string(sync), "health": .string(health)],
        ]
        app[path: "status", "sync"] = ["status": .string(sync)]
        app[path: "status", "health"] = ["status": .string(health)]
        if let delivered {
            app[path: "metadata", "annotations", "meteor.zone/image"] = .string(delivered.image)
            app[path: "spec", "source", "targetRevision"] = .string(delivered.revision)
            if running { app[path: "status", "summary", "images"] = [.string(delivered.image)] }
        }
        app[path: "status", "sync", "comparedTo", "source"] = app[path: "spec", "source"]
        return .init(application: "app-\(cluster)", cluster: cluster, state: ApplicationState(app), given: delivered)
    }

    /// Plans one reconcile: a gate run's state by outcome (nil: not created yet).
    static func plan(
        _ previous: EdgeRolloutStatus?, wanted: [String: EdgeDelivered]? = v1, devices: [String: [RolloutPlanner.Device]],
        gate: PipelineRunState.Outcome? = nil, paused: Bool = false, at seconds: Double
    ) -> RolloutPlan {
        RolloutPlanner.plan(
            rollout, previous: previous, wanted: wanted, release: wanted == v2 ? "v2" : "v1", devices: devices,
            gate: { _ in
                gate.map { outcome in
                    let status = outcome == .succeeded ? "True" : outcome == .failed ? "False" : "Unknown"
                    return PipelineRunState([
                        "status": [
                            "conditions": [
                                [
                                    "type": "Succeeded", "status": .string(status), "reason": outcome == .failed ? "Failed" : "Running",
                                    "message": "lap time 93 s, over the 60 s limit",
                                ]
                            ]
                        ]
                    ])
                }
            }, paused: paused, meteor: "donkeycar", now: t0.addingTimeInterval(seconds))
    }

    @Test func aReleaseGoesToTheTwinSoaksPassesTheGateAndOnlyThenReachesTheCar() throws {
        // A new release: stage twin starts; only the twins are given it.
        var p = Self.plan(
            nil, devices: ["twins": [Self.device("nuc-1", nil, sync: "Unknown", health: "Unknown")], "cars": [Self.device("rpi-1", nil)]], at: 0)
        #expect(p.status.stage == "twin" && p.deliver == ["twins"] && p.rollBack.isEmpty)
        #expect(p.events.map(\.reason) == ["RolloutStarted"])
        #expect(p.status.waiting == "Stage twin: 0 of 1 Application(s) synced and healthy at v1")

        // Healthy: the soak starts, and says how long is left.
        let twinHealthy = ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": [Self.device("rpi-1", nil)]]
        p = Self.plan(p.status, devices: twinHealthy, at: 10)
        #expect(p.status.healthySince == Self.t0.addingTimeInterval(10) && p.deliver == ["twins"])
        #expect(p.requeueAfter == .milliseconds(60_001) && p.status.waiting?.hasSuffix("soaking 60s more") == true)
        p = Self.plan(p.status, devices: twinHealthy, at: 40)
        #expect(p.requeueAfter == .milliseconds(30_001) && p.gate == nil)

        // Soaked: the gate run is asked for, and the car still waits for it.
        p = Self.plan(p.status, devices: twinHealthy, at: 70)
        let gateRun = RolloutPlanner.gateRunName(meteor: "donkeycar", stage: "twin", delivery: RolloutPlanner.deliveryID(Self.v1))
        #expect(p.gate?.run == gateRun && p.gate?.stage.name == "twin" && p.status.gateRun == gateRun)
        #expect(p.deliver == ["twins"] && p.status.stage == "twin")
        p = Self.plan(p.status, devices: twinHealthy, gate: .running, at: 80)
        #expect(p.deliver == ["twins"] && p.status.waiting?.contains("gate PipelineRun \(gateRun) (sim-lap) is Running") == true)

        // Gate passed: stage car starts in the same reconcile, and what the twin ran is remembered as healthy.
        p = Self.plan(p.status, devices: twinHealthy, gate: .succeeded, at: 90)
        #expect(p.status.stage == "car" && p.deliver == ["twins", "cars"] && p.status.since == Self.t0.addingTimeInterval(90))
        #expect(p.status.lastHealthy == [Self.v1["twins"]!])
        #expect(p.events.map(\.reason) == ["RolloutStageStarted"] && p.events[0].message.contains("gate \(gateRun) passed"))

        // The car healthy for its soak: complete.
        let allHealthy = ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": [Self.device("rpi-1", Self.v1["cars"])]]
        p = Self.plan(p.status, devices: allHealthy, gate: .succeeded, at: 100)
        #expect(p.status.completed == nil && p.requeueAfter == .milliseconds(30_001))
        p = Self.plan(p.status, devices: allHealthy, gate: .succeeded, at: 130)
        #expect(
            p.status.completed == true && p.status.stage == nil && p.deliver == ["twins", "cars"] && p.events.map(\.reason) == ["RolloutCompleted"])
        #expect(p.status.lastHealthy?.map(\.target) == ["cars", "twins"])
        // Steady afterwards: no events, nothing new.
        let again = Self.plan(p.status, devices: allHealthy, at: 500)
        #expect(again.events.isEmpty && again.status == p.status)
    }

    /// A device that was healthy at the old release and not yet at the new one is not proof: the soak only starts
    /// when Argo CD reports the new image running.
    @Test func staleHealthFromTheLastReleaseDoesNotStartTheSoak() {
        let stale = Self.device("nuc-1", Self.v1["twins"])
        var moved = stale
        moved.given = Self.v2["twins"]  // the Application was given v2; Argo still reports v1 running
        let p = Self.plan(nil, wanted: Self.v2, devices: ["twins": [moved], "cars": [Self.device("rpi-1", nil)]], at: 0)
        #expect(p.status.healthySince == nil && p.status.waiting == "Stage twin: 0 of 1 Application(s) synced and healthy at v2")
    }

    @Test func aDegradedTwinRollsBackToWhatLastRanHealthyAndTheCarNeverGetsTheRelease() {
        var done = EdgeRolloutStatus(delivery: RolloutPlanner.deliveryID(Self.v1), release: "v1")
        done.completed = true
        done.lastHealthy = [Self.v1["cars"]!, Self.v1["twins"]!]
        // v2 arrives: it starts over at the twin.
        var p = Self.plan(
            done, wanted: Self.v2, devices: ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": [Self.device("rpi-1", Self.v1["cars"])]],
            at: 0)
        #expect(p.status.stage == "twin" && p.status.completed == nil && p.deliver == ["twins"] && p.status.lastHealthy == done.lastHealthy)
        // One twin of two turns Degraded running v2: the twin stage rolls back, the release stops.
        let twins = [Self.device("nuc-1", Self.v2["twins"]), Self.device("nuc-2", Self.v2["twins"], health: "Degraded")]
        p = Self.plan(p.status, wanted: Self.v2, devices: ["twins": twins, "cars": [Self.device("rpi-1", Self.v1["cars"])]], at: 5)
        #expect(p.rollBack == ["twins"] && p.deliver.isEmpty)
        #expect(
            p.status.halted?.stage == "twin" && p.status.halted?.reason == "Degraded"
                && p.status.halted?.message == "app-nuc-2 on nuc-2 turned Degraded running v2")
        #expect(p.events.map(\.reason) == ["RolledBack"] && p.events[0].warning)
        // Back at v1 and healthy: still halted (the same release is not tried again), the car never given v2.
        let rolledBack = [
            "twins": [Self.device("nuc-1", Self.v1["twins"]), Self.device("nuc-2", Self.v1["twins"])],
            "cars": [Self.device("rpi-1", Self.v1["cars"])],
        ]
        let later = Self.plan(p.status, wanted: Self.v2, devices: rolledBack, at: 500)
        #expect(later.rollBack == ["twins"] && later.deliver.isEmpty && later.events.isEmpty && later.status.halted == p.status.halted)
        #expect(later.status.waiting == "Delivery of v2 stopped at stage twin (Degraded); a new release starts over")
        // A new release starts over.
        let v3 = Self.v2.mapValues { d in EdgeDelivered(target: d.target, image: d.image + "3", revision: "c3") }
        let fresh = RolloutPlanner.plan(
            Self.rollout, previous: later.status, wanted: v3, release: "v3", devices: rolledBack, gate: { _ in nil }, paused: false,
            meteor: "donkeycar", now: Self.t0)
        #expect(
            fresh.status.halted == nil && fresh.status.stage == "twin" && fresh.deliver == ["twins"] && fresh.status.lastHealthy == done.lastHealthy)
    }

    @Test func aFailedGateRollsTheStageBack() {
        var status = EdgeRolloutStatus(delivery: RolloutPlanner.deliveryID(Self.v1), release: "v1")
        status.stage = "twin"
        status.healthySince = Self.t0
        let p = Self.plan(status, devices: ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": []], gate: .failed, at: 61)
        #expect(p.rollBack == ["twins"] && p.deliver.isEmpty && p.status.halted?.reason == "GateFailed")
        #expect(p.status.halted?.message.hasSuffix("(sim-lap) failed: lap time 93 s, over the 60 s limit") == true)
        #expect(p.status.lastHealthy == nil, "a stage that failed its gate proved nothing")
    }

    @Test func aDegradedCarAfterTheTwinPassedRollsBackOnlyTheCar() {
        var status = EdgeRolloutStatus(delivery: RolloutPlanner.deliveryID(Self.v1), release: "v1")
        status.stage = "car"
        let p = Self.plan(
            status,
            devices: ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": [Self.device("rpi-1", Self.v1["cars"], health: "Degraded")]], at: 0)
        #expect(p.rollBack == ["cars"] && p.deliver == ["twins"] && p.status.halted?.stage == "car")
    }

    @Test func pausedHoldsTheStageAndANewReleaseButNotTheRollback() {
        var status = EdgeRolloutStatus(delivery: RolloutPlanner.deliveryID(Self.v1), release: "v1")
        status.stage = "twin"
        status.healthySince = Self.t0
        let healthy = ["twins": [Self.device("nuc-1", Self.v1["twins"])], "cars": [Self.device("rpi-1", nil)]]
        // Soaked and gated, but paused: no stage starts.
        var p = Self.plan(status, devices: healthy, gate: .succeeded, paused: true, at: 500)
        #expect(p.status.stage == "twin" && p.deliver == ["twins"] && p.events.isEmpty && p.status.paused == true)
        #expect(p.status.waiting == "Paused (annotation meteor.zone/rollout=paused) at stage twin")
        // A new release while paused waits, and nothing is given it.
        p = Self.plan(status, wanted: Self.v2, devices: healthy, paused: true, at: 500)
        #expect(
            p.deliver.isEmpty && p.status.delivery == status.delivery
                && p.status.waiting == "Paused (annotation meteor.zone/rollout=paused): v2 waits")
        // Degraded while paused still rolls back: the pause holds progress, not safety.
        p = Self.plan(status, devices: ["twins": [Self.device("nuc-1", Self.v1["twins"], health: "Degraded")], "cars": []], paused: true, at: 500)
        #expect(p.rollBack == ["twins"] && p.status.halted != nil)
        // Resumed: the stage goes on.
        p = Self.plan(status, devices: healthy, gate: .succeeded, paused: false, at: 500)
        #expect(p.status.stage == "car" && p.status.paused == nil)
    }

    @Test func imagesNotAllVerifiedGiveNothingAndKeepTheState() {
        var status = EdgeRolloutStatus(delivery: "abc", release: "v1")
        status.completed = true
        let p = Self.plan(status, wanted: nil, devices: [:], at: 0)
        #expect(p.deliver.isEmpty && p.rollBack.isEmpty && p.status.completed == true && p.status.delivery == "abc")
    }

    /// Right after the operator gives an Application a new image, Argo CD still reports the old one running (Synced,
    /// compared to the old source): that is not an unpinned image, and delivery is not stopped for it. A report
    /// about the current source that lists an image not given is.
    @Test func theUnpinnedImageAuditJudgesOnlyReportsAboutTheCurrentSpec() {
        var app: JSONValue = [
            "spec": ["source": ["repoURL": "https://g/r", "targetRevision": "c2", "kustomize": ["images": ["r/twin=r/twin@sha256:2"]]]]
        ]
        var old = app[path: "spec", "source"]!
        old["targetRevision"] = "c1"
        old["kustomize"] = ["images": ["r/twin=r/twin@sha256:1"]]
        app["status"] = ["sync": ["status": "Synced", "comparedTo": ["source": old]], "summary": ["images": ["r/twin@sha256:1"]]]
        #expect(MeteorReconciler.unpinnedImages(app).isEmpty)
        app[path: "status", "sync", "comparedTo", "source"] = app[path: "spec", "source"]
        app[path: "status", "sync", "status"] = "OutOfSync"
        #expect(MeteorReconciler.unpinnedImages(app).isEmpty, "not synced yet: the live resources are still the old ones")
        app[path: "status", "sync", "status"] = "Synced"
        app[path: "status", "summary", "images"] = ["r/twin@sha256:2", "docker.io/library/redis:7"]
        #expect(MeteorReconciler.unpinnedImages(app) == ["docker.io/library/redis:7"])
    }

    @Test func selectorsPlaceOneApplicationPerMatchingClusterAndCountsStayBounded() throws {
        func secret(_ name: String, _ labels: [String: String], server: String = "https://x:6443") -> JSONValue {
            var s: JSONValue = [
                "apiVersion": "v1", "kind": "Secret",
                "metadata": ["name": .string("cluster-\(name)"), "namespace": "argocd", "labels": .object(labels.mapValues(JSONValue.string))],
                "data": [
                    "name": .string(Data(name.utf8).base64EncodedString()), "server": .string(Data(server.utf8).base64EncodedString()),
                    "config": .string(Data("{\"bearerToken\":\"s3cret\"}".utf8).base64EncodedString()),
                ],
            ]
            s[path: "metadata", "labels", "argocd.argoproj.io/secret-type"] = "cluster"
            return s
        }
        // The cache never holds the credentials.
        let trimmed = ArgoClusters.trimmedForCache(secret("nuc-1", ["role": "twin"]))
        #expect(
            trimmed[path: "data", "config"] == nil
                && !trimmed.serializedString().contains(Data("{\"bearerToken\":\"s3cret\"}".utf8).base64EncodedString()))
        #expect(ArgoClusters.cluster(trimmed) == .init(name: "nuc-1", labels: ["role": "twin", "argocd.argoproj.io/secret-type": "cluster"]))
        // No name: Argo CD names the cluster by its server.
        var unnamed = secret("x", [:], server: "https://10.0.0.9:6443")
        unnamed[path: "data", "name"] = nil
        #expect(ArgoClusters.cluster(unnamed)?.name == "https://10.0.0.9:6443")

        let clusters = [secret("nuc-1", ["role": "twin"]), secret("nuc-2", ["role": "twin", "site": "lab"]), secret("rpi-1", ["role": "car"])]
            .compactMap(ArgoClusters.cluster)
        let twins = Edge.Target(
            name: "twins", clusterSelector: .init(matchLabels: ["role": "twin"]), image: "twin", path: "deploy/twin", namespace: "donkeycar")
        let lab = Edge.Target(
            name: "lab", clusterSelector: .init(matchExpressions: [.init(key: "site", operator: "In", values: ["lab"])]), image: "twin",
            path: "deploy/twin", namespace: "donkeycar")
        let fixed = Edge.Target(name: "rpi", cluster: "rpi-1", image: "car", path: "deploy/car", namespace: "donkeycar")
        let edge = Edge(images: [], targets: [twins, lab, fixed])
        let placements = EdgePlacement.resolve(edge, clusters: clusters)
        #expect(placements.map { "\($0.target.name)@\($0.cluster)" } == ["twins@nuc-1", "twins@nuc-2", "lab@nuc-2", "rpi@rpi-1"])
        #expect(
            placements.map { $0.application(meteorNamespace: "default", meteor: "donkeycar") } == [
                "default-donkeycar-twins-nuc-1", "default-donkeycar-twins-nuc-2", "default-donkeycar-lab-nuc-2", "default-donkeycar-rpi",
            ])

        // Selectors that are not selectors are refused with the reason.
        #expect(throws: LabelSelector.ParseError.self) { try Edge.ClusterSelector().labelSelector() }
        #expect(throws: LabelSelector.ParseError.self) {
            try Edge.ClusterSelector(matchExpressions: [.init(key: "role", operator: "In")]).labelSelector()
        }
        #expect(throws: LabelSelector.ParseError.self) {
            try Edge.ClusterSelector(matchExpressions: [.init(key: "role", operator: "Near", values: ["x"])]).labelSelector()
        }
        #expect(
            try Edge.ClusterSelector(matchLabels: ["role": "twin"], matchExpressions: [.init(key: "site", operator: "NotIn", values: ["lab"])])
                .labelSelector().description == "role=twin,site notin (lab)")

        // A fleet's summary is counts and at most five devices.
        let deployments = (0..<500).map { i in
            var d = EdgeDeploymentStatus(target: "twins", cluster: "nuc-\(i)", application: "a-\(i)")
            d.syncStatus = "Synced"
            d.healthStatus = i % 10 == 0 ? "Degraded" : "Healthy"
            d.message = String(repeating: "x", count: 2000)
            return d
        }
        let summary = EdgeTargetStatus.summarise(twins, deployments: deployments, desired: 501)
        #expect(
            summary.desired == 501 && summary.synced == 500 && summary.healthy == 450 && summary.degraded == 50
                && summary.notHealthy?.count == EdgeTargetStatus.limit)
        #expect(summary.notHealthy?.allSatisfy { ($0.message?.utf8.count ?? 0) <= 256 } == true && summary.clusterSelector == "role=twin")
    }

    @Test func theSpecIsCheckedForStagesAndSelectors() {
        let twins = Edge.Target(
            name: "twins", clusterSelector: .init(matchLabels: ["role": "twin"]), image: "twin", path: "deploy/twin", namespace: "donkeycar")
        let both = Edge.Target(
            name: "both", cluster: "rpi", clusterSelector: .init(matchLabels: ["role": "car"]), image: "twin", path: "deploy/twin",
            namespace: "donkeycar")
        let neither = Edge.Target(name: "neither", image: "twin", path: "deploy/twin", namespace: "donkeycar")
        let image = Edge.Image(name: "twin", dockerfile: "Dockerfile", platform: "linux/amd64", repository: "quay.io/o/twin")
        let edge = Edge(
            images: [image], targets: [twins, both, neither],
            rollout: .init(stages: [.init(name: "twin", targets: ["twins", "nope"]), .init(name: "again", targets: ["twins"], soakSeconds: -1)]))
        let problems = SpecValidation.problems(Meteor.Spec(url: "https://github.com/o/r", ref: "main", pipelines: ["edge"], edge: edge)).map {
            "\($0.field): \($0.message)"
        }
        #expect(problems.contains("spec.edge.targets[1]: must name exactly one of cluster and clusterSelector"))
        #expect(problems.contains("spec.edge.targets[2]: must name exactly one of cluster and clusterSelector"))
        #expect(problems.contains("spec.edge.rollout.stages[0].targets[1]: names no target in spec.edge.targets: \"nope\""))
        #expect(problems.contains("spec.edge.rollout.stages[1].targets[0]: target \"twins\" is already in stage \"twin\""))
        #expect(problems.contains("spec.edge.rollout.stages[1].soakSeconds: must be between 0 and 604800 seconds, got -1"))
        #expect(problems.contains("spec.edge.rollout.stages: target \"both\" is in no stage: a staged rollout names every target once"))
    }
}
