import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import MeteorCore
import MeteorSandbox
import MeteorTestSupport
import Synchronization
import Testing

extension TestCluster {
    public var environments: DynamicApi { client.dynamic(CustomRuntimeEnvironment.resourceType, namespace: namespace) }
}

/// CustomRuntimeEnvironments, branches followed and builds shared, end to end on both backends: the embedded server
/// with the sandbox's Tekton, and the kit's kube-apiserver with the real Tekton controller (which runs each
/// PipelineRun through its own validation and the fake kubelet) and the real garbage collector.
@Suite struct RuntimeEnvironmentTests {
    /// Open Data Hub's namespace for one test, and the operator listing notebook images there.
    static func environment(
        _ backend: Backend, follow: Duration? = nil, onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil
    ) async throws -> (MeteorEnvironment, odh: String) {
        let cluster: TestCluster
        let odh: String
        switch backend {
        case .embedded:
            E2ETally.record(.embedded)
            cluster = try await TestCluster(crds: ["crds/tekton/300-pipelinerun.yaml"])
            try cluster.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            try cluster.server.installCRDs(
                yaml: try String(
                    contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("Tests/Fixtures/imagestream-crd.yaml"), encoding: .utf8))
            odh = "opendatahub"
            try await cluster.createNamespace(odh)
        case .real:
            cluster = try await TestCluster.real(
                namespacePrefix: "cre", crds: MeteorEnvironment.operatorCRDFiles + ["Tests/Fixtures/imagestream-crd.yaml"])
            do {
                try await cluster.installTekton()
                odh = try await cluster.kit!.freshNamespace("odh")
            } catch {
                await cluster.shutdown()
                throw error
            }
        }
        let env = try await MeteorEnvironment.start(
            on: backend, tekton: true, cluster: cluster,
            configure: { config in
                config.publishImageStreams = true
                config.notebookImageNamespace = odh
                config.followRefs = follow
                config.egress = .loopbackFixtures
            }, onReconciled: onReconciled)
        return (env, odh)
    }

    static func with(
        _ backend: Backend, follow: Duration? = nil, onReconciled: (@Sendable (ObjectKey, Bool) -> Void)? = nil,
        _ body: (MeteorEnvironment, String) async throws -> Void
    ) async throws {
        let (env, odh) = try await environment(backend, follow: follow, onReconciled: onReconciled)
        do {
            try await body(env, odh)
            await env.shutdown()
        } catch {
            await env.shutdown()
            throw error
        }
    }

    /// `name`, once it is Ready on a build it shares with exactly `others`.
    static func waitShared(_ cluster: TestCluster, _ api: DynamicApi, _ name: String, _ others: JSONValue) async throws -> JSONValue? {
        try await cluster.waitFor(api, name, timeout: .seconds(60)) { o in
            o?[path: "status", "pipelines"]?.arrayValue?.first?["sharedWith"] == others && condition(o, "Ready")?["status"] == "True"
        }
    }

    static func environment(_ name: String, _ spec: JSONObject) -> JSONValue {
        ["apiVersion": "meteor.zone/v1alpha1", "kind": "CustomRuntimeEnvironment", "metadata": ["name": .string(name)], "spec": .object(spec)]
    }

    /// Each build type becomes a PipelineRun of its Pipeline that Tekton runs to the end; the environment is then
    /// Succeeded and Ready with the image pinned by digest, and listed in Open Data Hub's namespace as a Meteor's
    /// notebook image is. A spec a build type cannot use is refused in the status without a build; deleting one
    /// removes its listing.
    @Test(arguments: Backend.testable) func eachBuildTypeBuildsToReadyAndIsListedInOpenDataHub(_ backend: Backend) async throws {
        try await Self.with(backend) { env, odh in
            let cluster = env.cluster
            let specs: [(String, CustomRuntimeEnvironment.BuildType, JSONObject)] = [
                (
                    "pandas", .packageList,
                    ["buildType": "PackageList", "packageVersions": ["pandas>=2.2", "six==1.16.0"], "runtimeEnvironment": ["pythonVersion": "3.11"]]
                ),
                ("minimal", .imageImport, ["buildType": "ImageImport", "fromImage": "quay.io/jupyter/minimal-notebook:2024-10-07"]),
                (
                    "demo", .gitRepository,
                    ["buildType": "GitRepository", "repository": "https://github.com/aicoe-aiops/meteor-demo", "gitRef": "main"]
                ),
            ]
            for (name, _, spec) in specs { _ = try await cluster.environments.create(Self.environment(name, spec)) }
            _ = try await cluster.environments.create(Self.environment("nothing", ["buildType": "ImageImport"]))

            let streams = cluster.client.dynamic(NotebookImage.imageStreamType, namespace: odh)
            for (name, type, _) in specs {
                let done = try #require(
                    try await cluster.waitFor(cluster.environments, name, timeout: .seconds(120)) { $0?[path: "status", "phase"] == "Succeeded" })
                #expect(condition(done, "Ready")?["status"] == "True", "\(name): \(done)")
                let entry = try #require(done[path: "status", "pipelines"]?.arrayValue?.first)
                #expect(entry["name"] == .string(type.buildName))
                let runName = try #require(entry["pipelineRunName"]?.stringValue)
                let run = try await cluster.runs.get(runName)
                #expect(run[path: "spec", "pipelineRef", "name"] == .string(type.tektonPipeline))
                #expect(run[path: "metadata", "ownerReferences"]?.arrayValue?.first?["uid"] == done[path: "metadata", "uid"])
                let state = PipelineRunState(run)
                #expect(state.outcome == .succeeded && state.reason == "Succeeded", "Tekton ran \(runName) to the end: \(run)")
                let digest = try #require(state.results["IMAGE_DIGEST"])
                #expect(done[path: "status", "digest"] == .string(digest))
                #expect(done[path: "status", "image"] == .string(NotebookImage.pinned(state.results["IMAGE_URL"] ?? "", to: digest)))
                // The same listing as a Meteor's: the spawner's label and annotations, pinned by digest, in Open Data
                // Hub's namespace (named for the environment's namespace too).
                let stream = try #require(try await cluster.waitFor(streams, "\(cluster.namespace)-\(name)-runtime") { $0 != nil })
                #expect(stream[path: "metadata", "labels", "opendatahub.io/notebook-image"] == "true")
                #expect(stream[path: "metadata", "labels", MeteorLabels.runtimeEnvironment] == .string(name))
                #expect(
                    stream[path: "metadata", "annotations", "opendatahub.io/notebook-image-name"] == .string("\(name) (Custom Runtime Environment)"))
                #expect(stream[path: "spec", "tags"]?.arrayValue?.first?[path: "from", "name"] == done[path: "status", "image"])
            }
            // What each build type was given to build.
            let pandas = try await cluster.runs.get(
                RuntimeEnvironmentBuilder.runName(
                    try ResourceCodec.decode(
                        CustomRuntimeEnvironment.self, from: try await cluster.environments.get("pandas"))))
            let params = Dictionary(
                (pandas[path: "spec", "params"]?.arrayValue ?? []).map { ($0["name"]!.stringValue!, $0["value"]?.stringValue ?? "") },
                uniquingKeysWith: { a, _ in a })
            #expect(params["packages"] == "pandas>=2.2\nsix==1.16.0" && params["python-version"] == "3.11")
            #expect(params["python-image"] == RuntimeEnvironmentBuilder.pythonImage("3.11"))

            let refused = try #require(
                try await cluster.waitFor(cluster.environments, "nothing") { $0?[path: "status", "phase"] == "Failed" })
            #expect(condition(refused, "Ready")?["reason"] == "InvalidSpec")
            #expect(condition(refused, "Ready")?["message"] == "spec.fromImage: an ImageImport needs the image to import")
            #expect(
                try await cluster.runs.list().items.filter { $0[path: "metadata", "labels", MeteorLabels.runtimeEnvironment] == "nothing" }.isEmpty)

            // Its listing is in another namespace: the finalizer removes it before the environment goes.
            try await cluster.environments.delete("minimal")
            _ = try await cluster.waitFor(streams, "\(cluster.namespace)-minimal-runtime") { $0 == nil }
            _ = try await cluster.waitFor(cluster.environments, "minimal") { $0 == nil }
        }
    }

    /// A followed branch: the commit built is in the status; when the branch moves the next poll builds exactly one
    /// new run, at the new commit, and the notebook image is listed at it. A tag that is moved, and a commit, never
    /// build again.
    @Test(arguments: Backend.testable) func aBranchThatMovesIsBuiltOnceAtTheNewCommitAndATagNever(_ backend: Backend) async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        let first = try await git.createRepository("followed", files: ["requirements.txt": "six==1.16.0\n"])
        let tagged = try await git.tag("followed", "v1")
        let reconciles = Mutex(0)
        try await Self.with(backend, follow: .milliseconds(500), onReconciled: { _, _ in reconciles.withLock { $0 += 1 } }) { env, odh in
            let cluster = env.cluster
            var branch = sampleMeteor("branch", pipelines: ["jupyterhub"])
            branch[path: "spec", "url"] = .string(git.url("followed"))
            var tag = branch
            tag[path: "metadata", "name"] = "tag"
            tag[path: "spec", "ref"] = "v1"
            _ = try await cluster.meteors.create(branch)
            _ = try await cluster.meteors.create(tag)
            for (name, commit) in [("branch", first), ("tag", tagged)] {
                let ready = try #require(
                    try await cluster.waitFor(cluster.meteors, name, timeout: .seconds(90)) { $0?[path: "status", "phase"] == "Ready" })
                #expect(ready[path: "status", "commit"] == .string(commit), "\(name)")
                #expect(ready[path: "status", "pipelines"]?.arrayValue?.first?["commit"] == .string(commit))
            }
            // The branch and the tag name one commit, with the same settings: one build for both.
            #expect(try await cluster.runs.list().items.count == 1)

            let second = try await git.commit("followed", files: ["requirements.txt": "six==1.16.0\nmicropipenv==1.8.0\n"], message: "more")
            let moved = try await git.tag("followed", "v1", force: true)
            #expect(moved == second)
            let rebuilt = try #require(
                try await cluster.waitFor(cluster.meteors, "branch", timeout: .seconds(90)) {
                    $0?[path: "status", "commit"] == .string(second) && $0?[path: "status", "phase"] == "Ready"
                })
            let entry = try #require(rebuilt[path: "status", "pipelines"]?.arrayValue?.first)
            let run = try await cluster.runs.get(try #require(entry["pipelineRunName"]?.stringValue))
            #expect(run[path: "spec", "params"]?.arrayValue?.first { $0["name"] == "ref" }?["value"] == .string(second), "the run builds the commit")
            let stream = try await cluster.client.dynamic(NotebookImage.imageStreamType, namespace: odh).get("\(cluster.namespace)-branch-notebook")
            #expect(
                stream[path: "spec", "tags"]?.arrayValue?.first?[path: "annotations", "opendatahub.io/notebook-build-commit"] == .string(second))
            // Several polls later (each a reconcile of both Meteors), still exactly one build per commit, and the tag
            // still at the commit it was built from.
            let seen = reconciles.withLock { $0 }
            try await within(.seconds(30), "six more reconciles") {
                while reconciles.withLock({ $0 }) < seen + 6 { try await Task.sleep(for: .milliseconds(50)) }
            }
            let runs = try await cluster.runs.list().items
            let commits = runs.compactMap { $0[path: "metadata", "annotations", "meteor.zone/commit"]?.stringValue }.sorted()
            #expect(commits == [first, second].sorted(), "one run per commit: \(runs.map { $0[path: "metadata", "name"] ?? .null })")
            let stillTagged = try await cluster.meteors.get("tag")
            #expect(stillTagged[path: "status", "commit"] == .string(tagged), "a tag is never followed")
            #expect(stillTagged[path: "status", "phase"] == "Ready")
        }
    }

    /// Two Meteors and a GitRepository environment asking for the same notebook image from the same commit share one
    /// PipelineRun; each status names the others. Deleting the one that created it keeps the build for the rest.
    @Test(arguments: Backend.testable) func twoMeteorsAndAnEnvironmentOnOneCommitShareOneRun(_ backend: Backend) async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        let commit = try await git.createRepository("shared", files: ["requirements.txt": "six==1.16.0\n"])
        try await Self.with(backend, follow: .seconds(3600)) { env, _ in
            let cluster = env.cluster
            var a = sampleMeteor("a", pipelines: ["jupyterhub"])
            a[path: "spec", "url"] = .string(git.url("shared"))
            _ = try await cluster.meteors.create(a)
            _ = try #require(try await cluster.waitFor(cluster.meteors, "a", timeout: .seconds(90)) { $0?[path: "status", "phase"] == "Ready" })
            var b = a
            b[path: "metadata", "name"] = "b"
            _ = try await cluster.meteors.create(b)
            _ = try await cluster.environments.create(
                Self.environment("c", ["buildType": "GitRepository", "repository": .string(git.url("shared")), "gitRef": "main"]))
            let others: [String: [String]] = [
                "a": ["CustomRuntimeEnvironment/c", "Meteor/b"], "b": ["CustomRuntimeEnvironment/c", "Meteor/a"], "c": ["Meteor/a", "Meteor/b"],
            ]
            var names: Set<String> = []
            for (name, api) in [("a", cluster.meteors), ("b", cluster.meteors), ("c", cluster.environments)] {
                let wanted = JSONValue.array(others[name]!.map(JSONValue.string))
                let shared = try #require(try await Self.waitShared(cluster, api, name, wanted))
                let entry = try #require(shared[path: "status", "pipelines"]?.arrayValue?.first)
                names.insert(try #require(entry["pipelineRunName"]?.stringValue))
                #expect(entry["commit"] == .string(commit))
                #expect(entry["digest"]?.stringValue?.hasPrefix("sha256:") == true)
            }
            #expect(names.count == 1, "one run for all three: \(names)")
            let runs = try await cluster.runs.list().items
            #expect(runs.count == 1, "\(runs.map { $0[path: "metadata", "name"] ?? .null })")
            let owners = (runs.first?[path: "metadata", "ownerReferences"]?.arrayValue ?? []).map { $0["name"]?.stringValue ?? "" }.sorted()
            #expect(owners == ["a", "b", "c"])

            // The creator goes; the garbage collector keeps the run for the others, who still use it.
            try await cluster.meteors.delete("a")
            _ = try await cluster.waitFor(cluster.meteors, "a") { $0 == nil }
            let kept = try #require(
                try await cluster.waitFor(cluster.runs, names.first!, timeout: .seconds(60)) {
                    ($0?[path: "metadata", "ownerReferences"]?.arrayValue ?? []).count == 2
                })
            #expect(kept[path: "metadata", "deletionTimestamp"] == nil)
            let b2 = try #require(
                try await cluster.waitFor(cluster.meteors, "b") {
                    $0?[path: "status", "pipelines"]?.arrayValue?.first?["sharedWith"] == ["CustomRuntimeEnvironment/c"]
                })
            #expect(b2[path: "status", "phase"] == "Ready")
            #expect(try await cluster.runs.list().items.count == 1)
        }
    }
}

/// The CustomRuntimeEnvironment CRD against the Go operator's (../shared/crds/reference, c7f3fad7).
@Suite struct RuntimeEnvironmentCRDTests {
    static func schema(_ text: String) throws -> JSONValue {
        try #require(YAML.parse(text)[path: "spec", "versions"]?.arrayValue?.first?[path: "schema", "openAPIV3Schema"])
    }
    static var ours: String {
        get throws {
            try String(
                contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("crds/meteor.zone_customruntimeenvironments.yaml"), encoding: .utf8
            )
        }
    }
    static var theirs: String { get throws { try TestCluster.sharedFile("crds/reference/meteor.zone_customruntimeenvironments.yaml") } }

    /// Every field path of a schema with its type, enum and required list.
    static func fields(_ schema: JSONValue, _ path: String = "") -> [String: String] {
        var out: [String: String] = [:]
        var describe = schema["type"]?.stringValue ?? "object"
        if let values = schema["enum"]?.arrayValue { describe += " enum " + values.compactMap(\.stringValue).sorted().joined(separator: ",") }
        if let required = schema["required"]?.arrayValue {
            describe += " required " + required.compactMap(\.stringValue).sorted().joined(separator: ",")
        }
        out[path] = describe
        for (name, sub) in schema["properties"]?.objectValue ?? [:] { out.merge(fields(sub, path + "." + name)) { a, _ in a } }
        if let items = schema["items"] { out.merge(fields(items, path + "[]")) { a, _ in a } }
        return out
    }

    /// Every field the Go operator's CRD has is here with the same type, enum and required fields: nothing it accepts
    /// is refused, and its phases are the ones written here.
    @Test func everyFieldOfTheGoOperatorsCRDIsHereWithTheSameType() throws {
        let ours = Self.fields(try Self.schema(try Self.ours))
        let theirs = Self.fields(try Self.schema(try Self.theirs))
        #expect(theirs.count > 30)
        for (path, type) in theirs where !path.hasPrefix(".metadata") {
            #expect(ours[path] == type, "\(path): theirs \(type), ours \(ours[path] ?? "missing")")
        }
        #expect(Set(CustomRuntimeEnvironment.BuildType.allCases.map(\.rawValue)) == ["PackageList", "ImageImport", "GitRepository"])
    }

    /// The same resources, the Go operator's sample shapes and ones missing what their build type needs, are
    /// accepted by both CRDs (an API server each) and stored alike; the operator reads them with the Go meaning.
    @Test func whatTheGoOperatorsCRDAcceptsIsAcceptedHereAndReadAlike() async throws {
        let examples: [JSONObject] = [
            [
                "buildType": "PackageList", "packageVersions": ["pandas", "numpy==1.26.4"],
                "runtimeEnvironment": ["osName": "ubi", "osVersion": "9", "pythonVersion": "3.9"],
                "baseImage": "quay.io/thoth-station/s2i-thoth-ubi9-py39:v0.35.1",
            ],
            ["buildType": "ImageImport", "fromImage": "quay.io/thoth-station/s2i-minimal-py38-notebook:v0.2.2", "imagePullSecret": ["name": "pull"]],
            ["buildType": "GitRepository", "repository": "https://github.com/aicoe-aiops/meteor-demo", "gitRef": "main"],
            ["buildType": "ImageImport"],
            ["buildType": "PackageList", "runtimeEnvironment": [:]],
        ]
        let reference = try await TestCluster(crds: ["crds/reference/meteor.zone_customruntimeenvironments.yaml"])
        let here = try await TestCluster(crds: [])
        defer {
            Task {
                await reference.shutdown()
                await here.shutdown()
            }
        }
        try here.server.installCRDs(yaml: try Self.ours)
        for (i, spec) in examples.enumerated() {
            let object = RuntimeEnvironmentTests.environment("e\(i)", spec)
            let theirs = try await reference.environments.create(object, params: WriteParams(fieldValidation: .strict))
            let ours = try await here.environments.create(object, params: WriteParams(fieldValidation: .strict))
            #expect(theirs["spec"] == ours["spec"], "\(spec)")
            let read = try ResourceCodec.decode(CustomRuntimeEnvironment.self, from: ours)
            #expect(try JSONValue(encoding: read.spec) == ours["spec"], "every field read as written: \(spec)")
        }
        // What the Go operator would have failed on later, this one says at once.
        let missing = try ResourceCodec.decode(CustomRuntimeEnvironment.self, from: try await here.environments.get("e3"))
        #expect(RuntimeEnvironmentBuilder.problems(missing.spec) == ["spec.fromImage: an ImageImport needs the image to import"])
    }
}

/// Phases another writer left (a hand edit, the Go operator's) read as the operator's own "not written yet".
@Test func aPhaseTheOperatorDoesNotWriteReadsAsUnwritten() throws {
    #expect(try JSONValue.parse(#""Running""#).decode(as: MeteorPhase.self) == .pending)
    #expect(try JSONValue.parse(#""Ready""#).decode(as: MeteorPhase.self) == .ready)
    #expect(try JSONValue.parse(#""Building""#).decode(as: CustomRuntimeEnvironment.Phase.self) == .unknown)
    #expect(try JSONValue.parse(#""Succeeded""#).decode(as: CustomRuntimeEnvironment.Phase.self) == .succeeded)
}
