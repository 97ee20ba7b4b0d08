import Foundation
import KubeModels
import Testing

@testable import MeteorCore

/// `MeteorSummary`: the status a Meteor's runs and edge delivery add up to, without a server.
@Suite struct MeteorSummaryTests {
    let now = Date(timeIntervalSince1970: 1_000_000)

    func run(_ outcome: String?, reason: String = "Running", message: String = "", results: [String: String] = [:]) -> PipelineRunState? {
        guard let outcome else { return nil }
        var status: JSONObject = [
            "conditions": [["type": "Succeeded", "status": .string(outcome), "reason": .string(reason), "message": .string(message)]]
        ]
        status["results"] = .array(results.map { ["name": .string($0.key), "value": .string($0.value)] })
        return PipelineRunState(["status": .object(status)])
    }

    func previous(generation: Int64 = 3) -> Meteor.Status {
        var s = Meteor.Status()
        s.observedGeneration = generation
        return s
    }

    @Test func allSucceededIsReadyWithEachPipelinesEntry() {
        let digest = "sha256:" + String(repeating: "a", count: 64)
        let runs = [
            MeteorSummary.Run(
                pipeline: .jupyterhub, runName: "m-jupyterhub-g3",
                state: run("True", reason: "Succeeded", results: ["IMAGE_URL": "r/m:g3", "IMAGE_DIGEST": digest])),
            MeteorSummary.Run(pipeline: .jupyterbook, runName: "m-jupyterbook-g3", state: run("True", reason: "Succeeded")),
        ]
        let summary = MeteorSummary.summarise(previous(), runs: runs, edge: nil, now: now)
        #expect(summary.status.phase == .ready)
        #expect(summary.ready.status == .true && summary.ready.reason == "Succeeded" && summary.ready.observedGeneration == 3)
        #expect(summary.readyChanged)
        #expect(summary.status.pipelines?.map(\.ready) == [.true, .true])
        #expect(summary.status.pipelines?.first?.digest == digest)
        #expect(Set(summary.status.conditions?.map(\.type) ?? []) == ["JupyterHub", "JupyterBook", "Ready"])
        #expect(summary.status.stage?.succeeded == ["jupyterhub", "jupyterbook"])
        // The same again: nothing turned, so no Event.
        #expect(!MeteorSummary.summarise(summary.status, runs: runs, edge: nil, now: now.addingTimeInterval(60)).readyChanged)
    }

    @Test func aFailedRunFailsTheMeteorInItsOwnWordsEverywhereTheSameWay() {
        let long = String(repeating: "x", count: 5000)
        let runs = [
            MeteorSummary.Run(
                pipeline: .jupyterbook, runName: "m-jupyterbook-g3",
                state: run("False", reason: "Failed", message: long, results: ["BOOK_FAILURE": "no _toc.yml"])),
            MeteorSummary.Run(pipeline: .jupyterhub, runName: "m-jupyterhub-g3", state: nil),
        ]
        let summary = MeteorSummary.summarise(previous(), runs: runs, edge: nil, now: now)
        #expect(summary.status.phase == .failed)
        #expect(summary.ready.reason == "PipelineFailed" && summary.ready.message == "Failed: jupyterbook (no _toc.yml)")
        let entry = summary.status.pipelines?.first
        #expect(entry?.ready == .false)
        #expect(entry?.message?.hasPrefix("no _toc.yml (") == true)
        #expect(entry?.message?.utf8.count == MeteorStatusVocabulary.maxEntryMessageBytes)
        let condition = summary.status.conditions?.first { $0.type == "JupyterBook" }
        #expect(condition?.status == .false && condition?.message.utf8.count == MeteorStatusVocabulary.maxConditionMessageBytes)
        #expect(summary.status.pipelines?.last?.ready == .unknown && summary.status.pipelines?.last?.reason == "Pending")
        #expect(summary.status.stage?.failed == ["jupyterbook"] && summary.status.stage?.running == ["jupyterhub"])
    }

    @Test func edgeConditionsJoinTheSummaryAndDroppedPipelinesLoseTheirConditions() {
        var earlier = previous()
        earlier.conditions = [
            Condition(type: "JupyterHub", status: .true, observedGeneration: 2, lastTransitionTime: now, reason: "Succeeded", message: "old")
        ]
        var edge = EdgeOutcome()
        edge.conditions = [
            Condition(type: MeteorStatusVocabulary.imagesBuilt, status: .true, lastTransitionTime: now, reason: "Built", message: ""),
            Condition(type: MeteorStatusVocabulary.imagesVerified, status: .false, lastTransitionTime: now, reason: "KeyNotTrusted", message: ""),
            Condition(type: MeteorStatusVocabulary.deployed, status: .unknown, lastTransitionTime: now, reason: "AwaitingVerification", message: ""),
        ]
        let summary = MeteorSummary.summarise(earlier, runs: [], edge: edge, now: now)
        #expect(summary.status.phase == .failed)
        #expect(summary.ready.reason == "KeyNotTrusted" && summary.ready.message == "Failed: edge (ImagesVerified: KeyNotTrusted)")
        #expect(!(summary.status.conditions ?? []).contains { $0.type == "JupyterHub" })
        #expect(summary.status.images == [])
    }

    @Test func anInvalidSpecClearsWhatDescribedAnotherSpec() {
        var earlier = previous()
        earlier.pipelines = [Meteor.PipelineStatus(name: "jupyterhub", pipelineRunName: "m-jupyterhub-g2")]
        let summary = MeteorSummary.invalid(earlier, problems: [SpecProblem(field: "spec.ref", message: "bad")], now: now)
        #expect(summary.status.phase == .failed && summary.status.pipelines == nil)
        #expect(summary.ready.reason == "InvalidSpec" && summary.ready.message.contains("spec.ref"))
        #expect(summary.readyChanged)
    }

    @Test func oneReaderOfPhaseAndReady() {
        let failed: JSONValue = [
            "status": [
                "phase": "Failed", "conditions": [["type": "Ready", "status": "False", "message": "Failed: jupyterbook"]],
                "pipelines": [["name": "jupyterbook", "ready": "False", "message": "no _toc.yml"], ["name": "jupyterhub", "ready": "True"]],
            ]
        ]
        let glance = MeteorGlance(failed)
        #expect(glance.phase == "Failed" && glance.ready == .false && !glance.isReady)
        #expect(glance.problem == "jupyterbook: no _toc.yml")
        #expect(MeteorGlance([:]).phase == "Pending" && MeteorGlance([:]).ready == nil && MeteorGlance([:]).problem == nil)
    }
}
