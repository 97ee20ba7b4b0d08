import Foundation
import KubeModels
import KubeTestSupport
import MeteorBenchmarks
import Testing

/// Every meteor-bench scenario at N = 200, checking what each must establish (not how fast): all converged with
/// their runs and status, no writes in steady state, everything Ready after the Tekton events, a restart that
/// writes nothing. Timings are BENCHMARKS.md's business, not the tests'.
@Suite struct BenchmarkScenarioTests {
    /// On the real backend, a control plane of its own with Tekton's CRDs but no Tekton controller: the scenarios
    /// play Tekton themselves, and the shared controller would reconcile their runs too.
    @Test(arguments: Backend.testable) func everyScenarioHoldsItsInvariantsAtSmallN(_ backend: Backend) async throws {
        var options = ScenarioOptions()
        options.kit = backend == .real
        E2ETally.record(backend == .real ? .real : .embedded)
        options.count = 200
        options.steadySeconds = 1
        options.timeout = .seconds(120)
        let results = try await Scenarios.run(options)
        let byName = Dictionary(uniqueKeysWithValues: results.map { ($0["scenario"]!.stringValue!, $0) })
        #expect(Set(byName.keys) == Set(ScenarioOptions.all))
        let converge = try #require(byName["converge"])
        let probes = converge["latency_probes"]?.intValue ?? 0
        #expect(probes >= 10)
        #expect(converge["converged"]?.intValue == 200 + probes)
        #expect(converge["ratio"]?.doubleValue ?? 0 > 0)
        // Per Meteor: its two PipelineRuns, one status write and one event. (A loaded
        // machine may let the own-write memory lapse before the cache catches up: a rare repeat is tolerated, not more.)
        let runs = converge[path: "writes_by_resource_per_meteor", "POST pipelineruns"]?.doubleValue ?? 0
        let status = converge[path: "writes_by_resource_per_meteor", "PATCH meteors/status"]?.doubleValue ?? 0
        #expect(runs >= 2 && runs <= 2.5, "\(runs) PipelineRun creates per Meteor")
        #expect(status >= 1 && status <= 1.5, "\(status) status writes per Meteor")
        #expect((1...1.5).contains(converge[path: "writes_by_resource_per_meteor", "POST events"]?.doubleValue ?? 0))
        // The only reads outside the caches: the build prerequisites' ServiceAccount lookup, one per namespace per
        // 30 s (0.01 per Meteor at this count), not one per Meteor.
        #expect(converge[path: "requests_per_meteor", "GET"]?.doubleValue ?? 0 <= 0.02)
        // The baseline makes the operator's writes, its Event included; the client profile counts the operator's
        // own requests (two PipelineRuns and an Event per Meteor are POSTs, its status write a PATCH).
        #expect(byName["baseline"]?["writes_per_meteor"] == 5)
        let posts = converge[path: "client", "latency_by_verb", "POST", "requests"]?.intValue ?? 0
        let patches = converge[path: "client", "latency_by_verb", "PATCH", "requests"]?.intValue ?? 0
        #expect(posts >= 3 * 200 && patches >= 200, "\(posts) POSTs, \(patches) PATCHes")
        #expect((converge[path: "client", "mean_in_flight"]?.doubleValue ?? 0) > 0)
        #expect(byName["steady"]?["writes"] == 0)
        #expect(byName["steady"]?["reads"] == 0)
        #expect(byName["pipeline-events"]?["ready"]?.intValue == 200 + probes)
        #expect(byName["startup"]?["writes_at_startup"] == 0)
        #expect((byName["startup"]?["objects"]?.intValue ?? 0) >= 3 * (200 + probes))
        let table = BenchmarkTable.markdown(results, command: "meteor-bench --count 200")
        #expect(table.split(separator: "\n").filter { $0.hasPrefix("| ") }.count == 2 + ScenarioOptions.all.count)
    }
}
