import Foundation
import KubeModels

/// Runs a Tekton Task's steps on this machine, in order, the way Tekton's entrypoint would: its variable
/// substitution for params (given, else the Task's defaults), result paths and workspace paths; each step's
/// `workingDir` and `env`; the step's script through its shebang; the Pod's (or the step's) `runAsUser` when the
/// runner is root; workspaces as a kubelet mounts a volume with an `fsGroup` (owned by root, group fsGroup,
/// setgid and group-writable). A step stops the Task on a non-zero exit, as in a TaskRun.
///
/// What is not a container here: the step's image. `images` maps an image reference to the environment that
/// stands in for it (PATH with its tools, VIRTUAL_ENV…); an image not in the map runs with this machine's tools.
public struct TektonStepRunner: Sendable {
    public struct Image: Sendable {
        /// Directories put first on PATH (the image's tools).
        public var path: [String]
        public var environment: [String: String]
        public init(path: [String] = [], environment: [String: String] = [:]) {
            self.path = path
            self.environment = environment
        }
    }

    public struct Outcome: Sendable {
        public var status: Int32
        /// The step that failed, if one did.
        public var failedStep: String?
        /// Everything the steps printed, each step's output after a `--- step NAME` line.
        public var output: String
        public var results: [String: String]
        public var succeeded: Bool { status == 0 }
    }

    public let task: JSONValue
    public var images: [String: Image] = [:]
    /// The Pod's `securityContext.runAsUser` / `fsGroup` (the PipelineRun's podTemplate); nil runs as this process.
    public var runAsUser: UInt32?
    public var fsGroup: UInt32?

    public init(taskFile: URL) throws {
        task = try YAML.parse(String(contentsOf: taskFile, encoding: .utf8))
    }

    /// Runs every step with `params` and `workspaces` (name → directory, created as a volume would be when
    /// missing).
    public func run(params: [String: String] = [:], workspaces: [String: URL]) async throws -> Outcome {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("taskrun-\(UUID().uuidString)")
        let resultsDir = scratch.appendingPathComponent("results"), home = scratch.appendingPathComponent("home"),
            tmp = scratch.appendingPathComponent("tmp")
        for d in [resultsDir, home, tmp] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(at: scratch) }
        // Results, HOME and /tmp stand-ins are the step's to write, as in a Pod.
        if let user = runAsUser {
            for d in [scratch, resultsDir, home, tmp] { try Self.chown(d, user: user, group: fsGroup ?? user, mode: 0o755) }
        }
        for (_, dir) in workspaces {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            if let group = fsGroup { try Self.chown(dir, user: 0, group: group, mode: 0o2775) }
        }

        var values: [String: String] = [:]
        for p in task[path: "spec", "params"]?.arrayValue ?? [] {
            guard let name = p["name"]?.stringValue else { continue }
            if let v = params[name] ?? p["default"]?.stringValue { values["params.\(name)"] = v }
        }
        for r in task[path: "spec", "results"]?.arrayValue ?? [] {
            if let name = r["name"]?.stringValue { values["results.\(name).path"] = resultsDir.appendingPathComponent(name).path }
        }
        for w in task[path: "spec", "workspaces"]?.arrayValue ?? [] {
            guard let name = w["name"]?.stringValue else { continue }
            if let dir = workspaces[name] {
                values["workspaces.\(name).path"] = dir.path
                values["workspaces.\(name).bound"] = "true"
            } else if w["optional"]?.boolValue == true {
                // Tekton's values for an optional workspace left unbound.
                values["workspaces.\(name).path"] = ""
                values["workspaces.\(name).bound"] = "false"
            } else {
                throw Failure(message: "workspace \(name) not given")
            }
        }
        func substitute(_ text: String) -> String {
            var out = text
            for (key, value) in values { out = out.replacingOccurrences(of: "$(\(key))", with: value) }
            return out
        }

        var output = ""
        for (index, step) in (task[path: "spec", "steps"]?.arrayValue ?? []).enumerated() {
            let name = step["name"]?.stringValue ?? "step-\(index)"
            output += "--- step \(name)\n"
            let image = substitute(step["image"]?.stringValue ?? "")
            guard let script = step["script"]?.stringValue.map(substitute) else { throw Failure(message: "step \(name) has no script") }
            let scriptFile = scratch.appendingPathComponent("script-\(index)")
            try script.write(to: scriptFile, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: scriptFile.path)
            let shebang = script.hasPrefix("#!") ? script.dropFirst(2).prefix { $0 != "\n" }.split(separator: " ").map(String.init) : ["/bin/sh"]

            let stand = images[image] ?? Image()
            var env: [String: String] = [
                "PATH": (stand.path + ["/usr/local/bin", "/usr/bin", "/bin"]).joined(separator: ":"),
                "HOME": home.path, "TMPDIR": tmp.path, "LANG": "C.UTF-8",
            ]
            for (k, v) in stand.environment { env[k] = v }
            for e in step["env"]?.arrayValue ?? [] {
                guard let k = e["name"]?.stringValue else { continue }
                var raw = e["value"]?.stringValue ?? ""
                // A container's /tmp is its own: here, the run's (the Task's HOME=/tmp must not share one
                // .gitconfig between runs on this machine).
                if raw == "/tmp" || raw.hasPrefix("/tmp/") { raw = tmp.path + raw.dropFirst(4) }
                env[k] = substitute(raw)
            }
            // A step's own runAsUser wins over the Pod's, as in Kubernetes.
            let user = step[path: "securityContext", "runAsUser"]?.intValue.map { UInt32($0) } ?? runAsUser
            var command = shebang + [scriptFile.path]
            if let user, getuid() == 0, user != 0 {
                let groups = fsGroup.map { "--groups=\($0)" } ?? "--clear-groups"
                command = ["/usr/bin/setpriv", "--reuid=\(user)", "--regid=\(user)", groups, "--"] + command
            }
            let workingDir = step["workingDir"]?.stringValue.map(substitute) ?? workspaces.values.first?.path ?? scratch.path
            let r = try await runProcess(
                command[0], Array(command.dropFirst()), environment: env, replacingEnvironment: true, directory: URL(fileURLWithPath: workingDir))
            output += r.output
            if r.status != 0 {
                return Outcome(status: r.status, failedStep: name, output: output, results: try Self.results(resultsDir))
            }
        }
        return Outcome(status: 0, failedStep: nil, output: output, results: try Self.results(resultsDir))
    }

    static func results(_ dir: URL) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) {
            out[name] = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
        }
        return out
    }

    static func chown(_ url: URL, user: UInt32, group: UInt32, mode: Int) throws {
        guard getuid() == 0 else { return }
        try FileManager.default.setAttributes([.ownerAccountID: user, .groupOwnerAccountID: group, .posixPermissions: mode], ofItemAtPath: url.path)
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        public init(message: String) { self.message = message }
    }
}
