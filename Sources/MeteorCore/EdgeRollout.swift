import Crypto
import Foundation
import KubeModels
import KubeRuntime

/// What one reconcile does about a staged delivery (`spec.edge.rollout`): which targets are given the release,
/// which return to what last ran healthy there, which gate run must exist, what to tell the user.
struct RolloutPlan {
    struct Event: Equatable {
        var warning: Bool
        var reason: String
        var message: String
    }
    var status: EdgeRolloutStatus
    /// Targets given the release now (the stages that have started and were not rolled back).
    var deliver: Set<String> = []
    /// Targets returned to their last healthy delivery (nothing, when they never ran one healthy).
    var rollBack: Set<String> = []
    /// The gate PipelineRun that must exist, for the stage.
    var gate: (stage: Edge.Rollout.Stage, run: String)?
    var events: [Event] = []
    var requeueAfter: Duration?
}

/// Decides a staged delivery from the status it wrote last and what Argo CD reports now: a pure function of its
/// inputs, so every rule is tested without a server. The stage, since when it soaks, the halt and what ran healthy
/// live in `status.rollout`, so a restarted operator continues where it was.
enum RolloutPlanner {
    /// One device's Application and what it was given.
    struct Device {
        var application: String
        var cluster: String
        var state: ApplicationState
        var given: EdgeDelivered?

        /// Runs `wanted`: given it, and Argo CD's report is about it (and, when it reports images, has it running).
        func runs(_ wanted: EdgeDelivered?) -> Bool {
            guard let wanted, let given, given.sameDelivery(as: wanted), state.comparedToSpec else { return false }
            return state.runningImages.isEmpty || state.runningImages.contains(wanted.image)
        }
        func healthy(at wanted: EdgeDelivered?) -> Bool { runs(wanted) && state.isSyncedAndHealthy }
        func degraded(at wanted: EdgeDelivered?) -> Bool { runs(wanted) && state.healthStatus == "Degraded" }
    }

    /// Names a release by what it gives every target.
    static func deliveryID(_ wanted: [String: EdgeDelivered]) -> String {
        let text = wanted.keys.sorted().map { t in
            let d = wanted[t]!
            return "\(t) \(d.image) \(d.revision) \((d.images ?? []).joined(separator: ","))"
        }.joined(separator: "\n")
        return SHA256.hash(data: Data(text.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    static func gateRunName(meteor: String, stage: String, delivery: String) -> String {
        PipelineRunBuilder.boundedName("\(meteor)-gate-\(stage)", suffix: "-\(delivery.prefix(8))")
    }

    /// `wanted`: what each target is to be given (nil while some image is not verified yet). `devices`: each
    /// target's Applications. `gate`: a gate run's state by name. `paused`: the user's hold.
    static func plan(
        _ rollout: Edge.Rollout, previous: EdgeRolloutStatus?, wanted: [String: EdgeDelivered]?, release: String, devices: [String: [Device]],
        gate: (String) -> PipelineRunState?, paused: Bool, meteor: String, now: Date
    ) -> RolloutPlan {
        let stages = rollout.stages
        var plan = RolloutPlan(status: previous ?? EdgeRolloutStatus())
        plan.status.paused = paused ? true : nil
        guard let wanted, !stages.isEmpty else {
            plan.status.waiting = "Waiting for every image of \(release) to be verified"
            return plan
        }
        let id = deliveryID(wanted)
        func targets(_ range: Range<Int>) -> Set<String> { Set(stages[range].flatMap(\.targets)) }
        func index(_ stage: String?) -> Int? { stage.flatMap { name in stages.firstIndex { $0.name == name } } }

        if plan.status.delivery != id {
            if paused {
                plan.status.waiting = "Paused (annotation \(MeteorAnnotations.rollout)=paused): \(release) waits"
                return plan
            }
            var fresh = EdgeRolloutStatus(delivery: id, release: release)
            fresh.lastHealthy = plan.status.lastHealthy
            fresh.paused = plan.status.paused
            fresh.stage = stages[0].name
            fresh.since = now
            plan.status = fresh
            plan.events.append(
                .init(
                    warning: false, reason: "RolloutStarted",
                    message: "Rolling out \(release) in stages \(stages.map(\.name).joined(separator: " → ")): \(stages[0].name) first"))
        }
        plan.status.release = release

        let current = plan.status.completed == true ? stages.count : (index(plan.status.stage) ?? 0)
        let started = min(stages.count, current + 1)

        // A started stage whose devices turn Degraded running the release rolls back, and the release stops there.
        for k in 0..<started {
            let bad = stages[k].targets.flatMap { t in (devices[t] ?? []).filter { $0.degraded(at: wanted[t]) } }
            guard !bad.isEmpty else { continue }
            if index(plan.status.halted?.stage).map({ $0 > k }) ?? true {
                let which =
                    bad.prefix(3).map { "\($0.application) on \($0.cluster)" }.joined(separator: ", ")
                    + (bad.count > 3 ? " and \(bad.count - 3) more" : "")
                halt(&plan, stage: stages[k], reason: "Degraded", message: "\(which) turned Degraded running \(release)", now: now)
            }
            break
        }
        if let halted = plan.status.halted, let h = index(halted.stage) {
            plan.deliver = targets(0..<h)
            plan.rollBack = targets(h..<max(h + 1, started))
            plan.status.healthySince = nil
            plan.status.waiting = "Delivery of \(release) stopped at stage \(halted.stage) (\(halted.reason)); a new release starts over"
            return plan
        }
        plan.deliver = targets(0..<started)
        if paused {
            plan.status.waiting = "Paused (annotation \(MeteorAnnotations.rollout)=paused)" + (plan.status.stage.map { " at stage \($0)" } ?? "")
            return plan
        }
        guard plan.status.completed != true else {
            plan.status.waiting = nil
            return plan
        }

        var i = current
        while true {
            let stage = stages[i]
            let ds = stage.targets.flatMap { t in (devices[t] ?? []).map { (t, $0) } }
            let empty = stage.targets.filter { (devices[$0] ?? []).isEmpty }
            let good = ds.filter { $0.1.healthy(at: wanted[$0.0]) }.count
            guard empty.isEmpty, good == ds.count else {
                plan.status.healthySince = nil
                plan.status.waiting =
                    "Stage \(stage.name): \(good) of \(ds.count) Application(s) synced and healthy at \(release)"
                    + (empty.isEmpty ? "" : "; no cluster for \(empty.joined(separator: ", "))")
                return plan
            }
            let since = plan.status.healthySince ?? now
            plan.status.healthySince = since
            let remaining = Double(stage.soakSeconds ?? 0) - now.timeIntervalSince(since)
            if remaining > 0 {
                plan.status.waiting = "Stage \(stage.name): healthy since \(KubeTime.format(since)), soaking \(Int(remaining.rounded(.up)))s more"
                plan.requeueAfter = .milliseconds(Int64(remaining * 1000) + 1)
                return plan
            }
            var passed = ""
            if let g = stage.gate {
                let run = gateRunName(meteor: meteor, stage: stage.name, delivery: id)
                plan.status.gateRun = run
                let state = gate(run)
                switch state?.outcome {
                case .succeeded?:
                    passed = ", gate \(run) passed"
                case .failed?:
                    halt(
                        &plan, stage: stage, reason: "GateFailed",
                        message:
                            "gate PipelineRun \(run) (\(g.pipelineRef)) failed: \(ObjectHelpers.truncated(state!.message.isEmpty ? state!.reason : state!.message, maxBytes: 512))",
                        now: now)
                    plan.deliver = targets(0..<i)
                    plan.rollBack = Set(stage.targets)
                    plan.status.waiting = "Delivery of \(release) stopped at stage \(stage.name) (GateFailed); a new release starts over"
                    return plan
                default:
                    plan.gate = (stage, run)
                    plan.status.waiting = "Stage \(stage.name): gate PipelineRun \(run) (\(g.pipelineRef)) is \(state?.reason ?? "starting")"
                    return plan
                }
            }
            // Proven there: what the stage's targets return to when a later release fails.
            remember(&plan, stage.targets, wanted)
            plan.status.healthySince = nil
            plan.status.gateRun = nil
            plan.status.since = now
            if i + 1 == stages.count {
                plan.status.stage = nil
                plan.status.completed = true
                plan.status.waiting = nil
                plan.events.append(
                    .init(
                        warning: false, reason: "RolloutCompleted",
                        message: "\(release) runs on every stage (\(stages.map(\.name).joined(separator: ", ")))"))
                return plan
            }
            i += 1
            plan.status.stage = stages[i].name
            plan.deliver.formUnion(stages[i].targets)
            plan.events.append(
                .init(
                    warning: false, reason: "RolloutStageStarted",
                    message: "Stage \(stages[i].name) gets \(release): stage \(stage.name) was healthy for \(stage.soakSeconds ?? 0)s\(passed)"))
        }
    }

    static func remember(_ plan: inout RolloutPlan, _ targets: [String], _ wanted: [String: EdgeDelivered]) {
        var last = plan.status.lastHealthy ?? []
        for target in targets {
            guard var delivered = wanted[target] else { continue }
            delivered.target = target
            if let i = last.firstIndex(where: { $0.target == target }) { last[i] = delivered } else { last.append(delivered) }
        }
        plan.status.lastHealthy = last.sorted { $0.target < $1.target }
    }

    static func halt(_ plan: inout RolloutPlan, stage: Edge.Rollout.Stage, reason: String, message: String, now: Date) {
        plan.status.halted = .init(stage: stage.name, reason: reason, message: message, time: now)
        plan.events.append(
            .init(
                warning: true, reason: "RolledBack",
                message: "\(message): stage \(stage.name) returns to what last ran healthy there; delivery of this release stops"))
    }
}

extension MeteorReconciler {
    /// Plans a staged rollout from what the Applications report, creates the gate run it asks for, and tells the
    /// user what happened.
    func planRollout(
        _ rollout: Edge.Rollout, meteor: Meteor, edge: Edge, raw: JSONValue, placements: [EdgePlacement], wanted: (Edge.Target) -> EdgeDelivered?,
        previous: EdgeRolloutStatus?, release: String, settings: EdgeSettings, now: Date
    ) async throws -> RolloutPlan {
        let namespace = meteor.namespace ?? "default"
        var everyTarget: [String: EdgeDelivered]? = [:]
        for t in edge.targets {
            guard let w = wanted(t) else { everyTarget = nil; break }
            everyTarget?[t.name] = w
        }
        var devices: [String: [RolloutPlanner.Device]] = [:]
        for p in placements {
            // Missing or being removed: a device that runs nothing yet.
            let app = placedApplication(p, of: meteor, settings: settings).flatMap { $0[path: "metadata", "deletionTimestamp"] == nil ? $0 : nil }
            devices[p.target.name, default: []].append(
                .init(
                    application: p.application(meteorNamespace: namespace, meteor: meteor.name), cluster: p.cluster,
                    state: ApplicationState(app ?? .object([:])), given: app.flatMap { EdgeDelivered(application: $0, target: p.target.name) }))
        }
        let paused = meteor.metadata.annotations?[MeteorAnnotations.rollout] == "paused"
        let plan = RolloutPlanner.plan(
            rollout, previous: previous, wanted: everyTarget, release: release, devices: devices,
            gate: { name in self.ownRun(ObjectKey(namespace: meteor.namespace, name: name), uid: meteor.metadata.uid).map(PipelineRunState.init) },
            paused: paused, meteor: meteor.name, now: now)
        for e in plan.events { await events.record(raw, type: e.warning ? .warning : .normal, reason: e.reason, message: e.message) }
        if let (stage, run) = plan.gate, let gate = stage.gate, let everyTarget {
            let images = stage.targets.compactMap { everyTarget[$0]?.image }
            let clusters = placements.filter { stage.targets.contains($0.target.name) }.map(\.cluster)
            var settings: BuildSettings?
            let (_, created) = try await createRunIfMissing(run, of: meteor, settings: &settings) {
                EdgePipelineRunBuilder.gate(
                    meteor: meteor, owner: raw, name: run, stage: stage.name, pipelineRef: gate.pipelineRef,
                    commit: everyTarget.values.first?.revision ?? meteor.spec.ref, images: Array(Set(images)).sorted(),
                    clusters: Array(Set(clusters)).sorted(), settings: $0)
            }
            if created {
                await events.record(
                    raw, type: .normal, reason: .gateStarted, message: "Started gate PipelineRun \(run) (\(gate.pipelineRef)) for stage \(stage.name)"
                )
            }
        }
        return plan
    }
}
