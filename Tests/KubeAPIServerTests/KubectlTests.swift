import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import Testing

/// The real kubectl builds on this machine (1.27 to 1.33), so the server is checked against clients nobody here wrote.
let kubectlBinaries: [String] = {
    var found = ["/usr/bin/kubectl"].filter { FileManager.default.isExecutableFile(atPath: $0) }
    for minor in 27...33 {
        let p = "/usr/lib/google-cloud-sdk/bin/kubectl.1.\(minor)"
        if FileManager.default.isExecutableFile(atPath: p) { found.append(p) }
    }
    // Under CI a machine without kubectl fails these tests instead of skipping them.
    if found.isEmpty, ProcessInfo.processInfo.environment["CI"] == "true" { found = ["/usr/bin/kubectl"] }
    return found
}()

struct Kubectl {
    let binary: String
    let kubeconfig: String
    let cacheDir: String

    func run(_ args: String..., input: String? = nil) async throws -> (status: Int32, output: String) {
        try await runProcess(binary, ["--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args, input: input)
    }

    @discardableResult
    func ok(_ args: String..., input: String? = nil) async throws -> String {
        let r = try await runProcess(binary, ["--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args, input: input)
        #expect(r.status == 0, "kubectl \(args.joined(separator: " ")) failed: \(r.output)")
        return r.output
    }
}

@Suite(.serialized) struct KubectlTests {
    static let sampleMeteor = """
        apiVersion: meteor.zone/v1alpha1
        kind: Meteor
        metadata:
          name: demo
        spec:
          url: https://github.com/aicoe-aiops/meteor-demo
          ref: main
        """

    @Test(.enabled(if: !kubectlBinaries.isEmpty, "no kubectl on this machine"), arguments: kubectlBinaries)
    func kubectlAppliesGetsWaitsAndDeletes(_ binary: String) async throws {
        try await TestCluster.with(tls: true, token: "kubectl-token", crds: []) { c in
            let dir = try FileManager.default.temporaryDirectory.appendingPathComponent("kubectl-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let k = Kubectl(binary: binary, kubeconfig: try c.writeKubeconfig(), cacheDir: dir.path)
            let crdPath = TestCluster.sharedDirectory.appendingPathComponent("crds/reference/meteor.zone_meteors.yaml").path
            try await k.ok("apply", "-f", crdPath)
            #expect(
                try await k.ok("get", "crd", "meteors.meteor.zone", "-o", "jsonpath={.status.conditions[?(@.type==\"Established\")].status}")
                    == "True")

            #expect(try await k.ok("apply", "-f", "-", input: Self.sampleMeteor).contains("meteor.meteor.zone/demo created"))
            #expect(try await k.ok("apply", "-f", "-", input: Self.sampleMeteor).contains("unchanged"))

            let table = try await k.ok("get", "meteors")
            let header = table.split(separator: "\n").first.map(String.init) ?? ""
            #expect(header.split(separator: " ", omittingEmptySubsequences: true) == ["NAME", "PHASE", "URL"])
            #expect(table.contains("demo") && table.contains("https://github.com/aicoe-aiops/meteor-demo"))

            // Strict field validation is kubectl's default: an unknown field is refused.
            let bad = try await k.run(
                "apply", "-f", "-", input: Self.sampleMeteor.replacingOccurrences(of: "ref: main", with: "ref: main\n  bogus: 1"))
            #expect(bad.status != 0)
            #expect(bad.output.contains("unknown field \"spec.bogus\""))

            // Schema violations come back with the field path.
            let invalid = try await k.run(
                "apply", "-f", "-", input: Self.sampleMeteor.replacingOccurrences(of: "https://github.com", with: "ftp://github.com"))
            #expect(invalid.status != 0)
            #expect(invalid.output.contains("spec.url"))

            // `kubectl wait` returns once another writer sets the condition.
            async let waited = k.run("wait", "--for=condition=Ready", "meteor/demo", "--timeout=30s")
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.patchStatus(
                "demo",
                .merge([
                    "status": [
                        "phase": "Ready",
                        "conditions": [
                            [
                                "type": "Ready", "status": "True", "reason": "BuildsSucceeded", "message": "done",
                                "lastTransitionTime": .string(KubeTime.format(Date())),
                            ]
                        ],
                    ]
                ]))
            let w = try await waited
            #expect(w.status == 0, "kubectl wait failed: \(w.output)")
            #expect(w.output.contains("condition met"))
            #expect(try await k.ok("get", "meteor", "demo", "-o", "jsonpath={.status.phase}") == "Ready")

            // Another manager taking spec.ref conflicts with kubectl's client-side apply, as on a real cluster.
            let conflict = try await k.run(
                "apply", "--server-side", "--field-manager=gitops", "-f", "-",
                input: Self.sampleMeteor.replacingOccurrences(of: "ref: main", with: "ref: v2"))
            #expect(conflict.status != 0)
            #expect(conflict.output.contains("conflict with \"kubectl-client-side-apply\""))
            try await k.ok(
                "apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", "-",
                input: Self.sampleMeteor.replacingOccurrences(of: "ref: main", with: "ref: v2"))
            #expect(try await meteors.get("demo")[path: "spec", "ref"] == "v2")

            #expect(try await k.ok("delete", "meteor", "demo").contains("deleted"))
            #expect(try await k.ok("get", "meteors", "-o", "name").isEmpty)
        }
    }

    @Test(.enabled(if: !kubectlBinaries.isEmpty, "no kubectl on this machine"))
    func kubectlManagesBuiltInKinds() async throws {
        try await TestCluster.with(crds: []) { c in
            let dir = try FileManager.default.temporaryDirectory.appendingPathComponent("kubectl-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let k = Kubectl(binary: kubectlBinaries[0], kubeconfig: try c.writeKubeconfig(), cacheDir: dir.path)
            // Typed `kubectl create` of built-in kinds sends protobuf, which the server does not speak (it answers 415);
            // apply, label, get and delete go through JSON.
            try await k.ok("apply", "-f", "-", input: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n")
            try await k.ok(
                "-n", "team", "apply", "-f", "-", input: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n")
            try await k.ok(
                "-n", "team", "apply", "-f", "-",
                input: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"2\"\n  b: \"3\"\n")
            #expect(try await k.ok("-n", "team", "get", "configmap", "settings", "-o", "jsonpath={.data.a}{.data.b}") == "23")
            #expect(try await k.ok("-n", "team", "label", "configmap", "settings", "tier=web").contains("labeled"))
            #expect(try await k.ok("-n", "team", "get", "cm", "-l", "tier=web", "-o", "name") == "configmap/settings\n")
            try await k.ok("delete", "namespace", "team", "--wait=false")
            c.server.collectGarbage()
            #expect(try await k.run("get", "namespace", "team").status != 0)
            #expect(try await k.ok("version", "-o", "json").contains("v1.33.0-meteor-embedded"))
        }
    }
}

@Suite struct PythonClientTests {
    /// A python3 that can import the official client: PATH first, then the system one.
    static let python: String? =
        ((ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/python3" } + ["/usr/bin/python3"]).first { p in
            guard FileManager.default.isExecutableFile(atPath: p) else { return false }
            // Runs once, before tests start, from the trait's condition.
            let task = Process()
            task.executableURL = URL(fileURLWithPath: p)
            task.arguments = ["-c", "import kubernetes"]
            task.standardOutput = FileHandle.nullDevice
            task.standardError = FileHandle.nullDevice
            guard (try? task.run()) != nil else { return false }
            task.waitUntilExit()
            return task.terminationStatus == 0
        }

    static let script = """
        import sys
        from kubernetes import client, config, watch
        config.load_kube_config(config_file=sys.argv[1])
        api = client.CustomObjectsApi()
        lst = api.list_namespaced_custom_object("meteor.zone", "v1alpha1", "default", "meteors")
        names = sorted(i["metadata"]["name"] for i in lst["items"])
        print("LIST", ",".join(names))
        rv = lst["metadata"]["resourceVersion"]
        api.create_namespaced_custom_object("meteor.zone", "v1alpha1", "default", "meteors",
            {"apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": {"name": "from-python"},
             "spec": {"url": "https://github.com/x/y", "ref": "main"}})
        w = watch.Watch()
        for event in w.stream(api.list_namespaced_custom_object, "meteor.zone", "v1alpha1", "default", "meteors",
                              resource_version=rv, timeout_seconds=10):
            print("EVENT", event["type"], event["object"]["metadata"]["name"])
            w.stop()
        core = client.CoreV1Api()
        print("NS", ",".join(sorted(n.metadata.name for n in core.list_namespace().items)))
        """

    /// Skipped on a developer machine without the client; in CI (.ci/run installs it) a missing client fails.
    @Test(
        .enabled(
            if: python != nil || ProcessInfo.processInfo.environment["CI"] != nil,
            "the kubernetes Python client is not installed (.ci/run installs it)"))
    func officialPythonClientListsAndWatches() async throws {
        let python = try #require(Self.python, "python3 with the kubernetes package is required in CI")
        try await TestCluster.with(tls: true, token: "py") { c in
            let meteors = c.client.dynamic(meteorType, namespace: "default")
            _ = try await meteors.create(meteor("alpha"))
            _ = try await meteors.create(meteor("beta"))
            let result = try await runProcess(python, ["-c", Self.script, try c.writeKubeconfig()])
            #expect(result.status == 0, "python client failed: \(result.output)")
            #expect(result.output.contains("LIST alpha,beta"))
            #expect(result.output.contains("EVENT ADDED from-python"))
            #expect(result.output.contains("NS default,kube-node-lease,kube-public,kube-system"))
            #expect(try await meteors.get("from-python")[path: "spec", "pipelines"] == ["jupyterhub", "jupyterbook"])
        }
    }
}
