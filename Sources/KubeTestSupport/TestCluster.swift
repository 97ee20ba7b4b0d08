import Foundation
import KubeAPIServer
import KubeClient
import KubeModels

/// An embedded API server with a client connected to it, for tests.
public final class TestCluster: Sendable {
    public let server: EmbeddedAPIServer
    public let client: KubeClient

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

    public init(tls: Bool = false, token: String? = nil, configuration: EmbeddedAPIServer.Configuration? = nil, clientOptions: KubeClient.Options = KubeClient.Options(), crds: [String] = ["crds/reference/meteor.zone_meteors.yaml"]) async throws {
        var config = configuration ?? EmbeddedAPIServer.Configuration()
        config.tls = tls
        config.token = token
        server = try EmbeddedAPIServer(configuration: config)
        for crd in crds { try server.installCRDs(yaml: try Self.sharedFile(crd)) }
        try await server.start()
        client = try KubeClient(configuration: Self.clusterConfiguration(server), options: clientOptions)
    }

    public static func clusterConfiguration(_ server: EmbeddedAPIServer) -> ClusterConfiguration {
        ClusterConfiguration(
            server: URL(string: server.url)!, caCertificatePEM: server.caCertificatePEM,
            credentials: server.configuration.token.map { .token($0) } ?? .none, source: "test")
    }

    public func shutdown() async {
        try? await client.shutdown()
        await server.stop()
    }

    /// Writes a kubeconfig for the server into a fresh temporary directory and returns its path.
    public func writeKubeconfig() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kube-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("kubeconfig").path
        try server.kubeconfig().write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs `body` with a started cluster and always shuts it down.
    public static func with<T>(tls: Bool = false, token: String? = nil, configuration: EmbeddedAPIServer.Configuration? = nil, clientOptions: KubeClient.Options = KubeClient.Options(), crds: [String] = ["crds/reference/meteor.zone_meteors.yaml"], _ body: (TestCluster) async throws -> T) async throws -> T {
        let cluster = try await TestCluster(tls: tls, token: token, configuration: configuration, clientOptions: clientOptions, crds: crds)
        do {
            let result = try await body(cluster)
            await cluster.shutdown()
            return result
        } catch {
            await cluster.shutdown()
            throw error
        }
    }
}

/// The Meteor type of the reference CRD, addressed dynamically.
public let meteorType = ResourceType(group: "meteor.zone", version: "v1alpha1", kind: "Meteor", plural: "meteors", namespaced: true)

public func meteor(_ name: String, url: String = "https://github.com/aicoe-aiops/meteor-demo", ref: String = "main", labels: [String: String]? = nil) -> JSONValue {
    var meta: JSONObject = ["name": .string(name)]
    if let labels { meta["labels"] = .object(labels.mapValues(JSONValue.string)) }
    return ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": .object(meta), "spec": ["url": .string(url), "ref": .string(ref)]]
}

/// Runs a command and returns its exit status and combined output.
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
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
