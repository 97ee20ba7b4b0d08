import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import MeteorCore
import MeteorTestSupport
import Testing

@Suite(.serialized) struct SecurityTests {
    /// Known secret values go in (an API token, registry credentials), and none comes out in logs at trace level,
    /// Events, status or metrics.
    @Test func secretsNeverAppearInLogsEventsStatusOrMetrics() async throws {
        let apiToken = "s3cr3t-api-token-7d1f"
        let registryPassword = "s3cr3t-registry-pw-91ac"
        let capture = LogCapture()
        let cluster = try await TestCluster(token: apiToken, crds: ["crds/tekton/300-pipelinerun.yaml", "crds/argocd/application-crd.yaml"])
        try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRD)
        try await cluster.createNamespace("argocd")
        let closed = try LocalRegistry.freePort()
        let env = try await MeteorEnvironment.start(cluster: cluster, logger: capture.logger("meteor", level: .trace)) { c in
            var edge = EdgeSettings()
            edge.insecureRegistries = ["127.0.0.1:\(closed)"]
            c.edge = edge
        }
        do {
            let secrets = cluster.client.api(Secret.self, namespace: "default")
            _ = try await secrets.create(Secret(metadata: ObjectMeta(name: "cosign-pub", namespace: "default"), stringData: ["cosign.pub": CosignSigner().publicKeyPEM]))
            let dockerConfig = #"{"auths":{"127.0.0.1:\#(closed)":{"username":"bot","password":"\#(registryPassword)"}}}"#
            _ = try await secrets.create(Secret(metadata: ObjectMeta(name: "pull", namespace: "default"), type: "kubernetes.io/dockerconfigjson", stringData: [".dockerconfigjson": dockerConfig]))
            let edge = Edge(images: [.init(name: "car", dockerfile: "Dockerfile", platform: "linux/arm64", repository: "127.0.0.1:\(closed)/meteor/car")],
                            signing: .init(publicKeySecretRef: .init(name: "cosign-pub"), pullSecretRef: .init(name: "pull")),
                            targets: [.init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy", namespace: "car")])
            _ = try await cluster.meteors.create(try JSONValue(encoding: Meteor(metadata: ObjectMeta(name: "car"), spec: .init(url: "https://github.com/x/car", ref: "main", pipelines: ["edge", "jupyterhub"], edge: edge))))
            let run = EdgePipelineRunBuilder.name(meteor: "car", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await cluster.waitFor(cluster.runs, run) { $0 != nil }
            try await cluster.tekton(run, "Succeeded", results: ["IMAGE_URL": "127.0.0.1:\(closed)/meteor/car:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "f", count: 64)])
            let meteor = try await cluster.waitFor(cluster.meteors, "car") { condition($0, "ImagesVerified")?["reason"] == "RegistryUnavailable" }
            let events = try await cluster.client.dynamic(Event.resourceType, namespace: "default").list().items
            #expect(!events.isEmpty)
            let outputs = [
                ("logs", capture.text), ("events", JSONValue.array(events).serializedString()),
                ("status", meteor?["status"]?.serializedString() ?? ""), ("metrics", env.manager.metrics.render()),
            ]
            #expect(capture.text.contains("reconcile") || capture.text.count > 1000, "the capture saw the operator's logs")
            for (what, text) in outputs {
                for secret in [apiToken, registryPassword, Data(registryPassword.utf8).base64EncodedString(), Data("bot:\(registryPassword)".utf8).base64EncodedString()] {
                    #expect(!text.contains(secret), "\(what) leaks a secret")
                }
            }
        } catch {
            await env.shutdown()
            throw error
        }
        await env.shutdown()
    }

    /// TLS is verified unless the kubeconfig says otherwise, and then a warning is logged.
    @Test func tlsIsVerifiedByDefaultAndSkippingItWarns() async throws {
        try await TestCluster.with(tls: true, crds: []) { c in
            var unverified = TestCluster.clusterConfiguration(c.server)
            unverified.caCertificatePEM = nil
            // AsyncHTTPClient retries a failed handshake until the connect timeout: keep it short here.
            var quick = KubeClient.Options()
            quick.connectTimeout = .seconds(1)
            quick.requestTimeout = .seconds(3)
            let strict = try KubeClient(configuration: unverified, options: quick)
            await #expect(throws: KubeError.self) { _ = try await strict.dynamic(ConfigMap.resourceType, namespace: "default").list() }
            try await strict.shutdown()

            let capture = LogCapture()
            var insecure = unverified
            insecure.insecureSkipTLSVerify = true
            var options = KubeClient.Options()
            options.logger = capture.logger("client")
            let lax = try KubeClient(configuration: insecure, options: options)
            _ = try await lax.dynamic(ConfigMap.resourceType, namespace: "default").list()
            try await lax.shutdown()
            #expect(capture.text.contains("TLS verification of the API server is disabled"))
            #expect(capture.text.contains("\"level\":\"warning\""))
        }
    }
}
