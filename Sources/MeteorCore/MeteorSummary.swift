import Foundation
import KubeClient
import KubeModels
import KubeRuntime

/// A Meteor's status from what its runs and its edge delivery report: a pure function of them, tested without a
/// server. Which conditions it carries, its phase and stage, and the Ready condition that sums them up.
enum MeteorSummary {
    /// One pipeline's run, and its entry in `status.pipelines`.
    struct Run {
        var pipeline: Pipeline
        var state: PipelineRunState?
        var entry: Meteor.PipelineStatus

        /// `state` nil: the run is not created, or not seen, yet.
        init(pipeline: Pipeline, runName: String, state: PipelineRunState?) {
            self.pipeline = pipeline
            self.state = state
            entry = Meteor.PipelineStatus(name: pipeline.rawValue, pipelineRunName: runName)
            guard let state else {
                entry.ready = .unknown
                entry.reason = "Pending"
                return
            }
            entry.ready = state.outcome.conditionStatus
            entry.reason = state.reason
            entry.message = state.outcome == .failed ? state.failureText(maxBytes: MeteorStatusVocabulary.maxEntryMessageBytes) : nil
            entry.startTime = state.startTime
            entry.completionTime = state.completionTime
            entry.image = state.results["IMAGE_URL"]
            entry.digest = state.results["IMAGE_DIGEST"]
            entry.url = state.results["URL"]
        }
    }

    struct Summary {
        var status: Meteor.Status
        var ready: Condition
        /// Whether Ready turned (status or reason): what an Event is recorded for.
        var readyChanged: Bool
    }

    /// A spec the operator cannot act on: Failed, with every problem in Ready's message, and nothing of earlier
    /// runs or deliveries that would describe another spec.
    static func invalid(_ previous: Meteor.Status, problems: [SpecProblem], now: Date) -> Summary {
        var status = previous
        var conditions = status.conditions ?? []
        let ready = Condition(
            type: MeteorStatusVocabulary.readyCondition, status: .false, observedGeneration: previous.observedGeneration ?? 1,
            lastTransitionTime: now, reason: MeteorStatusVocabulary.invalidSpec, message: problems.map(\.description).joined(separator: "; "))
        let changed = ObjectHelpers.setCondition(&conditions, ready)
        status.conditions = conditions
        status.phase = .failed
        status.pipelines = nil
        status.stage = nil
        status.images = nil
        status.imageIndexes = nil
        status.deployments = nil
        return Summary(status: status, ready: ready, readyChanged: changed)
    }

    /// The status `runs` and `edge` add up to: a condition per pipeline (and edge's three), Ready, the phase and
    /// stage; conditions of pipelines no longer requested are dropped. `previous` keeps transition times.
    static func summarise(_ previous: Meteor.Status, runs: [Run], edge: EdgeOutcome?, now: Date) -> Summary {
        let generation = previous.observedGeneration ?? 1
        func condition(_ type: String, _ status: Condition.Status, _ reason: String, _ message: String) -> Condition {
            Condition(type: type, status: status, observedGeneration: generation, lastTransitionTime: now, reason: reason, message: message)
        }
        var status = previous
        var conditions = status.conditions ?? []
        var failed: [String] = []
        var succeeded: [String] = []
        var running: [String] = []
        for run in runs {
            let name = run.pipeline.rawValue
            let type = run.pipeline.conditionType
            switch run.state?.outcome {
            case .succeeded?:
                succeeded.append(name)
                ObjectHelpers.setCondition(&conditions, condition(type, .true, "Succeeded", "PipelineRun \(run.entry.pipelineRunName) succeeded"))
            case .failed?:
                failed.append(name)
                let text = run.state!.failureText(maxBytes: MeteorStatusVocabulary.maxConditionMessageBytes)
                ObjectHelpers.setCondition(&conditions, condition(type, .false, "PipelineFailed", text))
            default:
                running.append(name)
                ObjectHelpers.setCondition(
                    &conditions,
                    condition(type, .unknown, "PipelineRunning", "PipelineRun \(run.entry.pipelineRunName) is \(run.state?.reason ?? "Pending")"))
            }
        }
        let edgeFailure = edge?.conditions.first { $0.status == .false }
        if let edge {
            for c in edge.conditions { ObjectHelpers.setCondition(&conditions, c) }
            if edgeFailure != nil {
                failed.append(Pipeline.edge.rawValue)
            } else if edge.conditions.allSatisfy({ $0.status == .true }) {
                succeeded.append(Pipeline.edge.rawValue)
            } else {
                running.append(Pipeline.edge.rawValue)
            }
        }
        let ready: Condition
        if !failed.isEmpty {
            status.phase = .failed
            let why = Dictionary(runs.compactMap { r in r.state?.failure.map { (r.pipeline.rawValue, $0) } }, uniquingKeysWith: { a, _ in a })
            let detail = failed.map { name in
                if name == Pipeline.edge.rawValue { return "edge (\(edgeFailure.map { "\($0.type): \($0.reason)" } ?? ""))" }
                return why[name].map { "\(name) (\($0))" } ?? name
            }
            let reason = failed == [Pipeline.edge.rawValue] ? (edgeFailure?.reason ?? "EdgeFailed") : "PipelineFailed"
            ready = condition(MeteorStatusVocabulary.readyCondition, .false, reason, "Failed: \(detail.joined(separator: ", "))")
        } else if running.isEmpty {
            status.phase = .ready
            ready = condition(
                MeteorStatusVocabulary.readyCondition, .true, "Succeeded", "All pipelines succeeded: \(succeeded.joined(separator: ", "))")
        } else {
            status.phase = .building
            ready = condition(MeteorStatusVocabulary.readyCondition, .false, "Building", "Waiting for: \(running.joined(separator: ", "))")
        }
        let readyChanged = ObjectHelpers.setCondition(&conditions, ready)
        var wanted = Set(runs.map(\.pipeline.conditionType) + [MeteorStatusVocabulary.readyCondition])
        if edge != nil {
            wanted.formUnion([MeteorStatusVocabulary.imagesBuilt, MeteorStatusVocabulary.imagesVerified, MeteorStatusVocabulary.deployed])
        }
        conditions.removeAll { !wanted.contains($0.type) }
        status.conditions = conditions
        status.pipelines = runs.map(\.entry)
        status.release = edge?.release
        status.images = edge.map(\.images)
        status.imageIndexes = edge.flatMap { $0.indexes.isEmpty ? nil : $0.indexes }
        status.deployments = edge.map(\.deployments)
        status.targets = edge.map(\.targets)
        status.rollout = edge?.rollout
        status.stage = Meteor.Stage(
            running: running.isEmpty ? nil : running, succeeded: succeeded.isEmpty ? nil : succeeded, failed: failed.isEmpty ? nil : failed)
        return Summary(status: status, ready: ready, readyChanged: readyChanged)
    }
}

extension MeteorReconciler {
    /// Merge-patches the Meteor's status when it differs from `raw`'s: a steady Meteor costs no write. A Meteor
    /// deleted while it was worked on (a 404) has nothing left to say; its delete event is already queued.
    func writeStatus(_ status: Meteor.Status, of raw: JSONValue) async throws {
        let desired = try JSONValue(encoding: status)
        _ = try await ignoreNotFound { try await cache.patchStatusIfChanged(raw, Meteor.resourceType, status: desired) }
    }
}
