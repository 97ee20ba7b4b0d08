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
        try
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: c, cluster: {server: \"http://127.0.0.1:1\"}}]\ncontexts: [{name: x, context: {cluster: c}}]\nusers: []\n"
            .write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        let r = try await runProcess(
            operatorBinary, ["run", "--kubeconfig", kubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"])
        #expect(r.status != 0)
        #expect(r.output.contains("cannot reach the API server at http://127.0.0.1:1"), "\(r.output)")
        #expect(r.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count == 1)
    }

    @Test func failsFastWhenTheCRDIsMissing() async throws {
        try await TestCluster.with(crds: []) { c in
            let r = try await runProcess(
                operatorBinary, ["run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "0", "--health-probe-bind-address", "0"])
            #expect(r.status != 0)
            #expect(r.output.contains("the Meteor CRD (meteors.meteor.zone) is not installed"), "\(r.output)")
        }
    }

    @Test func runsAgainstTheClusterAndStopsCleanlyOnSIGTERM() async throws {
        try await TestCluster.with(tls: true, token: "op", crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            let op = try BackgroundProcess(
                operatorBinary,
                [
                    "run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address",
                    "127.0.0.1:0", "--leader-elect", "--log-format", "json",
                ])
            defer { op.terminate() }
            _ = try await c.client.dynamic(Meteor.resourceType, namespace: "default").create(sampleMeteor("from-binary"))
            do {
                _ = try await c.waitFor(c.runs, PipelineRunBuilder.name(meteor: "from-binary", pipeline: .jupyterhub, generation: 1)) { $0 != nil }
                _ = try await c.waitFor(c.meteors, "from-binary") { $0?[path: "status", "phase"] == "Building" }
            } catch {
                Issue.record("the operator printed:\n\(op.text.suffix(3000))")
                throw error
            }
            let (status, _) = try await Self.stopped(op)
            #expect(status == 0, "\(op.text.suffix(3000))")
            #expect(try await c.client.api(Lease.self, namespace: "default").get("meteor-operator").spec?.holderIdentity == nil)
        }
    }

    /// SIGTERM while a reconcile waits on a write the API server never answers: the drain gives up after
    /// --graceful-shutdown-timeout, cancels it, releases the lease and exits 0. Without a bound such an
    /// operator stayed up forever (CI found operator processes outliving their tests).
    @Test func aStuckReconcileIsCancelledAfterTheGracefulShutdownTimeout() async throws {
        let refused = try await runProcess(operatorBinary, ["run", "--graceful-shutdown-timeout", "0"])
        #expect(refused.status != 0 && refused.output.contains("--graceful-shutdown-timeout must be more than 0 seconds"), "\(refused.output)")
        try await TestCluster.with(crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            c.server.inject(InjectedFault(.hold, pathContains: "/meteors/stuck/status", userAgentContains: "meteor-operator/", count: 1000))
            _ = try await c.meteors.create(sampleMeteor("stuck"))
            let op = try Self.leader(c, extra: ["--graceful-shutdown-timeout", "3"])
            defer { op.signal(SIGKILL) }
            await c.server.waitForHeldRequest()
            let (status, took) = try await Self.stopped(op)
            #expect(status == 0, "exit status \(status); the operator printed:\n\(op.text.suffix(3000))")
            #expect(took >= .seconds(3) && took < .seconds(15), "stopped after \(took); the operator printed:\n\(op.text.suffix(3000))")
            #expect(
                try await c.client.api(Lease.self, namespace: "default").get("meteor-operator").spec?.holderIdentity == nil,
                "the lease was not released")
            ReliabilityReport.row(
                "SIGTERM while a reconcile waits on a status write the server never answers", injected: "--graceful-shutdown-timeout 3, 1 held write",
                did: "cancelled the reconcile, released the lease, exit \(status) after \(ReliabilityReport.seconds(took))", lost: "—")
            c.server.releaseHeldRequests()
        }
    }

    /// SIGTERM with the API server gone: the lease cannot be released, and the attempt is given up after a few
    /// seconds (the lease, 600 s here, is what a successor then waits out).
    @Test func stopsOnSIGTERMWhenTheAPIServerIsGone() async throws {
        try await TestCluster.with(crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            _ = try await c.meteors.create(sampleMeteor("orphaned"))
            let op = try Self.leader(c)
            defer { op.signal(SIGKILL) }
            _ = try await c.waitFor(c.meteors, "orphaned") { $0?[path: "status", "phase"] == "Building" }
            await c.server.stop()
            let (_, took) = try await Self.stopped(op)
            #expect(took < .seconds(15), "stopped after \(took); the operator printed:\n\(op.text.suffix(3000))")
            #expect(op.text.contains("cannot release lease in time"), "\(op.text.suffix(3000))")
            ReliabilityReport.row(
                "SIGTERM with the API server gone", injected: "server stopped",
                did: "exited after \(ReliabilityReport.seconds(took)): \"cannot release lease in time\" (the release given at most 5 s)",
                lost: "— (the lease expires, as after a crash)")
        }
    }

    /// The operator as the leader of a long lease (600 s; renew deadline 500 s), so only shutdown ends it.
    static func leader(_ c: TestCluster, extra: [String] = []) throws -> BackgroundProcess {
        let op = try BackgroundProcess(
            operatorBinary,
            [
                "run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format",
                "text",
                "--leader-elect", "--leader-elect-lease-duration", "600", "--leader-elect-renew-deadline", "500",
            ] + extra)
        return op
    }

    /// SIGTERM once the operator's workers run; its exit status and how long it took to exit (at most 30 s).
    static func stopped(_ op: BackgroundProcess) async throws -> (Int32, Duration) {
        _ = try await op.line(containing: "starting workers")
        let signalled = ContinuousClock.now
        op.signal(SIGTERM)
        let stopped = Observed<Int32?>(nil)
        let waiting = Task { stopped.update { [status = await op.wait()] in $0 = status } }
        defer { waiting.cancel() }
        do {
            try await stopped.wait(timeout: .seconds(30)) { $0 != nil }
        } catch {
            Issue.record("still running 30 s after SIGTERM; the operator printed:\n\(op.text.suffix(3000))")
            throw error
        }
        return (stopped.value ?? -1, ContinuousClock.now - signalled)
    }

    /// `run --shower-bind-address` serves the page beside the operator; the Shower's flags without it are refused.
    @Test func theShowerIsServedWhenAskedAndItsFlagsAreChecked() async throws {
        let refused = try await runProcess(operatorBinary, ["run", "--shower-allow-submit"])
        #expect(refused.status != 0)
        #expect(
            refused.output.contains(
                "--shower-allow-submit, --shower-allow-anonymous, --shower-namespace, --shower-trusted-proxy and --shower-session-key-file need --shower-bind-address"
            ), "\(refused.output)")
        // The push webhook's flags, each refusal in one line before anything is started.
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-\(UUID().uuidString)")
        try "s3cret\n".write(to: secret, atomically: true, encoding: .utf8)
        for (arguments, said) in [
            (["--git-webhook-bind-address", "127.0.0.1:0", "--git-webhook-secret-file", secret.path], "set --follow-refs-every too"),
            (["--git-webhook-bind-address", "127.0.0.1:0", "--follow-refs-every", "60"], "needs --git-webhook-secret-file"),
            (
                ["--git-webhook-bind-address", "127.0.0.1:0", "--follow-refs-every", "60", "--git-webhook-secret-file", "/nonexistent"],
                "needs --git-webhook-secret-file"
            ),
            (["--git-webhook-secret-file", secret.path], "--git-webhook-secret-file needs --git-webhook-bind-address"),
            (["--follow-refs-every=-5"], "--follow-refs-every must be 0 (off) or more seconds"),
        ] {
            let r = try await runProcess(operatorBinary, ["run"] + arguments)
            #expect(r.status != 0 && r.output.contains(said), "\(arguments): \(r.output)")
        }
        let badAddress = try await runProcess(operatorBinary, ["run", "--shower-bind-address", "nowhere"])
        #expect(badAddress.status != 0 && badAddress.output.contains("--shower-bind-address must be HOST:PORT"))

        try await TestCluster.with(crds: ["crds/tekton/300-pipelinerun.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            _ = try await c.meteors.create(sampleMeteor("listed"))
            let port = try LocalRegistry.freePort()
            let op = try BackgroundProcess(
                operatorBinary,
                [
                    "run", "--kubeconfig", try c.writeKubeconfig(), "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
                    "--log-format", "json", "--shower-bind-address", "127.0.0.1:\(port)", "--shower-namespace", "default",
                ])
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
