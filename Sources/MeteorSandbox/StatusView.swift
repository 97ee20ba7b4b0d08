import Foundation
import KubeModels
import KubeRuntime
import MeteorCore
import ServiceLifecycle
import Synchronization

/// The sandbox's live view: a table of Meteors (phase, pipelines, deployments, age) redrawn each second on a
/// terminal, or one log line per phase change when the output is not a terminal (`--no-tui`).
public final class StatusView: Service, Sendable {
    let meteors: DynamicInformer
    let tui: Bool
    let interval: Duration
    let write: @Sendable (String) -> Void
    let header = Mutex("")

    /// Lines shown above the table on every redraw (the kubeconfig export line, URLs).
    public func setHeader(_ text: String) { header.withLock { $0 = text } }

    public init(
        meteors: DynamicInformer, tui: Bool, interval: Duration = .seconds(1),
        write: @escaping @Sendable (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }
    ) {
        self.meteors = meteors
        self.tui = tui
        self.interval = interval
        self.write = write
    }

    public func run() async throws {
        if tui {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                write(
                    "\u{1B}[H\u{1B}[2J" + header.withLock { $0 } + "\n" + Self.render(meteors.store.list(), now: Date())
                        + "\nCtrl-C stops the sandbox.\n")
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            }
            return
        }
        let write = self.write
        await meteors.addHandler { event in
            switch event {
            case .added(let m): write("meteor \(Self.name(m)): \(Self.phase(m))\n")
            case .updated(let old, let new) where Self.phase(old) != Self.phase(new) || Self.ready(old) != Self.ready(new):
                write("meteor \(Self.name(new)): \(Self.phase(old)) → \(Self.phase(new))\(Self.ready(new).map { " (Ready=\($0))" } ?? "")\n")
            case .deleted(let m): write("meteor \(Self.name(m)): deleted\n")
            default: break
            }
        }
        try? await gracefulShutdown()
    }

    static func name(_ m: JSONValue) -> String {
        "\(m[path: "metadata", "namespace"]?.stringValue ?? "")/\(m[path: "metadata", "name"]?.stringValue ?? "")"
    }
    static func phase(_ m: JSONValue) -> String { MeteorGlance(m).phase }
    static func ready(_ m: JSONValue) -> String? { MeteorGlance(m).ready?.rawValue }

    /// The table, as `kubectl get` would lay it out.
    public static func render(_ meteors: [JSONValue], now: Date) -> String {
        var rows = [["NAMESPACE", "NAME", "PHASE", "PIPELINES", "DEPLOYMENTS", "AGE"]]
        for m in meteors.sorted(by: { name($0) < name($1) }) {
            let pipelines =
                (m[path: "status", "pipelines"]?.arrayValue ?? []).map { p in
                    "\(p["name"]?.stringValue ?? "?"):\(p["ready"] == "True" ? "done" : p["ready"] == "False" ? "failed" : "running")"
                }
                + (m[path: "status", "images"]?.arrayValue ?? []).map { i in
                    "\(i["name"]?.stringValue ?? "?"):\(i["verified"] == true ? "verified" : (i["reason"]?.stringValue ?? "building"))"
                }
            var deployments = (m[path: "status", "deployments"]?.arrayValue ?? []).map { d in
                "\(d["target"]?.stringValue ?? "?"):\(d["syncStatus"]?.stringValue ?? "Unknown")/\(d["healthStatus"]?.stringValue ?? "Unknown")"
            }
            // Targets choosing clusters by label are counted, and a staged rollout says where it stands.
            let targets = (m[path: "status", "targets"]?.arrayValue ?? []).compactMap { try? $0.decode(as: EdgeTargetStatus.self) }
            deployments += targets.filter { $0.clusterSelector != nil }.map { "[\($0.summary)]" }
            if let rollout = try? m[path: "status", "rollout"]?.decode(as: EdgeRolloutStatus.self) {
                deployments.append("rollout: \(rollout.summary)")
            }
            let created = m[path: "metadata", "creationTimestamp"]?.stringValue.flatMap(KubeTime.parse)
            rows.append([
                m[path: "metadata", "namespace"]?.stringValue ?? "", m[path: "metadata", "name"]?.stringValue ?? "", phase(m),
                pipelines.isEmpty ? "-" : pipelines.joined(separator: " "), deployments.isEmpty ? "-" : deployments.joined(separator: " "),
                created.map { age(now.timeIntervalSince($0)) } ?? "-",
            ])
        }
        var widths = [Int](repeating: 0, count: rows[0].count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 3, withPad: " ", startingAt: 0) }
                .joined()
        }.joined(separator: "\n") + "\n"
    }

    static func age(_ seconds: TimeInterval) -> String {
        let s = max(0, Int(seconds))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }
}
