import Foundation
import KubeAPIServer
import KubeClient
import KubeModels

/// Where an end-to-end test runs: the embedded API server (fast, fault injection, request log) or the kit's real
/// kube-apiserver (what a cluster really does). Tests parametrised over `Backend.allCases` run on both.
public enum Backend: String, Sendable, CaseIterable, CustomStringConvertible {
    case embedded
    case real
    public var description: String { rawValue }
}

/// An API server with a client connected to it, for tests: the embedded server (a server of its own per test) or
/// the process's shared real control plane (a namespace of its own per test).
public final class TestCluster: Sendable {
    public let backend: Backend
    /// The embedded server; nil on the real control plane.
    public let embedded: EmbeddedAPIServer?
    /// The real control plane; nil on the embedded server.
    public let kit: KitControlPlane?
    public let client: KubeClient
    /// Where the test's namespaced objects live: `default` on the embedded server, a fresh one on the real.
    public let namespace: String

    /// The embedded server, for what only it has (fault injection, request log, restarts).
    public var server: EmbeddedAPIServer {
        guard let embedded else {
            preconditionFailure("embedded-only: this test injects faults or reads the request log, which only the embedded server has")
        }
        return embedded
    }

    /// `../shared` beside the repository: upstream CRDs and test vectors.
    public static var sharedDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared")
    }

    public static var repositoryDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    public static func sharedFile(_ relative: String) throws -> String {
        try String(contentsOf: sharedDirectory.appendingPathComponent(relative), encoding: .utf8)
    }

    public init(
        tls: Bool = false, token: String? = nil, configuration: EmbeddedAPIServer.Configuration? = nil,
        clientOptions: KubeClient.Options = KubeClient.Options(), crds: [String] = ["crds/reference/meteor.zone_meteors.yaml"]
    ) async throws {
        var config = configuration ?? EmbeddedAPIServer.Configuration()
        config.tls = tls
        config.token = token
        let server = try EmbeddedAPIServer(configuration: config)
        for crd in crds { try server.installCRDs(yaml: try Self.sharedFile(crd)) }
        try await server.start()
        backend = .embedded
        embedded = server
        kit = nil
        namespace = "default"
        client = try KubeClient(configuration: Self.clusterConfiguration(server), options: clientOptions)
    }

    init(kit: KitControlPlane, namespace: String, clientOptions: KubeClient.Options) throws {
        backend = .real
        embedded = nil
        self.kit = kit
        self.namespace = namespace
        client = try kit.client(options: clientOptions)
    }

    /// A namespace of its own on the shared real control plane, with `crds` (repository-relative or
    /// `../shared`-relative paths) installed once per process. Tekton's CRDs come with its controller
    /// (`KitControlPlane.ensureTekton`), not from here.
    /// `on` names a control plane of the test's own (`KitControlPlane.startDedicated()`) instead of the shared one.
    public static func real(
        on plane: KitControlPlane? = nil, namespacePrefix: String = "test", crds: [String] = [],
        clientOptions: KubeClient.Options = KubeClient.Options()
    ) async throws -> TestCluster {
        E2ETally.record(.real)
        let kit: KitControlPlane
        if let plane { kit = plane } else { kit = try await KitControlPlane.shared() }
        for crd in crds { try await kit.install(crd) }
        return try TestCluster(kit: kit, namespace: try await kit.freshNamespace(namespacePrefix), clientOptions: clientOptions)
    }

    /// The cluster for `backend`: an embedded server with `crds` installed, or a namespace on the real one.
    public static func on(_ backend: Backend, crds: [String], namespacePrefix: String = "test") async throws -> TestCluster {
        switch backend {
        case .embedded:
            E2ETally.record(.embedded)
            return try await TestCluster(crds: crds)
        case .real:
            return try await real(namespacePrefix: namespacePrefix, crds: crds)
        }
    }

    /// Another client of the same server (its own connections: shutting it down is a process dying).
    public func newClient(options: KubeClient.Options = KubeClient.Options()) throws -> KubeClient {
        if let kit { return try kit.client(options: options) }
        return try KubeClient(configuration: Self.clusterConfiguration(server), options: options)
    }

    public static func clusterConfiguration(_ server: EmbeddedAPIServer) -> ClusterConfiguration {
        ClusterConfiguration(
            server: URL(string: server.url)!, caCertificatePEM: server.caCertificatePEM,
            credentials: server.configuration.token.map { .token($0) } ?? .none, source: "test")
    }

    public func shutdown() async {
        if let kit {
            // Namespace deletion runs on in the background (the namespace controller finishes it).
            _ = try? await kit.kubectl(["delete", "namespace", namespace, "--wait=false"])
        }
        try? await client.shutdown()
        if let embedded { await embedded.stop() }
    }

    /// Writes a kubeconfig for the server (the test's namespace as the context's) into a fresh directory; returns its path.
    public func writeKubeconfig() throws -> String {
        if let kit { return try kit.writeKubeconfig(namespace: namespace) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kube-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("kubeconfig").path
        try server.kubeconfig().write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs `body` with a started cluster and always shuts it down.
    public static func with<T>(
        tls: Bool = false, token: String? = nil, configuration: EmbeddedAPIServer.Configuration? = nil,
        clientOptions: KubeClient.Options = KubeClient.Options(), crds: [String] = ["crds/reference/meteor.zone_meteors.yaml"],
        _ body: (TestCluster) async throws -> T
    ) async throws -> T {
        let cluster = try await TestCluster(tls: tls, token: token, configuration: configuration, clientOptions: clientOptions, crds: crds)
        return try await cluster.run(body)
    }

    /// Runs `body` and always shuts the cluster down.
    public func run<T>(_ body: (TestCluster) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            await shutdown()
            return result
        } catch {
            await shutdown()
            throw error
        }
    }
}

/// The Meteor type of the reference CRD, addressed dynamically.
public let meteorType = ResourceType(group: "meteor.zone", version: "v1alpha1", kind: "Meteor", plural: "meteors", namespaced: true)

public func meteor(
    _ name: String, url: String = "https://github.com/aicoe-aiops/meteor-demo", ref: String = "main", labels: [String: String]? = nil
) -> JSONValue {
    var meta: JSONObject = ["name": .string(name)]
    if let labels { meta["labels"] = .object(labels.mapValues(JSONValue.string)) }
    return ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": .object(meta), "spec": ["url": .string(url), "ref": .string(ref)]]
}

extension Process {
    /// A process of `executable` whose stdout and stderr go to one pipe; `environment` adds to this process's, or
    /// is the whole of it with `replacingEnvironment`.
    static func printingToOnePipe(
        _ executable: String, _ arguments: [String], environment: [String: String], replacingEnvironment: Bool = false, directory: URL?
    ) -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = replacingEnvironment ? [:] : ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        if let directory { process.currentDirectoryURL = directory }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        return (process, pipe)
    }
}

/// Runs a program to its end; its exit status and what it printed (stdout and stderr together). `environment`
/// adds to this process's, or is the whole of it with `replacingEnvironment`.
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], replacingEnvironment: Bool = false, directory: URL? = nil,
    input: String? = nil
) async throws -> (status: Int32, output: String) {
    let (process, pipe) = Process.printingToOnePipe(
        executable, arguments, environment: environment, replacingEnvironment: replacingEnvironment, directory: directory)
    let stdin = Pipe()
    process.standardInput = stdin
    let (exited, continuation) = AsyncStream<Int32>.makeStream()
    process.terminationHandler = { p in
        continuation.yield(p.terminationStatus)
        continuation.finish()
    }
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try? stdin.fileHandleForWriting.close()
    // Read on a GCD thread, never on the cooperative pool (see KubeClient's exec plugin runner for why).
    let handle = pipe.fileHandleForReading
    let data = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
        DispatchQueue.global().async { c.resume(returning: PipeReader.readToEnd(handle.fileDescriptor)) }
    }
    var status: Int32 = -1
    for await s in exited { status = s }
    return (status, String(decoding: data, as: UTF8.self))
}
