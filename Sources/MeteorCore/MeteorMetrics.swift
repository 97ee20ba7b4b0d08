import Foundation
import KubeModels
import KubeRuntime
import Metrics
import Synchronization

/// The impact ("Telescope") metrics, beside the runtime's on `/metrics`. Counters count transitions the operator
/// observes while it runs (a restart re-lists objects without counting them again); gauges are kept from informer
/// events, so a scrape never walks the cache.
public final class MeteorMetrics: Sendable {
    /// Histogram buckets for the durations here (builds take minutes, not milliseconds).
    public static let histogramBuckets: [String: [Duration]] = [
        "meteor_pipeline_duration_seconds": [10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200].map { .seconds($0) },
        "meteor_time_to_ready_seconds": [10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200].map { .seconds($0) },
    ]

    let factory: any MetricsFactory
    let started: Date
    let phases = Mutex<[String: Int]>([:])
    let health = Mutex<[String: Int]>([:])

    public init(factory: any MetricsFactory, started: Date = Date()) {
        self.factory = factory
        self.started = started
        // Every phase is exported from the start, so dashboards show 0 rather than no data.
        for phase in MeteorPhase.allCases.map(\.rawValue) {
            Gauge(label: "meteor_meteors", dimensions: [("phase", phase)], factory: factory).record(0)
        }
        _ = Counter(label: "meteor_created_total", factory: factory)
        _ = Counter(label: "meteor_expired_total", factory: factory)
    }

    /// Feeds the metrics from the operator's informers.
    public func observe(meteors: DynamicInformer, pipelineRuns: DynamicInformer) async {
        await meteors.addHandler { [self] event in
            switch event {
            case .added(let m):
                move(phase: nil, to: Self.phase(m))
                moveDeployments(from: [], to: Self.deploymentHealth(m))
                if let created = m[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse),
                    created >= started.addingTimeInterval(-1)
                {
                    Counter(label: "meteor_created_total", factory: factory).increment()
                }
            case .updated(let old, let new):
                move(phase: Self.phase(old), to: Self.phase(new))
                moveDeployments(from: Self.deploymentHealth(old), to: Self.deploymentHealth(new))
                if !Self.isReady(old), Self.isReady(new),
                    let created = new[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse)
                {
                    Metrics.Timer(label: "meteor_time_to_ready_seconds", preferredDisplayUnit: .seconds, factory: factory)
                        .recordNanoseconds(Int64(max(0, Date().timeIntervalSince(created)) * 1e9))
                }
            case .deleted(let m):
                move(phase: Self.phase(m), to: nil)
                moveDeployments(from: Self.deploymentHealth(m), to: [])
            }
        }
        await pipelineRuns.addHandler { [self] event in
            guard case .updated(let old, let new) = event else { return }
            let before = PipelineRunState(old), after = PipelineRunState(new)
            guard before.outcome == .running, after.outcome != .running else { return }
            let pipeline = new[path: "metadata", "labels", MeteorLabels.pipeline]?.stringValue ?? "unknown"
            let result = after.outcome == .succeeded ? "succeeded" : (after.reason.hasPrefix("Cancelled") ? "cancelled" : "failed")
            Counter(label: "meteor_pipeline_runs_total", dimensions: [("pipeline", pipeline), ("result", result)], factory: factory).increment()
            if let start = after.startTime, let end = after.completionTime {
                Metrics.Timer(
                    label: "meteor_pipeline_duration_seconds", dimensions: [("pipeline", pipeline)], preferredDisplayUnit: .seconds, factory: factory
                )
                .recordNanoseconds(Int64(max(0, end.timeIntervalSince(start)) * 1e9))
            }
        }
    }

    func expired() { Counter(label: "meteor_expired_total", factory: factory).increment() }

    func verification(_ result: String) {
        Counter(label: "meteor_signature_verifications_total", dimensions: [("result", result)], factory: factory).increment()
    }

    func move(phase old: String?, to new: String?) {
        guard old != new else { return }
        let updated = phases.withLock { counts -> [(String, Int)] in
            if let old { counts[old, default: 0] -= 1 }
            if let new { counts[new, default: 0] += 1 }
            return [old, new].compactMap { $0 }.map { ($0, counts[$0] ?? 0) }
        }
        for (phase, count) in updated { Gauge(label: "meteor_meteors", dimensions: [("phase", phase)], factory: factory).record(count) }
    }

    func moveDeployments(from old: [String], to new: [String]) {
        guard old != new else { return }
        let updated = health.withLock { counts -> [(String, Int)] in
            for h in old { counts[h, default: 0] -= 1 }
            for h in new { counts[h, default: 0] += 1 }
            return Set(old + new).map { ($0, counts[$0] ?? 0) }
        }
        for (h, count) in updated { Gauge(label: "meteor_edge_deployments", dimensions: [("health", h)], factory: factory).record(count) }
    }

    static func phase(_ m: JSONValue) -> String { MeteorGlance(m).phase }
    static func isReady(_ m: JSONValue) -> Bool { MeteorGlance(m).isReady }
    public static func deploymentHealth(_ m: JSONValue) -> [String] {
        (m[path: "status", "deployments"]?.arrayValue ?? []).map { $0["healthStatus"]?.stringValue ?? "Unknown" }
    }
}
