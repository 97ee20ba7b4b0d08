import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// The machine's kubectl; under CI its absence fails the tests that need it (they run, with a path that is not there).
let kubectl =
    ["/usr/bin/kubectl", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"].first { FileManager.default.isExecutableFile(atPath: $0) }
    ?? (ProcessInfo.processInfo.environment["CI"] == "true" ? "/usr/bin/kubectl" : nil)

@Suite struct KubectlMeteorTests {
    static let samples = TestCluster.repositoryDirectory.appendingPathComponent("config/samples")

    @Test func everySampleIsAcceptedStrictly() async throws {
        let files =
            try FileManager.default.contentsOfDirectory(atPath: Self.samples.path).filter { $0.hasPrefix("meteor_") && $0.hasSuffix(".yaml") } + [
                "fleet/meteor_edge_donkeycar_fleet.yaml"
            ]
        #expect(files.count == 5)
        try await TestCluster.with(crds: []) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            for f in files {
                let doc = try #require(try YAML.parse(String(contentsOf: Self.samples.appendingPathComponent(f), encoding: .utf8)))
                let created = try await c.meteors.create(doc, params: WriteParams(fieldValidation: .strict))
                let meteor = try ResourceCodec.decode(Meteor.self, from: created)
                #expect(SpecValidation.problems(meteor.spec).isEmpty, "\(f)")
            }
        }
    }

    @Test(.enabled(if: kubectl != nil, "no kubectl on this machine"))
    func kubectlAppliesGetsAndWaitsForReady() async throws {
        try await MeteorEnvironment.with { env in
            let c = env.cluster
            let cache = FileManager.default.temporaryDirectory.appendingPathComponent("kc-\(UUID().uuidString)").path
            let k = Kubectl(binary: kubectl!, kubeconfig: try c.writeKubeconfig(), cacheDir: cache)
            let sample = Self.samples.appendingPathComponent("meteor_jupyterbook.yaml").path
            #expect(try await k.ok("apply", "-f", sample).contains("meteor.meteor.zone/meteor-demo-book created"))
            async let waited = k.run("wait", "--for=condition=Ready", "meteor/meteor-demo-book", "--timeout=30s")
            let run = PipelineRunBuilder.name(meteor: "meteor-demo-book", pipeline: .jupyterbook, generation: 1)
            _ = try await c.waitFor(c.runs, run) { $0 != nil }
            let header = try await k.ok("get", "meteors").split(separator: "\n").first.map {
                $0.split(separator: " ", omittingEmptySubsequences: true)
            }
            #expect(header == ["NAME", "PHASE", "URL", "READY", "AGE"])
            try await c.tekton(
                run, .succeeded,
                results: [
                    "URL": "https://meteor-demo-book.example", "IMAGE_URL": "r/x:g1", "IMAGE_DIGEST": "sha256:" + String(repeating: "c", count: 64),
                ])
            let w = try await waited
            #expect(w.status == 0, "kubectl wait: \(w.output)")
            let row = try await k.ok("get", "mtr", "meteor-demo-book", "--no-headers").split(separator: " ", omittingEmptySubsequences: true)
            #expect(row.prefix(4) == ["meteor-demo-book", "Ready", "https://github.com/aicoe-aiops/meteor-demo", "True"])
            let described = try await k.ok("describe", "meteor", "meteor-demo-book")
            #expect(described.contains("PipelineRunCreated"))
            #expect(try await k.ok("explain", "meteor.spec.ref").contains("no whitespace and no shell metacharacters"))
        }
    }
}

struct Kubectl {
    let binary: String
    let kubeconfig: String
    let cacheDir: String

    func run(_ args: String...) async throws -> (status: Int32, output: String) {
        try await runProcess(binary, ["--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args)
    }

    @discardableResult
    func ok(_ args: String...) async throws -> String {
        let r = try await runProcess(binary, ["--kubeconfig", kubeconfig, "--cache-dir", cacheDir] + args)
        #expect(r.status == 0, "kubectl \(args.joined(separator: " ")) failed: \(r.output)")
        return r.output
    }
}

@Suite struct MeteorCRDTests {
    /// `kubectl explain` teaches the API only if every field says what it is.
    @Test func everyFieldHasADescription() throws {
        let crd = try YAML.parse(try MeteorEnvironment.operatorCRD)
        let schema = try #require(crd[path: "spec", "versions"]?.arrayValue?.first?[path: "schema", "openAPIV3Schema"])
        var undocumented: [String] = []
        func walk(_ node: JSONValue, _ path: String) {
            // The root `metadata` is the API server's: a CRD that describes it is refused (see ServedResource).
            if !path.isEmpty, path != "metadata", node["description"]?.stringValue?.isEmpty ?? true {
                undocumented.append(path)
            }
            for (k, v) in node["properties"]?.objectValue ?? [:] { walk(v, path.isEmpty ? k : "\(path).\(k)") }
            if let items = node["items"], items["type"]?.stringValue == "object" { walk(items, path + "[]") }
        }
        walk(schema, "")
        #expect(undocumented.isEmpty, "undocumented fields: \(undocumented.sorted())")
    }

    /// Every Meteor the Go operator's CRD accepts within the pipelines it knows is accepted here with the same fields.
    @Test func acceptsWhatTheReferenceCRDAccepts() async throws {
        try await TestCluster.with(crds: []) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            let bodies: [JSONValue] = [
                [
                    "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "minimal"],
                    "spec": ["url": "https://github.com/a/b", "ref": "main"],
                ],
                [
                    "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "full"],
                    "spec": ["url": "http://git.example/x.git", "ref": "v1.2.3", "ttl": 0, "pipelines": ["jupyterbook"]],
                ],
                [
                    "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "sha"],
                    "spec": [
                        "url": "https://github.com/a/b", "ref": "9fceb02d0ae598e95dc970b74767f19372d61af8", "ttl": 3600,
                        "pipelines": ["jupyterhub", "jupyterbook"],
                    ],
                ],
            ]
            for b in bodies {
                let created = try await c.meteors.create(b, params: WriteParams(fieldValidation: .strict))
                #expect(created[path: "spec", "pipelines"] != nil)
            }
            // The reference's status fields are accepted by the status subresource as they are.
            _ = try await c.meteors.patchStatus(
                "full",
                .merge([
                    "status": [
                        "phase": "Ready", "observedGeneration": 1,
                        "pipelines": [["name": "jupyterbook", "pipelineRunName": "full-book-g1", "ready": "True", "url": "https://x"]],
                        "stage": ["succeeded": ["jupyterbook"]],
                        "comas": [["apiVersion": "v1", "kind": "ConfigMap", "name": "c", "namespace": "n", "uid": "u"]],
                    ]
                ]), params: WriteParams(fieldValidation: .strict))
        }
    }
}
