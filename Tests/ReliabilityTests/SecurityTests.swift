import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import MeteorCore
@testable import MeteorShower
import Crypto
import MeteorTestSupport
import NIOHTTP1
import NIOSSL
import AsyncHTTPClient
import Synchronization
import Testing

@Suite(.serialized) struct SecurityTests {
    /// Known secret values go in (an API token, registry credentials), and none comes out in logs at trace level,
    /// Events, status or metrics.
    @Test func secretsNeverAppearInLogsEventsStatusOrMetrics() async throws {
        let apiToken = "s3cr3t-api-token-7d1f"
        let registryPassword = "s3cr3t-registry-pw-91ac"
        let capture = LogCapture()
        let cluster = try await TestCluster(token: apiToken, crds: ["crds/tekton/300-pipelinerun.yaml", "crds/argocd/application-crd.yaml"])
        try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
        try await cluster.createNamespace("argocd")
        let closed = try LocalRegistry.freePort()
        let env = try await MeteorEnvironment.start(cluster: cluster, logger: capture.logger("meteor", level: .trace)) { c in
            var edge = EdgeSettings()
            edge.insecureRegistries = ["127.0.0.1:\(closed)"]
            c.edge = edge
        }
        do {
            let secrets = cluster.client.api(Secret.self, namespace: "default")
            _ = try await cluster.trustedSigner()
            let dockerConfig = #"{"auths":{"127.0.0.1:\#(closed)":{"username":"bot","password":"\#(registryPassword)"}}}"#
            _ = try await secrets.create(
                Secret(
                    metadata: ObjectMeta(name: "pull", namespace: "default"), type: "kubernetes.io/dockerconfigjson",
                    stringData: [".dockerconfigjson": dockerConfig]))
            let edge = Edge(
                images: [.init(name: "car", dockerfile: "Dockerfile", platform: "linux/arm64", repository: "127.0.0.1:\(closed)/meteor/car")],
                signing: .init(publicKeySecretRef: .init(name: "cosign-pub"), pullSecretRef: .init(name: "pull")),
                targets: [.init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy", namespace: "car")])
            _ = try await cluster.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: "car"),
                        spec: .init(url: "https://github.com/x/car", ref: "main", pipelines: ["edge", "jupyterhub"], edge: edge))))
            let run = EdgePipelineRunBuilder.name(meteor: "car", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await cluster.waitFor(cluster.runs, run) { $0 != nil }
            try await cluster.tekton(
                run, .succeeded,
                results: ["IMAGE_URL": "127.0.0.1:\(closed)/meteor/car:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "f", count: 64)])
            let meteor = try await cluster.waitFor(cluster.meteors, "car") { condition($0, "ImagesVerified")?["reason"] == "RegistryUnavailable" }
            let events = try await cluster.client.dynamic(Event.resourceType, namespace: "default").list().items
            #expect(!events.isEmpty)
            let outputs = [
                ("logs", capture.text), ("events", JSONValue.array(events).serializedString()),
                ("status", meteor?["status"]?.serializedString() ?? ""), ("metrics", env.manager.metrics.render()),
            ]
            #expect(capture.text.contains("reconcile") || capture.text.count > 1000, "the capture saw the operator's logs")
            for (what, text) in outputs {
                for secret in [
                    apiToken, registryPassword, Data(registryPassword.utf8).base64EncodedString(),
                    Data("bot:\(registryPassword)".utf8).base64EncodedString(),
                ] {
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

    // MARK: The Shower acts as its user (issue 15, item 1)

    /// An attacker who can reach the page (any Pod of the cluster) sends the header the sign-in proxy would.
    /// The page believes it only from the proxy's address: here the proxy is 10.0.0.0/8 and the request comes from
    /// 127.0.0.1, so the attacker is anonymous, the page read-only, and nothing reaches the API server. A header
    /// naming a system user from the proxy itself is not acted on either.
    @Test func aForgedIdentityHeaderFromAnUntrustedPeerGrantsNothing() async throws {
        try await ShowerHarness.with(trustedProxies: ["10.0.0.0/8"]) { h in
            let page = try await h.get("/", headers: [("X-Forwarded-User", "alice")])
            #expect(!page.body.contains("alice"), "the page does not greet the forged user")
            #expect(page.body.contains("Sign in to submit"))
            let forged = try await h.submit(url: "https://github.com/x/forged", user: "alice")
            #expect(forged.status == 403)
            #expect(forged.body.contains("Sign in to submit"))
            _ = try await h.env.cluster.meteors.create(meteor("theirs"))
            let s = try await h.session(user: "alice")
            #expect(try await h.post("/meteors/theirs/delete", form: [("csrf", s.token)], headers: s.headers).status == 403)
            // The only Meteor write the server saw is the test's own create of "theirs".
            let writes = h.env.cluster.server.requestLog.filter { $0.path.contains("/meteors") && ["create", "delete"].contains($0.verb) }
            #expect(writes.map(\.verb) == ["create"], "the page sent writes for a forged user: \(writes)")
            #expect(try await h.env.cluster.meteors.list().items.count == 1)
        }
        try await ShowerHarness.with { h in
            let system = try await h.submit(url: "https://github.com/x/system", user: "system:admin")
            #expect(system.status == 403, "the page never acts as a system user")
            #expect(try await h.env.cluster.meteors.list().items.isEmpty)
        }
    }

    /// CSRF tokens are the server's: a value the client made up (the old double-submit check accepted any cookie
    /// that matched the form), a token with its signature altered, one minted for another user, and one minted by
    /// another server's key are all refused; the token the page minted for this user goes through.
    @Test func csrfTokensTheServerDidNotMintForThisUserAreRefused() async throws {
        let otherKey = SymmetricKey(size: .bits256)
        try await ShowerHarness.with { h in
            let form = [("url", "https://github.com/x/forged"), ("ref", "main"), ("pipelines[]", "jupyterhub")]
            func attempt(_ token: String, user: String = "alice") async throws -> Int {
                try await h.post(
                    "/meteors", form: [("csrf", token)] + form, headers: [("Cookie", "\(CSRFTokens.cookie)=\(token)"), ("X-Forwarded-User", user)]
                ).status
            }
            #expect(try await attempt(String(repeating: "a", count: 64)) == 403, "made up by the client, in the old format")
            let alice = try await h.session(user: "alice")
            let tampered = String(alice.token.dropLast()) + (alice.token.hasSuffix("0") ? "1" : "0")
            #expect(try await attempt(tampered) == 403, "its signature altered")
            let bob = try await h.session(user: "bob")
            #expect(try await attempt(bob.token, user: "alice") == 403, "minted for bob, used as alice")
            #expect(try await attempt(CSRFTokens(key: otherKey).mint(for: "user:alice")) == 403, "minted by another key")
            #expect(try await h.env.cluster.meteors.list().items.isEmpty)
            #expect(try await attempt(alice.token) == 303, "the page's own token for alice")
        }
        // Replicas sharing a key (--shower-session-key-file) accept each other's tokens.
        try await ShowerHarness.with(configure: { $0.sessionKey = otherKey }) { (h: ShowerHarness) async throws in
            let token = CSRFTokens(key: otherKey).mint(for: "user:alice")
            let response = try await h.post(
                "/meteors", form: [("csrf", token), ("url", "https://github.com/x/shared"), ("ref", "main"), ("pipelines[]", "jupyterhub")],
                headers: [("Cookie", "\(CSRFTokens.cookie)=\(token)"), ("X-Forwarded-User", "alice")])
            #expect(response.status == 303)
        }
    }

    /// Writes carry the person's identity: the page's ServiceAccount may only impersonate, so whether a create or
    /// delete goes through is the person's RBAC. alice (meteor-editor in the namespace) submits and deletes;
    /// mallory (no binding) is refused in the API server's words and nothing of hers is made or removed; the
    /// ServiceAccount itself cannot create a Meteor. On the real control plane this is real RBAC with the shipped
    /// `config/shower/shower_role.yaml`.
    @Test(arguments: Backend.testable) func writesActAsTheSignedInUserSoTheirRBACDecides(_ backend: Backend) async throws {
        try await ShowerHarness.with(on: backend, identity: .showerServiceAccount(people: ["alice"])) { h in
            let ns = h.env.namespace
            let refused = try await h.submit(url: "https://github.com/x/mallorys", user: "mallory")
            #expect(refused.status == 403)
            #expect(
                refused.body.contains("User &quot;mallory&quot; cannot create resource &quot;meteors&quot;")
                    || refused.body.contains("User \"mallory\" cannot create resource \"meteors\""), "\(refused.body.prefix(3000))")
            #expect(try await h.env.cluster.meteors.list().items.isEmpty)

            let created = try await h.submit(url: "https://github.com/x/alices", user: "alice")
            #expect(created.status == 303)
            #expect(try await h.env.cluster.meteors.get("alices")[path: "metadata", "annotations", MeteorShower.submitterAnnotation] == "alice")

            let mallory = try await h.session(user: "mallory")
            let notDeleted = try await h.post("/meteors/alices/delete", form: [("csrf", mallory.token)], headers: mallory.headers)
            #expect(notDeleted.status == 403)
            #expect(notDeleted.body.contains("cannot delete resource"))
            #expect(try await h.env.cluster.meteors.get("alices")[path: "metadata", "name"] == "alices")

            // The page's own identity cannot write a Meteor: the writes above were the people's.
            let own = h.pageClient
            await #expect(throws: KubeError.self) {
                _ = try await own.dynamic(Meteor.resourceType, namespace: ns).create(
                    try JSONValue(
                        encoding: Meteor(
                            metadata: ObjectMeta(name: "by-the-page", namespace: ns),
                            spec: .init(url: "https://github.com/x/y", ref: "main", pipelines: ["jupyterhub"]))))
            }

            let alice = try await h.session(user: "alice")
            #expect(try await h.post("/meteors/alices/delete", form: [("csrf", alice.token)], headers: alice.headers).status == 303)
            if let server = h.env.cluster.embedded {
                let writes = server.requestLog.filter {
                    $0.path.contains("/meteors") && ["create", "delete"].contains($0.verb) && $0.impersonatedBy != nil
                }
                #expect(
                    writes.map { "\($0.verb) \($0.user) \($0.code)" } == [
                        "create mallory 403", "create alice 201", "delete mallory 403", "delete alice 200",
                    ])
                #expect(Set(writes.compactMap(\.impersonatedBy)) == [ShowerHarness.serviceAccountUser(ns)])
            }
        }
    }

    /// Groups the proxy asserts are passed on only when configured (--shower-forward-group): a binding to a
    /// group works for its members then, and a group the operator was not told to forward is dropped (here one
    /// that would grant everything).
    @Test func onlyConfiguredGroupsArePassedOn() async throws {
        try await ShowerHarness.with(identity: .showerServiceAccount(people: []), configure: { $0.forwardedGroups = ["data-science"] }) {
            (h: ShowerHarness) async throws in
            let ns = h.env.namespace
            let page = ShowerHarness.serviceAccountUser(ns)
            h.env.cluster.server.authorize { a in
                if a.user == .admin { return true }
                if a.user.name == page {
                    return a.verb == "impersonate" && (a.resource == "users" || (a.resource == "groups" && a.name == "data-science"))
                }
                if a.user.groups.contains("cluster-admins") { return true }
                return a.user.groups.contains("data-science") && a.namespace == ns && a.resource == "meteors"
            }
            func submit(_ user: String, groups: String, url: String) async throws -> Int {
                let s = try await h.session(user: user)
                return try await h.post(
                    "/meteors", form: [("csrf", s.token), ("url", url), ("ref", "main"), ("ttl", "3600"), ("pipelines[]", "jupyterhub")],
                    headers: s.headers + [("X-Forwarded-Groups", groups)]
                ).status
            }
            #expect(try await submit("carol", groups: "data-science", url: "https://github.com/x/carols") == 303)
            #expect(try await submit("dave", groups: "cluster-admins", url: "https://github.com/x/daves") == 403)
            #expect(try await h.env.cluster.meteors.list().items.compactMap { $0[path: "metadata", "name"]?.stringValue } == ["carols"])
        }
    }

    /// The rate limit follows the signed-in user, or the peer when anonymous: an anonymous client changing the
    /// identity header on every request (the old limiter keyed on it) still runs out. The limiter's table stays
    /// bounded under a flood of new keys and never drops the key it is serving.
    @Test func theRateLimitCannotBeDodgedByChangingHeadersAndItsTableStaysBounded() async throws {
        try await ShowerHarness.with(allowAnonymous: true, burst: 2, trustedProxies: []) { h in
            #expect(try await h.submit(url: "https://github.com/x/a", user: "u1").status == 303)
            #expect(try await h.submit(url: "https://github.com/x/b", user: "u2").status == 303)
            let limited = try await h.submit(url: "https://github.com/x/c", user: "u3")
            #expect(limited.status == 429)
            #expect(limited.body.contains("Too many submissions from 127.0.0.1"))
        }
        let limiter = SubmitRateLimiter(perMinute: 1, burst: 1, capacity: 100)
        let start = ContinuousClock.now
        #expect(limiter.take("peer:victim", now: start) == nil)
        for i in 0..<10_000 {
            _ = limiter.take("peer:10.\(i / 65536).\(i / 256 % 256).\(i % 256)", now: start + .milliseconds(i))
            #expect(limiter.count <= 100)
        }
        #expect(limiter.take("peer:newest", now: start + .seconds(11)) == nil)
        #expect(limiter.take("peer:newest", now: start + .seconds(11)) != nil, "the key being served is kept")
    }

    /// `config/shower` as installed: the page on the Pod's loopback behind an oauth2-proxy sidecar that sets the
    /// user headers, believed from 127.0.0.1 only; the Service and the NetworkPolicy reach the proxy's port and
    /// metrics only; the page's ServiceAccount may impersonate users and read its namespace, and may not create or
    /// delete Meteors itself. On the real control plane the rendered install is accepted by a server-side dry run.
    @Test func theShowerInstallPutsThePageBehindItsProxy() async throws {
        let repo = TestCluster.repositoryDirectory
        let rendered = try await runProcess(KitControlPlane.kubectlPath, ["kustomize", repo.appendingPathComponent("config/shower").path])
        #expect(rendered.status == 0, "\(rendered.output)")
        let docs = try YAML.parseAll(rendered.output)
        let deployment = try #require(docs.first { $0["kind"] == "Deployment" })
        let containers = deployment[path: "spec", "template", "spec", "containers"]?.arrayValue ?? []
        let manager = try #require(containers.first { $0["name"] == "manager" })
        let args = manager["args"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(args.contains("--shower-bind-address=127.0.0.1:8082"))
        #expect(args.contains("--shower-trusted-proxy=127.0.0.1/32"))
        #expect(!args.contains("--shower-allow-anonymous"))
        #expect(args.contains { $0.hasPrefix("--shower-session-key-file=") })
        let proxy = try #require(containers.first { $0["name"] == "oauth2-proxy" })
        let proxyArgs = proxy["args"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(proxyArgs.contains("--upstream=http://127.0.0.1:8082/") && proxyArgs.contains("--pass-user-headers=true"))
        let help = try await runProcess(operatorBinary, ["run", "--help"])
        for arg in args.dropFirst() { #expect(help.output.contains(String(arg.split(separator: "=")[0])), "\(arg)") }
        let service = try #require(docs.first { $0["kind"] == "Service" && $0[path: "metadata", "name"] == "meteor-shower" })
        #expect(service[path: "spec", "ports"]?.arrayValue?.first?["targetPort"] == "shower")
        #expect(proxy["ports"]?.arrayValue?.first?["name"] == "shower")
        let policy = try #require(docs.first { $0["kind"] == "NetworkPolicy" })
        let ports = (policy[path: "spec", "ingress"]?.arrayValue ?? []).flatMap { $0["ports"]?.arrayValue ?? [] }.compactMap { $0["port"]?.intValue }
        #expect(Set(ports) == [4180, 8443])
        // No grant lets the page's identity create or delete Meteors; it impersonates users and reads one namespace.
        let showerRoles = docs.filter {
            ["ClusterRole", "Role"].contains($0["kind"]?.stringValue) && ($0[path: "metadata", "name"]?.stringValue ?? "").contains("shower")
        }
        let rules = showerRoles.flatMap { r in (r["rules"]?.arrayValue ?? []).map { (r["kind"]?.stringValue ?? "", $0) } }
        for (kind, rule) in rules {
            let verbs = rule["verbs"]?.arrayValue?.compactMap(\.stringValue) ?? []
            #expect(!(rule["resources"]?.arrayValue ?? []).contains("meteors") || verbs == ["get"], "\(rule)")
            if kind == "ClusterRole" { #expect(verbs == ["impersonate"], "cluster-wide, the page only impersonates: \(rule)") }
        }
        if KitControlPlane.testsEnabled {
            let kit = try await KitControlPlane.shared()
            for ns in ["meteor-operator-system", "data-science", "argocd"] { _ = try await kit.kubectl(["create", "namespace", ns]) }
            try await kit.install("crds/meteor.zone_meteors.yaml")
            let dryRun = try await kit.kubectl(["apply", "--dry-run=server", "-f", "-"], input: rendered.output)
            #expect(dryRun.status == 0, "\(dryRun.output)")
            #expect(
                dryRun.output.contains("networkpolicy.networking.k8s.io/meteor-operator created (server dry run)")
                    || dryRun.output.contains("networkpolicy.networking.k8s.io/meteor-operator configured (server dry run)"), "\(dryRun.output)")
        }
    }

    // MARK: What a Meteor names cannot make the operator reach inside the cluster (issue 15, item 2)

    /// The policy's verdicts, with a hostile resolver: addresses inside the cluster are refused whatever they are
    /// written as; a name is resolved once and every address it resolves to is checked (a rebinding answer with
    /// one public and one loopback address is refused); the address checked is the one connected to; what the
    /// admin allowed is allowed as named.
    @Test func theEgressPolicyRefusesTheClusterAndTheHost() async throws {
        let lookups = Mutex<[String]>([])
        var policy = EgressPolicy()
        policy.resolve = { host in
            lookups.withLock { $0.append(host) }
            switch host {
            case "rebind.example": return ["93.184.216.34", "127.0.0.1"]
            case "public.example": return ["93.184.216.34"]
            case "cluster.example": return ["10.96.0.10"]
            default: throw EgressPolicy.Refused(message: "NXDOMAIN")
            }
        }
        let refused: [(String, Int, String)] = [
            ("127.0.0.1", 6443, "loopback"), ("::1", 443, "loopback"), ("::ffff:127.0.0.1", 80, "loopback"), ("0.0.0.0", 80, "unspecified"),
            ("169.254.169.254", 80, "link-local"), ("fe80::1", 80, "link-local"), ("10.96.0.1", 443, "the cluster's range 10.96.0.0/12"),
            ("kubernetes.default.svc", 443, "cluster-internal"), ("kubernetes.default", 443, "Kubernetes API server"), ("localhost", 80, "loopback"),
            ("registry", 5000, "single-label"), ("metadata.google.internal", 80, "metadata"), ("meteor.ns.svc.cluster.local", 80, "cluster-internal"),
            ("rebind.example", 443, "resolves to 127.0.0.1"), ("cluster.example", 443, "resolves to 10.96.0.10"),
        ]
        for (host, port, why) in refused {
            await #expect(throws: EgressPolicy.Refused.self, "\(host)") { _ = try await policy.admit(host: host, port: port) }
            do { _ = try await policy.admit(host: host, port: port) } catch let e as EgressPolicy.Refused {
                #expect(e.message.contains(why), "\(host): \(e.message)")
            }
        }
        lookups.withLock { $0 = [] }
        #expect(try await policy.admit(host: "public.example", port: 443) == "93.184.216.34", "the checked address is the one to connect to")
        #expect(lookups.withLock { $0 } == ["public.example"], "resolved once")
        policy.allowed = [.host("git.corp.example"), .hostPort("127.0.0.1", 8443), .range(AddressRange("10.96.0.0/16")!)]
        #expect(try await policy.admit(host: "git.corp.example", port: 22) == nil, "allowed by name: connected to by name")
        #expect(try await policy.admit(host: "127.0.0.1", port: 8443) == nil)
        await #expect(throws: EgressPolicy.Refused.self) { _ = try await policy.admit(host: "127.0.0.1", port: 6443) }
        #expect(try await policy.admit(host: "10.96.0.1", port: 443) == "10.96.0.1")
        #expect(EgressPolicy.Allowance("git.corp.example:8443") == .hostPort("git.corp.example", 8443))
        #expect(EgressPolicy.Allowance("[fd00::1]:5000") == .hostPort("fd00::1", 5000))
        #expect(EgressPolicy.Allowance("10.0.0.0/8") == .range(AddressRange("10.0.0.0/8")!))
        #expect(EgressPolicy.Allowance("not a host") == nil)
    }

    /// Meteors whose repository or registry is the API server, cloud metadata or a cluster Service: the operator
    /// says why in the status and sends nothing there (the embedded API server, on loopback, logs no request for
    /// a repository path); a repository on an allowed host is still read.
    @Test func meteorsNamingAddressesInsideTheClusterAreRefusedWithTheReason() async throws {
        try await MeteorEnvironment.with(configure: { c in
            var edge = EdgeSettings()
            edge.verificationRetry = .milliseconds(300)
            c.edge = edge
        }) { env in
            let c = env.cluster
            _ = try await c.trustedSigner()
            func edge(_ repository: String, release: Bool) -> Edge {
                Edge(
                    images: [.init(name: "car", dockerfile: "Dockerfile", platform: "linux/arm64", repository: repository)],
                    signing: .init(publicKeySecretRef: .init(name: "cosign-pub")),
                    targets: [.init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy", namespace: "car")],
                    release: release ? .init(tagPattern: "v*") : nil)
            }
            let remotes = [
                ("api-server", "http://127.0.0.1:\(c.server.port)/repo.git", "is loopback"),
                ("metadata", "http://169.254.169.254/latest/meta-data.git", "link-local"),
                ("kubernetes", "https://kubernetes.default.svc/repo.git", "cluster-internal"),
            ]
            for (name, url, _) in remotes {
                _ = try await c.meteors.create(
                    try JSONValue(
                        encoding: Meteor(
                            metadata: ObjectMeta(name: name),
                            spec: .init(url: url, ref: "main", pipelines: ["edge"], edge: edge("quay.io/x/car", release: true)))))
            }
            for (name, _, why) in remotes {
                let m = try await c.waitFor(c.meteors, name) {
                    condition($0, "ImagesBuilt")?["reason"] == "GitRemoteUnavailable" || condition($0, "Ready")?["reason"] == "InvalidSpec"
                }
                #expect(
                    condition(m, "ImagesBuilt")?["message"]?.stringValue?.contains(why) == true,
                    "\(name): \(condition(m, "ImagesBuilt")?["message"] ?? .null)")
            }
            // A reconcile before the next check of the remote (a spec change here) says what the last check found.
            // It used to say "no tag matches v*" until the remote was read again, 5 minutes later.
            for (name, _, why) in remotes {
                _ = try await c.meteors.patch(name, .merge(["spec": ["ttl": 86400]]))
                let m = try await c.waitFor(c.meteors, name) { $0?[path: "status", "observedGeneration"] == 2 }
                #expect(
                    condition(m, "ImagesBuilt")?["reason"] == "GitRemoteUnavailable"
                        && condition(m, "ImagesBuilt")?["message"]?.stringValue?.contains(why) == true,
                    "\(name): \(condition(m, "ImagesBuilt") ?? .null)")
            }
            #expect(
                !c.server.requestLog.contains { $0.path.contains("repo.git") || $0.path.contains("info/refs") },
                "nothing reached the API server's port")

            // A registry at the metadata address: the built image is not fetched from there.
            _ = try await c.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: "metadata-registry"),
                        spec: .init(
                            url: "https://github.com/x/car", ref: "main", pipelines: ["edge"],
                            edge: edge("169.254.169.254/meteor/car", release: false)))))
            let run = EdgePipelineRunBuilder.name(
                meteor: "metadata-registry", image: "car", build: EdgeBuild(ref: "main", release: nil, generation: 1))
            _ = try await c.waitFor(c.runs, run) { $0 != nil }
            try await c.tekton(
                run, .succeeded,
                results: ["IMAGE_URL": "169.254.169.254/meteor/car:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "e", count: 64)])
            let m = try await c.waitFor(c.meteors, "metadata-registry") { condition($0, "ImagesVerified")?["reason"] == "RegistryUnavailable" }
            #expect(
                condition(m, "ImagesVerified")?["message"]?.stringValue?.contains("link-local") == true, "\(condition(m, "ImagesVerified") ?? .null)")
            #expect(try await c.applications.list().items.isEmpty)
            ReliabilityReport.row(
                "Meteors naming the API server's port, 169.254.169.254 and kubernetes.default.svc as their repository, and 169.254.169.254 as their registry",
                injected: "4 Meteors",
                did: "GitRemoteUnavailable / RegistryUnavailable naming why (loopback, link-local, cluster-internal), no connection made",
                lost: "0 requests reached the API server's port; 0 Applications")
        }
    }

    /// Hostile remotes on a host the admin allowed: a redirect to another host, to a loopback port not allowed, in
    /// a loop; a body that never ends (slow loris); a manifest past the size limit; a token realm on another host.
    /// Each is refused with its reason within the deadline, and no credentials go to the realm.
    @Test func hostileRemotesAreRefusedWithinTheirLimits() async throws {
        let apiPort = try LocalRegistry.freePort()
        let server = try await HostileHTTPServer.start { path, _ in
            switch path {
            case "/elsewhere.git/info/refs": return .redirect("http://localhost:1/elsewhere.git/info/refs")
            case "/api.git/info/refs": return .redirect("http://127.0.0.1:\(apiPort)/api/v1/secrets")
            case "/loop.git/info/refs": return .redirect("/loop.git/info/refs?again")
            case "/slow.git/info/refs": return .trickle(.milliseconds(200))
            case "/v2/huge/manifests/v1": return .huge(5 << 20)
            case "/v2/realm/manifests/v1":
                return .reply(401, headers: [("WWW-Authenticate", "Bearer realm=\"https://localhost:1/token\",service=\"x\"")])
            case "/v2/plainrealm/manifests/v1":
                return .reply(401, headers: [("WWW-Authenticate", "Bearer realm=\"http://metadata.example/token\",service=\"x\"")])
            default: return .reply(404)
            }
        }
        defer { Task { await server.stop() } }
        var policy = EgressPolicy(allowing: [.hostPort("127.0.0.1", server.port)])
        policy.deadline = .seconds(2)
        func gitFailure(_ repo: String) async -> String {
            do {
                _ = try await GitRemote(url: "http://\(server.address)/\(repo).git", egress: policy).refs()
                return "listed"
            } catch { return "\(error)" }
        }
        #expect(await gitFailure("elsewhere").contains("redirected to another host (localhost)"))
        #expect(await gitFailure("api").contains("127.0.0.1:\(apiPort) is loopback"))
        #expect(await gitFailure("loop").contains("redirected more than 5 times"))
        let started = ContinuousClock.now
        #expect(await gitFailure("slow").contains("did not answer in full within 2"))
        #expect(ContinuousClock.now - started < .seconds(10), "the deadline covers the body")

        let registry = RegistryClient(insecure: true, credentials: [server.address: .init(username: "bot", password: "s3cr3t")], egress: policy)
        func registryFailure(_ repo: String) async -> String {
            do {
                _ = try await registry.manifest(try .init(parsing: "\(server.address)/\(repo)"), reference: "v1")
                return "read"
            } catch { return "\(error)" }
        }
        #expect(await registryFailure("huge").contains("answered more than \(RegistryClient.manifestLimit) bytes"))
        #expect(await registryFailure("realm").contains("is on another host than the registry (localhost)"))
        #expect(await registryFailure("plainrealm").contains("is on another host than the registry (metadata.example)"))
        #expect(!server.requests.contains { $0.path.contains("token") }, "no token request went anywhere")
        #expect(server.requests.allSatisfy { $0.authorization == nil }, "no credentials were sent")
        ReliabilityReport.row(
            "Hostile remotes: redirects to another host, to a loopback port and in a loop; a body trickling forever; a 5 MiB manifest; token realms on other hosts",
            injected: "7 remotes",
            did: "each refused with its reason within the 2 s deadline", lost: "0 credentials sent, 0 requests past the allowed host:port")
    }

    // MARK: Metrics behind the API server's authentication (issue 15, item 5)

    /// `run --metrics-secure`, as config/manager runs it: /metrics over HTTPS, 401 without a token the API server
    /// knows, 403 for a user not allowed `get` on /metrics, the metrics for one who is. On the real control plane the
    /// operator holds exactly config/rbac's grants (so its TokenReview and SubjectAccessReview are proven granted)
    /// and the scraper is bound to config/rbac's meteor-operator-metrics-reader; on the embedded server an
    /// authorizer holds the same rules.
    @Test(arguments: Backend.testable) func metricsAreServedOnlyToScrapersTheAPIServerAllows(_ backend: Backend) async throws {
        let c = try await TestCluster.on(backend, crds: ["crds/tekton/300-pipelinerun.yaml"])
        defer { Task { await c.shutdown() } }
        let kubeconfig: String
        let scraper: String, stranger: String
        if let kit = c.kit {
            let repo = TestCluster.repositoryDirectory
            try await kit.install("crds/meteor.zone_meteors.yaml")
            _ = try await kit.kubectl(["create", "namespace", "meteor-operator-system"])
            _ = try await kit.kubectlOK("apply", "-k", repo.appendingPathComponent("config/rbac").path)
            for sa in ["scraper", "stranger"] { _ = try await kit.kubectlOK("-n", c.namespace, "create", "serviceaccount", sa) }
            _ = try await kit.kubectlOK(
                "create", "clusterrolebinding", "metrics-reader-\(c.namespace)", "--clusterrole=meteor-operator-metrics-reader",
                "--serviceaccount=\(c.namespace):scraper")
            func token(_ namespace: String, _ sa: String) async throws -> String {
                try await kit.kubectlOK("-n", namespace, "create", "token", sa, "--duration=1h").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            kubeconfig = try kit.writeKubeconfig(token: try await token("meteor-operator-system", "meteor-operator"), namespace: c.namespace)
            scraper = try await token(c.namespace, "scraper")
            stranger = try await token(c.namespace, "stranger")
        } else {
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            scraper = "scraper-token"
            stranger = "stranger-token"
            c.server.addToken(scraper, for: UserInfo(name: "system:serviceaccount:default:scraper", groups: [UserInfo.authenticated]))
            c.server.addToken(stranger, for: UserInfo(name: "system:serviceaccount:default:stranger", groups: [UserInfo.authenticated]))
            c.server.authorize { a in
                if a.path != nil { return a.user.name.hasSuffix(":scraper") && a.path == "/metrics" && a.verb == "get" }
                return a.user == .admin
            }
            kubeconfig = try c.writeKubeconfig()
        }
        let port = try LocalRegistry.freePort()
        let op = try BackgroundProcess(
            operatorBinary,
            [
                "run", "--kubeconfig", kubeconfig, "--namespace", c.namespace, "--metrics-secure", "--metrics-bind-address", "127.0.0.1:\(port)",
                "--health-probe-bind-address", "0", "--log-format", "text",
            ])
        defer { op.terminate() }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { Task { try? await http.shutdown() } }
        func scrape(_ token: String?) async throws -> (Int, String) {
            var request = HTTPClientRequest(url: "https://127.0.0.1:\(port)/metrics")
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            let response = try await http.execute(request, timeout: .seconds(10))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 4 << 20)))
        }
        // Listening: the process binds the port once it has started; connection refusals come back at once.
        var first: (Int, String)?
        let deadline = ContinuousClock.now + .seconds(60)
        while first == nil, ContinuousClock.now < deadline, op.isRunning {
            first = try? await scrape(nil)
            if first == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(first?.0 == 401, "no token: \(String(describing: first))\n\(op.text.suffix(2000))")
        #expect(try await scrape("not-a-token").0 == 401)
        let forbidden = try await scrape(stranger)
        #expect(forbidden.0 == 403 && forbidden.1.contains("stranger"), "\(forbidden)")
        let allowed = try await scrape(scraper)
        #expect(
            allowed.0 == 200 && allowed.1.contains("rest_client_requests_total"), "\(allowed.0) \(allowed.1.prefix(300))\n\(op.text.suffix(2000))")
        // Plain HTTP gets nothing.
        await #expect(throws: (any Error).self) {
            _ = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(5)).body.collect(
                upTo: 1 << 20)
        }
        #expect(!op.text.contains("forbidden"), "the operator's own reviews were refused:\n\(op.text.suffix(2000))")
    }

    // MARK: Only keys the cluster admin trusts deploy to devices (issue 15, item 3)

    /// An edge environment on the embedded server with a real registry: the operator, a registry client for the
    /// test, and a way to push a signed image.
    struct EdgeBench {
        let env: MeteorEnvironment
        let registry: LocalRegistry
        let client = RegistryClient(insecure: true, egress: .unrestricted)
        var c: TestCluster { env.cluster }

        func image(
            _ repository: String, tag: String, platform: String = "linux/arm64", signedBy signer: CosignSigner?, annotations: [String: String] = [:]
        ) async throws -> String {
            let repo = try RegistryClient.Reference(parsing: "\(registry.address)/\(repository)")
            let digest = try await client.pushImage(repo, tag: tag, platform: platform, content: "\(repository) \(tag)")
            if let signer { try await sign(repository, digest: digest, with: signer, annotations: annotations) }
            return digest
        }

        func sign(_ repository: String, digest: String, with signer: CosignSigner, annotations: [String: String] = [:]) async throws {
            let repo = try RegistryClient.Reference(parsing: "\(registry.address)/\(repository)")
            try await client.push(
                try signer.sign(digest: digest, dockerReference: "\(registry.address)/\(repository)", annotations: annotations), to: repo)
        }

        /// A Meteor whose images (name, repository, cluster) each run on a target of their name on that cluster (and
        /// on the `extra` targets: name, cluster, image), built at once by the test.
        func deliver(
            _ name: String, images: [(String, String, String)], digests: [String], key: String? = nil, extra: [(String, String, String)] = [],
            results: [String: String] = [:],
            otherImages: [String: [String]] = [:]
        ) async throws {
            let edge = Edge(
                images: images.map {
                    .init(name: $0.0, dockerfile: "Dockerfile", platform: "linux/arm64", repository: "\(registry.address)/\($0.1)")
                },
                signing: .init(publicKeySecretRef: key.map { .init(name: $0) }),
                targets: images.map { .init(name: $0.0, cluster: $0.2, image: $0.0, path: "deploy", namespace: "car", images: otherImages[$0.0]) }
                    + extra.map { .init(name: $0.0, cluster: $0.1, image: $0.2, path: "deploy", namespace: "car") })
            _ = try await c.meteors.create(
                try JSONValue(
                    encoding: Meteor(
                        metadata: ObjectMeta(name: name),
                        spec: .init(url: "https://github.com/x/\(name)", ref: "main", pipelines: ["edge"], edge: edge))))
            for (image, digest) in zip(images, digests) {
                let run = EdgePipelineRunBuilder.name(meteor: name, image: image.0, build: EdgeBuild(ref: "main", release: nil, generation: 1))
                _ = try await c.waitFor(c.runs, run) { $0 != nil }
                try await c.tekton(
                    run, .succeeded, results: ["IMAGE_URL": "\(registry.address)/\(image.1):g1", "IMAGE_DIGEST": digest].merging(results) { $1 })
            }
        }

        func application(_ meteor: String, _ target: String) -> String {
            ArgoApplicationBuilder.name(meteorNamespace: "default", meteor: meteor, target: target)
        }

        static func with(_ body: (EdgeBench) async throws -> Void) async throws {
            let registry = try await LocalRegistry(port: nil)
            defer { registry.stop() }
            try await MeteorEnvironment.with(configure: { c in
                var edge = EdgeSettings()
                edge.insecureRegistries = [registry.address]
                edge.verificationRetry = .milliseconds(200)
                c.edge = edge
            }) { env in try await body(EdgeBench(env: env, registry: registry)) }
        }
    }

    /// Keys are the cluster admin's: with no EdgeTrustPolicy nothing deploys; an author's own key that no policy
    /// trusts is refused though the signature is good; a key trusted for one device cluster does not deploy to
    /// another; and the legitimate paths — the admin's key, or an author narrowing to it — deploy.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func onlyKeysATrustPolicyAllowsDeployAndOnlyWhereItAllows() async throws {
        try await EdgeBench.with { b in
            let c = b.c
            let admin = CosignSigner(), author = CosignSigner()
            let adminFingerprint = try SignatureVerifier(publicKeyPEM: admin.publicKeyPEM).fingerprint
            let secrets = c.client.api(Secret.self, namespace: "default")
            _ = try await secrets.create(
                Secret(metadata: ObjectMeta(name: "author-key", namespace: "default"), stringData: ["cosign.pub": author.publicKeyPEM]))
            _ = try await secrets.create(
                Secret(metadata: ObjectMeta(name: "admin-key", namespace: "default"), stringData: ["cosign.pub": admin.publicKeyPEM]))

            // No policy: not deployed, and the status says why.
            try await b.deliver(
                "unpoliced", images: [("car", "edge/unpoliced", "microshift-rpi")],
                digests: [try await b.image("edge/unpoliced", tag: "g1", signedBy: admin)])
            let unpoliced = try await c.waitFor(c.meteors, "unpoliced") { condition($0, "ImagesVerified")?["reason"] == "NoTrustPolicy" }
            #expect(
                condition(unpoliced, "ImagesVerified")?["message"]?.stringValue?.contains(
                    "no EdgeTrustPolicy trusts a key for \(b.registry.address)/edge/unpoliced on microshift-rpi") == true)

            try await c.trust("fleet", publicKeyPEM: admin.publicKeyPEM, images: ["\(b.registry.address)/edge/*"], clusters: ["microshift-rpi"])
            // The author signs with a key of their own and names it: refused, whatever the signature.
            try await b.deliver(
                "authored", images: [("car", "edge/authored", "microshift-rpi")],
                digests: [try await b.image("edge/authored", tag: "g1", signedBy: author)], key: "author-key")
            let authored = try await c.waitFor(c.meteors, "authored") { condition($0, "ImagesVerified")?["reason"] == "KeyNotTrusted" }
            #expect(condition(authored, "ImagesVerified")?["message"]?.stringValue?.contains("the key in Secret author-key") == true)
            // Signed by the author, without naming a key: the admin's key does not verify it.
            try await b.deliver(
                "sneaky", images: [("car", "edge/sneaky", "microshift-rpi")], digests: [try await b.image("edge/sneaky", tag: "g1", signedBy: author)]
            )
            _ = try await c.waitFor(c.meteors, "sneaky") { condition($0, "ImagesVerified")?["reason"] == "SignatureInvalid" }

            // The admin's key: deployed to the car, whose cluster the policy names; not the same image to a second
            // device on another cluster; and no key at all for an image that only runs on that cluster.
            try await b.deliver(
                "fleet", images: [("car", "edge/car", "microshift-rpi"), ("twin", "edge/twin", "microshift-nuc")],
                digests: [try await b.image("edge/car", tag: "g1", signedBy: admin), try await b.image("edge/twin", tag: "g1", signedBy: admin)],
                extra: [("car-on-nuc", "microshift-nuc", "car")])
            let car = try await c.waitFor(c.applications, b.application("fleet", "car")) { $0 != nil }
            #expect(car?[path: "metadata", "annotations", ArgoApplicationBuilder.keyAnnotation]?.stringValue == adminFingerprint)
            let fleet = try await c.waitFor(c.meteors, "fleet") {
                condition($0, "Deployed")?["reason"] == "KeyNotTrusted" && condition($0, "ImagesVerified")?["reason"] == "NoTrustPolicy"
            }
            #expect(
                condition(fleet, "Deployed")?["message"]?.stringValue?.contains("car-on-nuc (microshift-nuc): key \(adminFingerprint) is not trusted")
                    == true, "\(condition(fleet, "Deployed") ?? .null)")
            #expect(
                condition(fleet, "ImagesVerified")?["message"]?.stringValue?.contains("edge/twin on microshift-nuc") == true,
                "\(condition(fleet, "ImagesVerified") ?? .null)")
            // An author narrowing to the admin's key: deployed.
            try await b.deliver(
                "narrowed", images: [("car", "edge/narrowed", "microshift-rpi")],
                digests: [try await b.image("edge/narrowed", tag: "g1", signedBy: admin)], key: "admin-key")
            _ = try await c.waitFor(c.applications, b.application("narrowed", "car")) { $0 != nil }

            // The policy's arrival judged the waiting Meteor again: its image, signed by the admin's key, is delivered.
            _ = try await c.waitFor(c.applications, b.application("unpoliced", "car")) { $0 != nil }
            let apps = try await c.applications.list().items.compactMap { $0[path: "metadata", "name"]?.stringValue }.sorted()
            #expect(apps == [b.application("fleet", "car"), b.application("narrowed", "car"), b.application("unpoliced", "car")].sorted(), "\(apps)")
            ReliabilityReport.row(
                "Edge images signed by keys the cluster admin did not trust: no policy, an author's own key (named and not), a key trusted for another device cluster",
                injected: "4 Meteors, 5 images",
                did: "NoTrustPolicy, KeyNotTrusted, SignatureInvalid, Deployed=False KeyNotTrusted for the other cluster; the admin's key deployed",
                lost: "0 Applications for untrusted images")
        }
    }

    /// A key revoked in the policy stops delivery of what it signed (the Application is deleted, the Meteor says so,
    /// a Warning Event); once the image is signed with the rotated-in key, delivery resumes with that key recorded.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func aRevokedKeyStopsDeliveryAndTheRotatedKeyResumesIt() async throws {
        try await EdgeBench.with { b in
            let c = b.c
            let old = CosignSigner(), new = CosignSigner()
            let oldFingerprint = try SignatureVerifier(publicKeyPEM: old.publicKeyPEM).fingerprint,
                newFingerprint = try SignatureVerifier(publicKeyPEM: new.publicKeyPEM).fingerprint
            try await c.trust("fleet", publicKeyPEM: old.publicKeyPEM, images: ["\(b.registry.address)/edge/*"])
            let digest = try await b.image("edge/car", tag: "g1", signedBy: old)
            try await b.deliver("car", images: [("car", "edge/car", "microshift-rpi")], digests: [digest])
            let app = b.application("car", "car")
            _ = try await c.waitFor(c.applications, app) {
                $0?[path: "metadata", "annotations", ArgoApplicationBuilder.keyAnnotation]?.stringValue == oldFingerprint
            }

            // Rotation: the old key revoked, a new one trusted.
            let policies = c.client.dynamic(EdgeTrustPolicy.resourceType)
            var policy = try await policies.get("fleet")
            policy[path: "spec", "keys"] = [
                ["name": "old", "publicKey": .string(old.publicKeyPEM), "revoked": true], ["name": "new", "publicKey": .string(new.publicKeyPEM)],
            ]
            _ = try await policies.replace(policy)
            _ = try await c.waitFor(c.applications, app) { $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil }
            let stopped = try await c.waitFor(c.meteors, "car") { condition($0, "Deployed")?["reason"] == "KeyNotTrusted" }
            #expect(
                condition(stopped, "Deployed")?["message"]?.stringValue?.contains(
                    "delivery of \(b.registry.address)/edge/car@\(digest) on microshift-rpi stopped") == true,
                "\(condition(stopped, "Deployed") ?? .null)")
            #expect(try await c.waitForEvent(about: "car", reason: "DeliveryStopped") != nil)
            // Argo CD removes what it deployed, then lets the Application go.
            _ = try await c.applications.patch(app, .merge(["metadata": ["finalizers": []]]))
            _ = try await c.waitFor(c.applications, app) { $0 == nil }

            // Signed again with the new key: delivered again, with that key recorded.
            try await b.sign("edge/car", digest: digest, with: new)
            let resumed = try await c.waitFor(c.applications, app) {
                $0?[path: "metadata", "annotations", ArgoApplicationBuilder.keyAnnotation]?.stringValue == newFingerprint
            }
            #expect(resumed?[path: "metadata", "annotations", "meteor.zone/image"]?.stringValue == "\(b.registry.address)/edge/car@\(digest)")
            ReliabilityReport.row(
                "A signing key revoked (and a new one trusted) while its image runs on a device", injected: "1 EdgeTrustPolicy change",
                did:
                    "Application deleted (Deployed=False KeyNotTrusted, Warning DeliveryStopped); re-delivered once signed with the new key, which the Application records",
                lost: "0 deployments left running on a revoked key")
        }
    }

    /// Devices sync the commit an image was built from, never a branch that may have moved since: a build that
    /// reports no commit (a Pipeline without the COMMIT result, a forged result) is not deployed; one that does is
    /// pinned to it.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func devicesGetTheCommitTheImageWasBuiltFromNeverABranch() async throws {
        try await EdgeBench.with { b in
            let c = b.c
            let signer = CosignSigner()
            try await c.trust(publicKeyPEM: signer.publicKeyPEM)
            try await b.deliver(
                "unpinned", images: [("car", "edge/unpinned", "microshift-rpi")],
                digests: [try await b.image("edge/unpinned", tag: "g1", signedBy: signer)], results: ["COMMIT": "main"])
            let refused = try await c.waitFor(c.meteors, "unpinned") { condition($0, "ImagesVerified")?["reason"] == "CommitUnknown" }
            #expect(condition(refused, "ImagesVerified")?["message"]?.stringValue?.contains("never a branch (main)") == true)
            try await b.deliver(
                "pinned", images: [("car", "edge/pinned", "microshift-rpi")], digests: [try await b.image("edge/pinned", tag: "g1", signedBy: signer)]
            )
            let app = try await c.waitFor(c.applications, b.application("pinned", "car")) { $0 != nil }
            #expect(app?[path: "spec", "source", "targetRevision"] == .string(TestCluster.commit(of: "main")))
            #expect(
                try await c.waitFor(c.meteors, "pinned") { $0?[path: "status", "images"]?.arrayValue?.first?["commit"] != nil }?[
                    path: "status", "images"]?.arrayValue?.first?["commit"] == .string(TestCluster.commit(of: "main")))
            #expect(try await c.applications.list().items.count == 1, "nothing deployed for the build without a commit")
        }
    }

    /// An older image, signed when it was built from an older commit, is not deployed as a new build's: the sign
    /// Task signs the commit built (`meteor.zone/commit`), and a signature for another commit is refused. A policy
    /// that requires the commit refuses signatures without one. A rollback is a spec change to the older ref, built
    /// and signed for that commit (a new generation, with its Events), never a digest slipped in.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func anImageSignedForAnotherCommitIsNotDeployedAsThisBuild() async throws {
        try await EdgeBench.with { b in
            let c = b.c
            let signer = CosignSigner()
            try await c.trust("fleet", publicKeyPEM: signer.publicKeyPEM, images: ["\(b.registry.address)/edge/*"])
            try await c.trust("strict", publicKeyPEM: signer.publicKeyPEM, images: ["\(b.registry.address)/strict/*"])
            var strict = try await c.client.dynamic(EdgeTrustPolicy.resourceType).get("strict")
            strict[path: "spec", "requireSignedCommit"] = true
            _ = try await c.client.dynamic(EdgeTrustPolicy.resourceType).replace(strict)
            let built = TestCluster.commit(of: "main"), older = TestCluster.commit(of: "v0.9.0")
            let commit = SimpleSigningPayload.commitAnnotation

            try await b.deliver(
                "replayed", images: [("car", "edge/replayed", "microshift-rpi")],
                digests: [try await b.image("edge/replayed", tag: "g1", signedBy: signer, annotations: [commit: older])])
            let replayed = try await c.waitFor(c.meteors, "replayed") { condition($0, "ImagesVerified")?["reason"] == "CommitMismatch" }
            #expect(
                condition(replayed, "ImagesVerified")?["message"]?.stringValue?.contains(
                    "the signature is for commit \(older), but this build is of \(built)") == true,
                "\(condition(replayed, "ImagesVerified") ?? .null)")

            try await b.deliver(
                "unsigned-commit", images: [("car", "strict/car", "microshift-rpi")],
                digests: [try await b.image("strict/car", tag: "g1", signedBy: signer)])
            _ = try await c.waitFor(c.meteors, "unsigned-commit") { condition($0, "ImagesVerified")?["reason"] == "CommitNotSigned" }

            try await b.deliver(
                "current", images: [("car", "strict/current", "microshift-rpi")],
                digests: [try await b.image("strict/current", tag: "g1", signedBy: signer, annotations: [commit: built])])
            _ = try await c.waitFor(c.applications, b.application("current", "car")) {
                $0?[path: "spec", "source", "targetRevision"] == .string(built)
            }
            #expect(try await c.applications.list().items.count == 1, "only the image signed for the commit built is deployed")
            ReliabilityReport.row(
                "An older signed image reported as a new build's digest; a signature without the commit where the policy requires it",
                injected: "2 images",
                did: "CommitMismatch, CommitNotSigned; the image signed for the commit built is deployed at that commit",
                lost: "0 Applications for replayed images")
        }
    }

    /// Every image a target runs is pinned and verified: images its manifests run besides the built one are declared
    /// by digest, verified against the trust policies for its cluster and pinned in the Application, or the target
    /// is not deployed; and when Argo CD reports the synced resources running an image that was not given pinned
    /// (an undeclared sidecar, a tag), that target's delivery is stopped and stays stopped until the commit or the
    /// declaration changes.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func everyImageATargetRunsIsPinnedAndVerifiedOrItsDeliveryStops() async throws {
        try await EdgeBench.with { b in
            let c = b.c
            let signer = CosignSigner()
            try await c.trust(publicKeyPEM: signer.publicKeyPEM, images: ["\(b.registry.address)/edge/*"])
            let sidecar = "\(b.registry.address)/edge/sidecar@\(try await b.image("edge/sidecar", tag: "v1", signedBy: signer))"
            let unsigned = "\(b.registry.address)/edge/unsigned@\(try await b.image("edge/unsigned", tag: "v1", signedBy: nil))"

            // Declared and signed: pinned beside the built image.
            let declaredDigest = try await b.image("edge/declared", tag: "g1", signedBy: signer)
            try await b.deliver(
                "declared", images: [("car", "edge/declared", "microshift-rpi")], digests: [declaredDigest], otherImages: ["car": [sidecar]])
            let app = try #require(try await c.waitFor(c.applications, b.application("declared", "car")) { $0 != nil })
            let pinned = "\(b.registry.address)/edge/declared@\(declaredDigest)"
            #expect(
                app[path: "spec", "source", "kustomize", "images"] == [
                    .string("\(b.registry.address)/edge/declared=\(pinned)"), .string("\(b.registry.address)/edge/sidecar=\(sidecar)"),
                ])
            try await c.argo(b.application("declared", "car"), sync: "Synced", health: "Healthy", images: [pinned, sidecar])
            _ = try await c.waitFor(c.meteors, "declared") { condition($0, "Deployed")?["status"] == "True" }

            // Declared but unsigned: not deployed.
            try await b.deliver(
                "unsigned", images: [("car", "edge/unsigned-car", "microshift-rpi")],
                digests: [try await b.image("edge/unsigned-car", tag: "g1", signedBy: signer)], otherImages: ["car": [unsigned]])
            let refused = try await c.waitFor(c.meteors, "unsigned") { condition($0, "Deployed")?["reason"] == "UnverifiedImage" }
            #expect(
                condition(refused, "Deployed")?["message"]?.stringValue?.contains("\(unsigned): SignatureMissing") == true,
                "\(condition(refused, "Deployed") ?? .null)")

            // Undeclared: the manifests run a tag nobody pinned; delivery stops when Argo CD says so.
            let sneakyDigest = try await b.image("edge/sneaky", tag: "g1", signedBy: signer)
            try await b.deliver("sneaky", images: [("car", "edge/sneaky", "microshift-rpi")], digests: [sneakyDigest])
            let sneaky = b.application("sneaky", "car")
            _ = try await c.waitFor(c.applications, sneaky) { $0 != nil }
            try await c.argo(
                sneaky, sync: "Synced", health: "Healthy",
                images: ["\(b.registry.address)/edge/sneaky@\(sneakyDigest)", "docker.io/library/busybox:latest"])
            _ = try await c.waitFor(c.applications, sneaky) { $0 == nil || $0?[path: "metadata", "deletionTimestamp"] != nil }
            #expect(
                try await c.waitForEvent(about: "sneaky", reason: "DeliveryStopped")?["message"]?.stringValue?.contains(
                    "docker.io/library/busybox:latest") == true)
            _ = try await c.applications.patch(sneaky, .merge(["metadata": ["finalizers": []]]))
            let stopped = try await c.waitFor(c.meteors, "sneaky") {
                condition($0, "Deployed")?["message"]?.stringValue?.contains("delivery stopped, its manifests ran images not pinned") == true
            }
            #expect(condition(stopped, "Deployed")?["reason"] == "UnverifiedImage")
            #expect(
                try await c.applications.list().items.compactMap { $0[path: "metadata", "name"]?.stringValue } == [b.application("declared", "car")],
                "neither refused target was (re)delivered")
            ReliabilityReport.row(
                "Images a target runs besides the built one: declared but unsigned; undeclared, reported by Argo CD after sync",
                injected: "2 targets",
                did:
                    "Deployed=False UnverifiedImage; the undeclared one's Application deleted (DeliveryStopped) and not delivered again for that commit",
                lost: "0 targets left running unverified images")
        }
    }

}
