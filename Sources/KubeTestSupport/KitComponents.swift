import Foundation
import KubeClient

/// The kit's processes as chaos tests treat them: killed without warning (SIGKILL, as a node losing power or the
/// OOM killer does) and started again with the arguments, ports and data directory they had, so etcd keeps its
/// data and kube-apiserver its certificates.
extension KitControlPlane {
    public enum Component: String, Sendable, CaseIterable, CustomStringConvertible {
        case etcd
        case kubeAPIServer = "kube-apiserver"
        case kubeControllerManager = "kube-controller-manager"
        public var description: String { rawValue }
    }

    public struct KilledComponent: Sendable {
        public let component: Component
        let arguments: [String]
    }

    func pidFile(_ component: Component) -> String { "\(directory)/\(component.rawValue).pid" }

    /// The running process of `component`, read from the kit's pid file.
    public func pid(_ component: Component) throws -> Int32 {
        let text = try String(contentsOfFile: pidFile(component), encoding: .utf8)
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Unavailable.command("no pid in \(pidFile(component))")
        }
        return pid
    }

    /// SIGKILLs `component` and returns once it is gone (a zombie the kit's parent has not reaped counts as gone);
    /// what it returns starts it again.
    public func kill(_ component: Component) async throws -> KilledComponent {
        let pid = try pid(component)
        let raw = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
        let arguments = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }.filter { !$0.isEmpty }
        guard !arguments.isEmpty else { throw Unavailable.command("\(component) (pid \(pid)) has no command line") }
        Foundation.kill(pid, SIGKILL)
        try await within(.seconds(10), "\(component) (pid \(pid)) to die") {
            while Self.isAlive(pid) { try await Task.sleep(for: .milliseconds(20)) }  // polling a pid: no event to await
        }
        return KilledComponent(component: component, arguments: arguments)
    }

    /// Starts a killed component again, its output appended to its kit log, and waits until it serves.
    public func restart(_ killed: KilledComponent) async throws {
        let name = killed.component.rawValue
        let script = #"pidfile=$1; log=$2; shift 2; "$@" >>"$log" 2>&1 </dev/null & echo $! >"$pidfile""#
        let (status, output) = try await runDaemonStarter(
            "/bin/bash", ["-c", script, "restart", pidFile(killed.component), "\(directory)/\(name).log"] + killed.arguments)
        guard status == 0 else { throw Unavailable.failed("restarting \(name): \(output)") }
        try await waitServing(killed.component, arguments: killed.arguments)
    }

    /// etcd answers its health endpoint; kube-apiserver its `/readyz` (which includes etcd); the controller manager
    /// only has to be running.
    func waitServing(_ component: Component, arguments: [String]) async throws {
        switch component {
        case .etcd:
            guard
                let url = arguments.first(where: { $0.hasPrefix("--listen-client-urls=") })?.split(separator: "=", maxSplits: 1).last.map(String.init)
            else { return }
            try await pollUntilOK(["-sf", "\(url)/health"], what: "etcd to be healthy")
        case .kubeAPIServer:
            try await pollUntilOK(
                ["-sf", "--cacert", caCertificatePath, "-H", "Authorization: Bearer \(adminToken)", "\(server.absoluteString)/readyz"],
                what: "kube-apiserver to be ready")
        case .kubeControllerManager:
            let pid = try pid(component)
            guard Self.isAlive(pid) else {
                throw Unavailable.failed("kube-controller-manager exited at once: see \(directory)/kube-controller-manager.log")
            }
        }
    }

    private func pollUntilOK(_ curl: [String], what: String) async throws {
        try await within(.seconds(90), what) {
            // A process coming up says nothing when it is ready: ask it, as the kit's `up` does.
            while try await runProcess("/usr/bin/curl", curl).status != 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
    }

    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // Field 3, after the parenthesised command name: Z for a zombie, X for dead.
        guard let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// kube-apiserver's own request counters (`apiserver_request_total`), summed by verb, resource and code:
    /// what the server saw, independent of any client. Reset when the server restarts.
    public func requestCounts() async throws -> [String: Int] {
        let (status, text) = try await runProcess(
            "/usr/bin/curl", ["-sf", "--cacert", caCertificatePath, "-H", "Authorization: Bearer \(adminToken)", "\(server.absoluteString)/metrics"])
        guard status == 0 else { throw Unavailable.command("GET /metrics: curl exit \(status)") }
        var counts: [String: Int] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("apiserver_request_total{") {
            guard let open = line.firstIndex(of: "{"), let close = line.lastIndex(of: "}"),
                let value = Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces))
            else { continue }
            var labels: [String: String] = [:]
            for pair in line[line.index(after: open)..<close].split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { labels[String(kv[0])] = kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            }
            let key =
                "\(labels["verb"] ?? "") \(labels["resource"] ?? "")\(labels["subresource"].map { $0.isEmpty ? "" : "/\($0)" } ?? "") \(labels["code"] ?? "")"
            counts[key, default: 0] += Int(value)
        }
        return counts
    }
}
