import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Testing

@Suite struct LoggingTests {
    @Test func reconcileLinesAreJSONWithTheObjectKeyAndNoSecrets() async throws {
        let capture = LogCapture()
        let token = "super-secret-token-value"
        var options = KubeClient.Options()
        options.logger = capture.logger("kube-client")
        options.initialBackoff = .milliseconds(1)
        try await TestCluster.with(token: token, clientOptions: options) { c in
            _ = try await c.client.dynamic(meteorType, namespace: "default").create(meteor("logged"))
            // Retries, a rejected credential and failing reconciles all log; none may print the token.
            c.server.inject(InjectedFault(.status(503, retryAfterSeconds: nil), verb: "list", count: 2))
            _ = try await c.client.dynamic(meteorType, namespace: "default").list()
            let informer = DynamicInformer(api: c.client.dynamic(meteorType), logger: capture.logger("informer"))
            let probe = ReconcileProbe()
            let controller = Controller(name: "logging", for: informer, logger: capture.logger("controller")) { key in
                probe.begin(key)
                probe.end(key)
                if probe.calls(key) == 1 { throw KubeError.transport("cannot reach \(key) with Authorization: Bearer <redacted>") }
                return .done
            }
            await controller.enqueuePrimaryChanges()
            let task = run(controller, informers: [informer])
            try await probe.wait { $0[ObjectKey(namespace: "default", name: "logged")] == 2 }
            task.cancel()
            await task.value
            var badConfig = TestCluster.clusterConfiguration(c.server)
            badConfig.credentials = .token("wrong-\(token)")
            var badOptions = KubeClient.Options()
            badOptions.logger = capture.logger("bad-client")
            let bad = try KubeClient(configuration: badConfig, options: badOptions)
            _ = try? await bad.dynamic(meteorType, namespace: "default").list()
            try await bad.shutdown()
        }
        let text = capture.text
        #expect(!text.contains(token))
        let lines = text.split(separator: "\n").map { try? JSONValue.parse(String($0)) }
        #expect(!lines.isEmpty && lines.allSatisfy { $0 != nil })
        let failure = lines.compactMap { $0 }.first { $0["msg"] == "reconcile failed" }
        #expect(failure?["object"] == "default/logged")
        #expect(failure?["controller"] == "logging")
        #expect(failure?["level"] == "error")
        #expect(lines.compactMap { $0 }.contains { $0["msg"] == "retrying after 503" })
    }
}
