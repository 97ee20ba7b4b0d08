import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import MeteorSandbox
import KubeTestSupport

/// Where a benchmark runs: the embedded API server (default) or a real cluster, in namespaces of its own that it
/// deletes afterwards.
public final class BenchTarget: Sendable {
    public let client: KubeClient
    public let cluster: ClusterConfiguration
    public let kubeconfigPath: String
    public let namespace: String
    public let baselineNamespace: String
    public let server: EmbeddedAPIServer?
    /// A control plane of the kit's (real etcd and kube-apiserver) started for this run, stopped by `cleanUp`.
    public let plane: KitControlPlane?

    /// The embedded server by default; `kubeconfig`, a cluster that has the Meteor and PipelineRun CRDs; `kit`, a
    /// fresh control plane of `../shared/kit` with them installed (no Tekton controller: the scenarios play Tekton).
    public static func start(kubeconfig: String?, kit: Bool = false, logger: Logger) async throws -> BenchTarget {
        let suffix = String(UUID().uuidString.lowercased().prefix(6))
        var server: EmbeddedAPIServer?
        var plane: KitControlPlane?
        let path: String
        if let kubeconfig {
            path = kubeconfig
        } else if kit {
            let dedicated = try await KitControlPlane.startDedicated()
            plane = dedicated
            for crd in ["crds/meteor.zone_meteors.yaml", "crds/tekton/300-pipelinerun.yaml"] { try await dedicated.install(crd) }
            path = dedicated.kubeconfigPath
        } else {
            let embedded = try EmbeddedAPIServer(configuration: .init(historyLimit: 200_000))
            guard let repository = Sandbox.locateRepository() else { throw BenchError("cannot find the checkout's crds/ (run from the repository)") }
            try Sandbox.installCRDs(
                embedded, repository: repository, upstream: Sandbox.defaultUpstreamCRDs(repository: repository), argo: false, logger: logger)
            try await embedded.start()
            path = FileManager.default.temporaryDirectory.appendingPathComponent("meteor-bench-\(suffix).kubeconfig").path
            try embedded.kubeconfig().write(toFile: path, atomically: true, encoding: .utf8)
            server = embedded
        }
        let cluster = try KubeConfigLoader.load(.init(kubeconfigPath: path))
        var options = KubeClient.Options()
        options.qps = 0
        options.userAgent = "meteor-bench"
        let client = try KubeClient(configuration: cluster, options: options)
        let target = BenchTarget(
            client: client, cluster: cluster, kubeconfigPath: path, namespace: "meteor-bench-\(suffix)",
            baselineNamespace: "meteor-bench-\(suffix)-baseline", server: server, plane: plane)
        let namespaces = client.api(Namespace.self)
        for ns in [target.namespace, target.baselineNamespace] { _ = try await namespaces.create(Namespace(metadata: ObjectMeta(name: ns))) }
        return target
    }

    init(
        client: KubeClient, cluster: ClusterConfiguration, kubeconfigPath: String, namespace: String, baselineNamespace: String,
        server: EmbeddedAPIServer?, plane: KitControlPlane?
    ) {
        self.plane = plane
        self.client = client
        self.cluster = cluster
        self.kubeconfigPath = kubeconfigPath
        self.namespace = namespace
        self.baselineNamespace = baselineNamespace
        self.server = server
    }

    /// Deletes the benchmark's namespaces (and with them everything it made), stops the embedded server.
    public func cleanUp() async {
        for ns in [namespace, baselineNamespace] { _ = try? await client.api(Namespace.self).delete(ns) }
        try? await client.shutdown()
        if let server {
            await server.stop()
            try? FileManager.default.removeItem(atPath: kubeconfigPath)
        }
        await plane?.stop()
    }

    /// Requests the server's priority and fairness rejected (429) so far, from its `/metrics`; nil where the server
    /// has no such metric (the embedded server: its 429s are injected faults, counted by the client).
    public func serverRejections() async -> Double? {
        guard let response = try? await client.send(.GET, "/metrics", accept: "text/plain") else { return nil }
        let text = String(decoding: response.body, as: UTF8.self)
        let e = ClientProfile.Exposition(text)
        guard e.samples.contains(where: { $0.name.hasPrefix("apiserver_flowcontrol_") }) else { return nil }
        return e.sum("apiserver_flowcontrol_rejected_requests_total")
    }

    public var meteors: DynamicApi { client.dynamic(Meteor.resourceType, namespace: namespace) }
    public var runs: DynamicApi { client.dynamic(PipelineRunBuilder.resourceType, namespace: namespace) }
}

public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs `op(i)` for i in 0..<n with at most `width` in flight.
func parallel(_ n: Int, width: Int, _ op: @escaping @Sendable (Int) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var next = 0
        for _ in 0..<min(width, n) { let i = next; next += 1; group.addTask { try await op(i) } }
        while try await group.next() != nil, next < n { let i = next; next += 1; group.addTask { try await op(i) } }
    }
}

/// Linux process figures from /proc.
enum ProcessStats {
    /// Peak resident set (VmHWM) in MiB.
    static func peakRSSMiB(pid: String = "self") -> Double { field("VmHWM:", pid: pid) }
    static func rssMiB(pid: String = "self") -> Double { field("VmRSS:", pid: pid) }

    static func field(_ name: String, pid: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
            let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return (kb / 1024 * 10).rounded() / 10
    }

    /// User plus system CPU seconds of a process (all its threads).
    static func cpuSeconds(pid: String = "self") -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state(0) ppid(1) … utime(11) stime(12), in clock ticks.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
