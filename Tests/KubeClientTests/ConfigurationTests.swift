import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import Testing

func tempDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

@Suite struct ConfigurationTests {
    @Test func kubeconfigFromTheEmbeddedServerConnectsOverTLS() async throws {
        try await TestCluster.with(tls: true, token: "tok") { c in
            let path = try c.writeKubeconfig()
            let client = try KubeClient(kubeconfig: path)
            defer { Task { try? await client.shutdown() } }
            #expect(client.configuration.namespace == "default")
            #expect(try await client.api(Namespace.self).get("default").name == "default")
        }
    }

    @Test func severalKubeconfigFilesMergeFirstWins() throws {
        let dir = try tempDirectory()
        let a = dir.appendingPathComponent("a").path
        let b = dir.appendingPathComponent("b").path
        try """
        apiVersion: v1
        kind: Config
        current-context: dev
        clusters: [{name: c1, cluster: {server: "https://one.example:6443", insecure-skip-tls-verify: true}}]
        users: [{name: u1, user: {token: first}}]
        contexts: [{name: dev, context: {cluster: c1, user: u1, namespace: team}}]
        """.write(toFile: a, atomically: true, encoding: .utf8)
        try """
        apiVersion: v1
        kind: Config
        current-context: other
        clusters: [{name: c1, cluster: {server: "https://ignored.example"}}, {name: c2, cluster: {server: "https://two.example"}}]
        users: [{name: u1, user: {token: ignored}}, {name: u2, user: {tokenFile: tokens/t}}]
        contexts: [{name: prod, context: {cluster: c2, user: u2}}]
        """.write(toFile: b, atomically: true, encoding: .utf8)
        let dev = try KubeConfigLoader.load(.init(environment: ["KUBECONFIG": "\(a):\(b)"]))
        #expect(dev.server.absoluteString == "https://one.example:6443")
        #expect(dev.namespace == "team")
        #expect(dev.insecureSkipTLSVerify)
        guard case .token("first") = dev.credentials else { Issue.record("expected the first file's token"); return }
        let prod = try KubeConfigLoader.load(.init(context: "prod", environment: ["KUBECONFIG": "\(a):\(b)"]))
        guard case .tokenFile(let tf) = prod.credentials else { Issue.record("expected a token file"); return }
        #expect(tf == dir.appendingPathComponent("tokens/t").path)
    }

    @Test func brokenConfigNamesTheFileAndField() throws {
        let dir = try tempDirectory()
        let path = dir.appendingPathComponent("broken").path
        try "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try KubeConfigLoader.load(.init(kubeconfigPath: path)) } throws: {
            "\($0)" == "kubeconfig \(path): clusters[c].server is missing or not a URL"
        }
        #expect { try KubeConfigLoader.load(.init(kubeconfigPath: dir.appendingPathComponent("absent").path)) } throws: {
            "\($0)".contains("cannot read file")
        }
        #expect { try KubeConfigLoader.load(.init(kubeconfigPath: path, context: "nope")) } throws: { "\($0)".contains("context \"nope\" not found") }
        #expect { try KubeConfigLoader.load(.init(environment: ["HOME": dir.path])) } throws: { "\($0)".contains("does not exist") }
    }

    @Test func inClusterReadsServiceAccountAndRotatesToken() async throws {
        try await TestCluster.with(tls: true, token: "second") { c in
            let sa = try tempDirectory()
            let tokenFile = sa.appendingPathComponent("token")
            try "first".write(to: tokenFile, atomically: true, encoding: .utf8)
            try c.server.caCertificatePEM!.write(to: sa.appendingPathComponent("ca.crt"), atomically: true, encoding: .utf8)
            try "team".write(to: sa.appendingPathComponent("namespace"), atomically: true, encoding: .utf8)
            let config = try KubeConfigLoader.load(
                .init(
                    environment: ["KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": String(c.server.port)],
                    serviceAccountDirectory: sa.path))
            #expect(config.namespace == "team")
            guard case .tokenFile(tokenFile.path) = config.credentials else { Issue.record("expected the service-account token file"); return }
            let client = try KubeClient(configuration: config)
            defer { Task { try? await client.shutdown() } }
            await #expect { _ = try await client.api(Namespace.self).get("default") } throws: { ($0 as? KubeError)?.code == 401 }
            // The kubelet rotates the token: the next 401 makes the client re-read the file instead of failing.
            try "second".write(to: tokenFile, atomically: true, encoding: .utf8)
            #expect(try await client.api(Namespace.self).get("default").name == "default")
        }
    }

    @Test func execCredentialPluginSuppliesTheToken() async throws {
        try await TestCluster.with(token: "from-plugin") { c in
            let dir = try tempDirectory()
            let plugin = dir.appendingPathComponent("plugin.sh")
            try """
            #!/bin/sh
            [ -n "$KUBERNETES_EXEC_INFO" ] || exit 3
            echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"'"$PLUGIN_TOKEN"'"}}'
            """.write(to: plugin, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: plugin.path)
            let kubeconfig = dir.appendingPathComponent("config")
            try """
            apiVersion: v1
            kind: Config
            current-context: x
            clusters: [{name: c, cluster: {server: "\(c.server.url)"}}]
            users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin.sh, env: [{name: PLUGIN_TOKEN, value: from-plugin}]}}}]
            contexts: [{name: x, context: {cluster: c, user: u}}]
            """.write(to: kubeconfig, atomically: true, encoding: .utf8)
            let client = try KubeClient(kubeconfig: kubeconfig.path)
            defer { Task { try? await client.shutdown() } }
            #expect(try await client.api(Namespace.self).get("default").name == "default")
        }
    }

    @Test func rateLimiterSpacesRequests() async throws {
        let limiter = TokenBucketRateLimiter(qps: 20, burst: 2)
        let started = ContinuousClock.now
        for _ in 0..<6 { try await limiter.acquire() }
        // 2 from the burst, then 4 at 20/s: at least 200 ms.
        #expect(ContinuousClock.now - started >= .milliseconds(190))
    }
}

@Suite struct BadInputTests {
    func raw(
        _ c: TestCluster, _ method: String, _ path: String, body: String, contentType: String = "application/json"
    ) async throws -> (Int, JSONValue) {
        do {
            let r = try await c.client.send(.init(rawValue: method), path, body: Array(body.utf8), contentType: contentType)
            return (r.code, try JSONValue.parse(r.body))
        } catch let e as KubeError {
            return (e.code ?? 0, e.status.flatMap { try? JSONValue(encoding: $0) } ?? .null)
        }
    }

    @Test func malformedBodiesGetKubeApiserverErrors() async throws {
        try await TestCluster.with { c in
            let path = meteorType.collectionPath(namespace: "default")
            #expect(try await raw(c, "POST", path, body: "{not json").0 == 400)
            #expect(try await raw(c, "POST", path, body: "[1,2]").0 == 400)
            #expect(try await raw(c, "POST", path, body: #"{"apiVersion":"meteor.zone/v1alpha1","metadata":{"name":"x"}}"#).0 == 400)
            let wrongKind = try await raw(
                c, "POST", path,
                body: #"{"apiVersion":"meteor.zone/v1alpha1","kind":"ConfigMap","metadata":{"name":"x"},"spec":{"url":"https://a","ref":"b"}}"#)
            #expect(wrongKind.0 == 422)
            #expect(wrongKind.1[path: "details", "causes"]?.arrayValue?.first?["field"] == "kind")
            #expect(try await raw(c, "POST", path, body: #"{"apiVersion":"other/v1","kind":"Meteor","metadata":{"name":"x"}}"#).0 == 400)
            #expect(try await raw(c, "POST", path, body: "kind: [unclosed", contentType: "application/yaml").0 == 400)
            let huge = "{\"a\":\"" + String(repeating: "x", count: 4 * 1024 * 1024) + "\"}"
            #expect(try await raw(c, "POST", path, body: huge).0 == 413)
            #expect(try await raw(c, "PATCH", path + "/x", body: "{}", contentType: "text/plain").0 == 415)
            let longName = try await raw(
                c, "POST", path,
                body:
                    #"{"apiVersion":"meteor.zone/v1alpha1","kind":"Meteor","metadata":{"name":"\#(String(repeating: "a", count: 300))"},"spec":{"url":"https://a","ref":"b"}}"#
            )
            #expect(longName.0 == 422)
            #expect(try await raw(c, "GET", "/apis/nope.example/v1/things", body: "").0 == 404)
            // The server is still healthy after all of that.
            #expect(try await c.client.api(Namespace.self).get("default").name == "default")
        }
    }
}
