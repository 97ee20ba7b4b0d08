import Foundation
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// The impact metrics on /metrics follow what happens to Meteors and their PipelineRuns.
@Suite struct MeteorMetricsTests {
    @Test func buildsReadinessAndPhasesAreCounted() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            func scrape() -> String { env.manager.metrics.render() }
            #expect(scrape().contains(#"meteor_meteors{phase="Ready"} 0"#))
            _ = try await c.meteors.create([
                "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "m"],
                "spec": ["url": "https://github.com/a/b", "ref": "main", "pipelines": ["jupyterhub", "jupyterbook"]],
            ])
            let hub = PipelineRunBuilder.name(meteor: "m", pipeline: .jupyterhub, generation: 1)
            let book = PipelineRunBuilder.name(meteor: "m", pipeline: .jupyterbook, generation: 1)
            _ = try await c.waitFor(c.runs, hub) { $0 != nil }
            _ = try await c.waitFor(c.runs, book) { $0 != nil }
            try await c.tekton(hub, .running)
            try await c.tekton(hub, .succeeded, results: ["IMAGE_URL": "r/hub:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "1", count: 64)])
            try await c.tekton(book, .running)
            try await c.tekton(book, .failed, message: "jupyter-book build: exit 1")
            _ = try await c.waitFor(c.meteors, "m") { $0?[path: "status", "phase"] == "Failed" }
            try await env.reconciler.meteors.waitUntil { ($0.get(ObjectKey(namespace: "default", name: "m"))?[path: "status", "phase"]) == "Failed" }
            let text = scrape()
            #expect(text.contains(#"meteor_meteors{phase="Failed"} 1"#), "\(text)")
            #expect(text.contains(#"meteor_meteors{phase="Building"} 0"#))
            #expect(text.contains(#"meteor_created_total 1"#))
            #expect(text.contains(#"meteor_pipeline_runs_total{pipeline="jupyterhub",result="succeeded"} 1"#))
            #expect(text.contains(#"meteor_pipeline_runs_total{pipeline="jupyterbook",result="failed"} 1"#))
            #expect(text.contains(#"meteor_pipeline_duration_seconds_count{pipeline="jupyterhub"} 1"#))
            #expect(text.contains("meteor_time_to_ready_seconds_count 0") || !text.contains("meteor_time_to_ready_seconds_count"))
        }
    }

    /// A scripted day: one Meteor becomes Ready, one fails, one becomes Ready and then expires. Every impact
    /// metric then has exactly the value that sequence implies.
    @Test func aScriptedSequenceGivesExactValues() async throws {
        let skew = Observed<TimeInterval>(0)
        try await MeteorEnvironment.with(configure: { $0.now = { Date().addingTimeInterval(skew.value) } }) { env in
            let c = env.cluster
            func run(_ meteor: String, _ pipeline: Pipeline) -> String { PipelineRunBuilder.name(meteor: meteor, pipeline: pipeline, generation: 1) }
            func cached(_ name: String, _ condition: @escaping @Sendable (JSONValue?) -> Bool) async throws {
                try await env.reconciler.meteors.waitUntil { condition($0.get(ObjectKey(namespace: "default", name: name))) }
            }
            let digest = "sha256:" + String(repeating: "2", count: 64)
            _ = try await c.meteors.create(sampleMeteor("ready", pipelines: ["jupyterhub", "jupyterbook"]))
            _ = try await c.meteors.create(sampleMeteor("failed", pipelines: ["jupyterbook"]))
            _ = try await c.meteors.create(sampleMeteor("expired", ttl: 600, pipelines: ["jupyterhub"]))
            for (meteor, pipeline) in [("ready", Pipeline.jupyterhub), ("ready", .jupyterbook), ("failed", .jupyterbook), ("expired", .jupyterhub)] {
                _ = try await c.waitFor(c.runs, run(meteor, pipeline)) { $0 != nil }
                try await c.tekton(run(meteor, pipeline), .running)
            }
            try await c.tekton(run("ready", .jupyterhub), .succeeded, results: ["IMAGE_URL": "r/ready:g1", "IMAGE_DIGEST": digest])
            try await c.tekton(
                run("ready", .jupyterbook), .succeeded,
                results: ["IMAGE_URL": "r/ready-book:g1", "IMAGE_DIGEST": digest, "URL": "http://ready-book/"])
            try await c.tekton(run("failed", .jupyterbook), .failed, message: "jupyter-book build: exit 1")
            try await c.tekton(run("expired", .jupyterhub), .succeeded, results: ["IMAGE_URL": "r/expired:g1", "IMAGE_DIGEST": digest])
            try await cached("ready") { $0?[path: "status", "phase"] == "Ready" }
            try await cached("failed") { $0?[path: "status", "phase"] == "Failed" }
            try await cached("expired") { $0?[path: "status", "phase"] == "Ready" }
            // Ten minutes pass: the TTL runs out.
            skew.update { $0 = 601 }
            #expect(try await env.reconciler.reconcile(ObjectKey(namespace: "default", name: "expired")) == .done)
            try await cached("expired") { $0 == nil }
            // The manager's own worker may be the one that deleted it (an event of the Meteor queued it after the
            // clock moved): its Expired Event comes after the count.
            _ = try await c.waitForEvent(about: "expired", reason: "Expired")

            let text = env.manager.metrics.render()
            let samples = Dictionary(
                text.split(separator: "\n").filter { $0.hasPrefix("meteor_") && !$0.contains("_bucket{") && !$0.contains("_sum") }.map {
                    line -> (String, String) in
                    let parts = line.split(separator: " ")
                    return (String(parts.dropLast().joined(separator: " ")), String(parts.last!))
                }, uniquingKeysWith: { a, _ in a })
            let expected: [String: String] = [
                #"meteor_meteors{phase="Pending"}"#: "0.0",
                #"meteor_meteors{phase="Building"}"#: "0.0",
                #"meteor_meteors{phase="Ready"}"#: "1.0",
                #"meteor_meteors{phase="Failed"}"#: "1.0",
                "meteor_created_total": "3",
                "meteor_expired_total": "1",
                #"meteor_pipeline_runs_total{pipeline="jupyterhub",result="succeeded"}"#: "2",
                #"meteor_pipeline_runs_total{pipeline="jupyterbook",result="succeeded"}"#: "1",
                #"meteor_pipeline_runs_total{pipeline="jupyterbook",result="failed"}"#: "1",
                #"meteor_pipeline_duration_seconds_count{pipeline="jupyterhub"}"#: "2",
                #"meteor_pipeline_duration_seconds_count{pipeline="jupyterbook"}"#: "2",
                "meteor_time_to_ready_seconds_count": "2",
            ]
            // Gauges print as floating point, counters as integers (Prometheus text format from swift-prometheus).
            #expect(samples == expected, "\(text)")
        }
    }
}
