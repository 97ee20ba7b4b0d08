import Foundation
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// Argo CD's health for Meteors (`manifests/argocd/argocd-cm-meteor-health.yaml`), run by a real Lua 5.1 — the
/// dialect Argo CD's gopher-lua speaks — over Meteors whose status the operator itself wrote: building, ready, a
/// failed build, a refused spec; and over what Argo CD can see between the operator's writes (a generation the
/// operator has not seen yet, edge delivery degraded).
@Suite struct ArgoHealthTests {
    static let lua = "/usr/bin/lua5.1"

    /// The health check as shipped.
    static func script() throws -> String {
        let patch = try YAML.parse(
            String(
                contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("manifests/argocd/argocd-cm-meteor-health.yaml"), encoding: .utf8))
        return try #require(patch[path: "data", "resource.customizations.health.meteor.zone_Meteor"]?.stringValue)
    }

    /// Argo CD's verdict on `meteor`: the script run as a function body with the object as the global `obj`.
    static func health(_ meteor: JSONValue, script: String) async throws -> (status: String, message: String) {
        let program = """
            obj = \(luaLiteral(meteor))
            local check = assert(loadstring([==========[\(script)]==========]))
            local hs = check()
            io.write(hs.status, "\\t", hs.message or "")
            """
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("health-\(UUID().uuidString).lua")
        try program.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let run = try await runProcess(lua, [file.path])
        #expect(run.status == 0, "lua5.1 failed: \(run.output)")
        let parts = run.output.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts.first ?? ""), parts.count > 1 ? String(parts[1]) : "")
    }

    /// A JSON value as a Lua table literal, as Argo CD hands objects to health checks (JSON null: absent).
    static func luaLiteral(_ v: JSONValue) -> String {
        switch v {
        case .null: return "nil"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s):
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                default: out += u.value < 0x20 ? "\\\(u.value)" : String(u)
                }
            }
            return out + "\""
        case .array(let items): return "{" + items.map(luaLiteral).joined(separator: ", ") + "}"
        case .object(let members):
            return "{"
                + members.sorted { $0.key < $1.key }.filter { $0.value != .null }.map { "[\(luaLiteral(.string($0.key)))] = \(luaLiteral($0.value))" }
                .joined(separator: ", ") + "}"
        }
    }

    @Test(
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: lua) || ProcessInfo.processInfo.environment["CI"] != nil,
            "no lua5.1 (hack/test installs it)"))
    func argoCDSeesEachPhaseOfAMeteorAsItsHealth() async throws {
        let script = try Self.script()
        try await MeteorEnvironment.with(tekton: true) { env in
            let c = env.cluster
            // Before the operator has written anything.
            #expect(try await Self.health(meteor("fresh"), script: script).status == "Progressing")

            try await env.createMeteor(sampleMeteor("building", pipelines: ["jupyterbook"]), holding: true)
            try await env.createMeteor(sampleMeteor("ready", pipelines: ["jupyterbook"]))
            try await env.createMeteor(sampleMeteor("broken", pipelines: ["jupyterbook"]), failing: [.jupyterbook])
            try await env.createMeteor(sampleMeteor("refused", pipelines: ["edge"]))
            let building = try #require(try await c.waitFor(c.meteors, "building") { $0?[path: "status", "phase"] == "Building" })
            let ready = try #require(try await c.waitFor(c.meteors, "ready") { condition($0, "Ready")?["status"] == "True" })
            let broken = try #require(try await c.waitFor(c.meteors, "broken") { $0?[path: "status", "phase"] == "Failed" })
            let refused = try #require(try await c.waitFor(c.meteors, "refused") { condition($0, "Ready")?["reason"] == "InvalidSpec" })

            #expect(try await Self.health(building, script: script).status == "Progressing")
            let healthy = try await Self.health(ready, script: script)
            #expect(healthy.status == "Healthy", "\(healthy)")
            let failed = try await Self.health(broken, script: script)
            #expect(failed.status == "Degraded" && failed.message == condition(broken, "Ready")?["message"]?.stringValue, "\(failed)")
            let invalid = try await Self.health(refused, script: script)
            #expect(invalid.status == "Degraded" && invalid.message.contains("spec."), "\(invalid)")

            // A new generation Argo CD has synced but the operator has not seen: not Healthy on the old status.
            var ahead = ready
            ahead[path: "metadata", "generation"] = .int((ready[path: "metadata", "generation"]?.intValue ?? 1) + 1)
            let stale = try await Self.health(ahead, script: script)
            #expect(stale.status == "Progressing" && stale.message.contains("generation"), "\(stale)")
            // Edge delivery degraded on a device, or stopped for an untrusted key: Degraded, in its words.
            for reason in ["Degraded", "KeyNotTrusted", "UnverifiedImage"] {
                var edge = ready
                let conditions =
                    (ready[path: "status", "conditions"]?.arrayValue ?? []) + [
                        ["type": "Deployed", "status": "False", "reason": .string(reason), "message": "rpi: something"]
                    ]
                edge[path: "status", "conditions"] = .array(conditions)
                let degraded = try await Self.health(edge, script: script)
                #expect(degraded.status == "Degraded" && degraded.message == "\(reason): rpi: something", "\(degraded)")
            }
            // Quotes, backslashes and newlines in messages reach Lua intact.
            var odd = broken
            odd[path: "status", "conditions"] = [
                ["type": "Ready", "status": "False", "reason": "Failed", "message": "a \"quoted\" \\ path\nnext line"]
            ]
            #expect(try await Self.health(odd, script: script).message == "a \"quoted\" \\ path\nnext line")
        }
    }
}
