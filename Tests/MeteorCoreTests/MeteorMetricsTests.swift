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
            _ = try await c.meteors.create(["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "m"], "spec": ["url": "https://github.com/a/b", "ref": "main", "pipelines": ["jupyterhub", "jupyterbook"]]])
            let hub = PipelineRunBuilder.name(meteor: "m", pipeline: .jupyterhub, generation: 1)
            let book = PipelineRunBuilder.name(meteor: "m", pipeline: .jupyterbook, generation: 1)
            _ = try await c.waitFor(c.runs, hub) { $0 != nil }
            _ = try await c.waitFor(c.runs, book) { $0 != nil }
            try await c.tekton(hub, "Running")
            try await c.tekton(hub, "Succeeded", results: ["IMAGE_URL": "r/hub:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "1", count: 64)])
            try await c.tekton(book, "Running")
            try await c.tekton(book, "Failed", message: "jupyter-book build: exit 1")
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
}
