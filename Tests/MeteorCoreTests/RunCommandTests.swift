import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// The built `meteor-operator` binary (swift test builds every product first).
let operatorBinary = TestCluster.repositoryDirectory.appendingPathComponent(".build/debug/meteor-operator").path

@Suite(.serialized) struct RunCommandTests {
    @Test func failsFastWithOneLineWhenTheClusterIsUnreachable() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let kubeconfig = dir.appendingPathComponent("config").path
        try "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: c, cluster: {server: \"http://127.0.0.1:1\"}}]\ncontexts: [{name: x, context: {cluster: c}}]\nusers: []\n".write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        let r = try await runProcess(operatorBinary, ["run", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"])
        #expect(r.status != 0)
        #expect(r.output.contains("cannot reach the API server at http://127.0.0.1:1"), "\(r.output)")
        #expect(r.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count == 1)
    }

    @Test func failsFastWhenTheCRDIsMissing() async throws {
        try await TestCluster.with(crds: []) { c in
            let r = try await runProcess(operatorBinary, ["run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "0", "--health-probe-bind-address", "0"])
            #expect(r.status != 0)
            #expect(r.output.contains("the Meteor CRD (meteors.meteor.zone) is not installed"), "\(r.output)")
        }
    }

    @Test func runsAgainstTheClusterAndStopsCleanlyOnSIGTERM() async throws {
        try await TestCluster.with(tls: true, token: "op", crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRD)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: operatorBinary)
            process.arguments = ["run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", "--leader-elect", "--log-format", "json"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            let (exited, continuation) = AsyncStream<Int32>.makeStream()
            process.terminationHandler = { continuation.yield($0.terminationStatus); continuation.finish() }
            try process.run()
            _ = try await c.client.dynamic(Meteor.resourceType, namespace: "default").create(sampleMeteor("from-binary"))
            _ = try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "from-binary", pipeline: .jupyterhub, generation: 1)) { $0 != nil }
            _ = try await c.waitFor(c.meteors, "from-binary") { $0?[path: "status", "phase"] == "Building" }
            process.terminate()
            var status: Int32 = -1
            for await s in exited { status = s }
            #expect(status == 0)
            #expect(try await c.client.api(Lease.self, namespace: "default").get("meteor-operator").spec?.holderIdentity == nil)
        }
    }

    /// `run --shower-bind-address` serves the page beside the operator; the Shower's flags without it are refused.
    @Test func theShowerIsServedWhenAskedAndItsFlagsAreChecked() async throws {
        let refused = try await runProcess(operatorBinary, ["run", "--shower-allow-submit"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("--shower-allow-submit, --shower-allow-anonymous and --shower-namespace need --shower-bind-address"), "\(refused.output)")
        let badAddress = try await runProcess(operatorBinary, ["run", "--shower-bind-address", "nowhere"])
        #expect(badAddress.status != 0 && badAddress.output.contains("--shower-bind-address must be HOST:PORT"))

        try await TestCluster.with(crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRD)
            _ = try await c.meteors.create(sampleMeteor("listed"))
            let port = try LocalRegistry.freePort()
            let op = try BackgroundProcess(operatorBinary, ["run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
                                                            "--log-format", "json", "--shower-bind-address", "127.0.0.1:\(port)", "--shower-namespace", "default"])
            defer { op.terminate() }
            _ = try await op.line(containing: "Meteor Shower serving")
            _ = try await c.waitFor(c.meteors, "listed") { $0?[path: "status", "phase"] == "Building" }
            let page = try await runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/"])
            #expect(page.output.contains("data-name=\"listed\""), "\(page.output.prefix(300))")
            #expect(page.output.contains("Submitting is turned off"), "writes are off without --shower-allow-submit")
            op.signal(SIGTERM)
            #expect(await op.wait() == 0, "\(op.text)")
        }
    }
}
