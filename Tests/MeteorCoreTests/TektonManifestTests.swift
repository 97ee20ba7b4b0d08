import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorSandbox
import Testing

@Suite struct TektonManifestTests {
    static let directory = TestCluster.repositoryDirectory.appendingPathComponent("manifests/tekton")

    static func manifests() throws -> [JSONValue] {
        let kustomization = try YAML.parse(String(contentsOf: directory.appendingPathComponent("kustomization.yaml"), encoding: .utf8))
        return try (kustomization["resources"]?.arrayValue ?? []).compactMap(\.stringValue).map {
            try YAML.parse(String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8))
        }
    }

    @Test func everyManifestValidatesStrictlyAgainstTektonsSchemas() async throws {
        let docs = try Self.manifests()
        #expect(docs.count == 12)
        try await TestCluster.with(crds: ["crds/tekton/300-pipeline.yaml", "crds/tekton/300-task.yaml"]) { c in
            for doc in docs {
                let kind = try #require(doc["kind"]?.stringValue)
                let type = ResourceType(group: "tekton.dev", version: "v1", kind: kind, plural: kind.lowercased() + "s", namespaced: true)
                _ = try await c.client.dynamic(type, namespace: "default").create(doc, params: WriteParams(fieldValidation: .strict))
            }
            // The check bites: a field Tekton does not know is refused.
            var broken = try #require(docs.first { $0["kind"] == "Task" })
            broken[path: "metadata", "name"] = "broken"
            var steps = broken[path: "spec", "steps"]!.arrayValue!
            steps[0]["scriptt"] = "echo typo"
            broken[path: "spec", "steps"] = .array(steps)
            let tasks = c.client.dynamic(
                ResourceType(group: "tekton.dev", version: "v1", kind: "Task", plural: "tasks", namespaced: true), namespace: "default")
            await #expect { _ = try await tasks.create(broken, params: WriteParams(fieldValidation: .strict)) } throws: {
                ($0 as? KubeError)?.status?.message?.contains("unknown field \"spec.steps[0].scriptt\"") == true
            }
        }
    }

    @Test func pipelineRunsPipelinesAndTasksAgreeOnParamsAndWorkspaces() throws {
        let docs = try Self.manifests()
        let tasks = Dictionary(uniqueKeysWithValues: docs.filter { $0["kind"] == "Task" }.map { ($0[path: "metadata", "name"]!.stringValue!, $0) })
        let pipelines = Dictionary(
            uniqueKeysWithValues: docs.filter { $0["kind"] == "Pipeline" }.map { ($0[path: "metadata", "name"]!.stringValue!, $0) })
        func declared(_ spec: JSONValue?) -> [String: Bool] {
            var out: [String: Bool] = [:]
            for p in spec?["params"]?.arrayValue ?? [] { out[p["name"]!.stringValue!] = p["default"] != nil }
            return out
        }
        let owner: JSONValue = ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "m", "uid": "u"]]
        let meteor = Meteor(metadata: ObjectMeta(name: "m", namespace: "ns"), spec: .init(url: "https://x/y", ref: "main"))
        let edgeImage = Edge.Image(
            name: "car", dockerfile: "Dockerfile.donkey.arm64", platform: "linux/arm64", repository: "quay.io/meteor/donkeycar")
        var runs: [(String, JSONValue)] = Pipeline.allCases.map { pipeline in
            let run =
                pipeline == .edge
                ? EdgePipelineRunBuilder.build(
                    meteor: meteor, owner: owner, image: edgeImage,
                    build: EdgeBuild(ref: "v1.0.0", release: EdgeRelease(tag: "v1.0.0", commit: nil), generation: 1), settings: BuildSettings())
                : PipelineRunBuilder.build(meteor: meteor, owner: owner, pipeline: pipeline, settings: BuildSettings())
            return (pipeline.rawValue, run)
        }
        // Each CustomRuntimeEnvironment build type, with every optional setting given (and an import with its pull Secret).
        for type in CustomRuntimeEnvironment.BuildType.allCases {
            let cre = CustomRuntimeEnvironment(
                metadata: ObjectMeta(name: "c", namespace: "ns"),
                spec: .init(
                    buildType: type, packageVersions: ["six"], runtimeEnvironment: .init(pythonVersion: "3.11"), baseImage: "quay.io/o/base:1",
                    fromImage: "quay.io/o/nb:1", imagePullSecret: .init(name: "pull"), repository: "https://x/y", gitRef: "main"))
            runs.append((type.rawValue, RuntimeEnvironmentBuilder.build(cre, owner: owner, settings: BuildSettings(pushSecret: "push"))))
        }
        #expect(runs.count == Pipeline.allCases.count + 3)
        for (pipeline, run) in runs {
            let pipelineRef = try #require(run[path: "spec", "pipelineRef", "name"]?.stringValue)
            let p = try #require(pipelines[pipelineRef], "no Pipeline \(pipelineRef)")
            let wanted = declared(p["spec"])
            let sent = Set((run[path: "spec", "params"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue })
            #expect(sent.isSubset(of: Set(wanted.keys)), "\(pipeline): sends undeclared params \(sent.subtracting(wanted.keys))")
            #expect(wanted.filter { !$0.value }.keys.allSatisfy(sent.contains), "\(pipeline): required params missing")
            let runWorkspaces = Set((run[path: "spec", "workspaces"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue })
            let declaredWorkspaces = p[path: "spec", "workspaces"]?.arrayValue ?? []
            let pipelineWorkspaces = Set(declaredWorkspaces.compactMap { $0["name"]?.stringValue })
            let requiredWorkspaces = Set(declaredWorkspaces.filter { $0["optional"]?.boolValue != true }.compactMap { $0["name"]?.stringValue })
            #expect(
                runWorkspaces.isSubset(of: pipelineWorkspaces) && requiredWorkspaces.isSubset(of: runWorkspaces),
                "\(pipeline): binds \(runWorkspaces)")
            let results = Set((p[path: "spec", "results"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue })
            #expect(results.isSuperset(of: ["IMAGE_URL", "IMAGE_DIGEST"]))
            if pipeline == Pipeline.jupyterbook.rawValue { #expect(results.contains("URL")) }
            for t in p[path: "spec", "tasks"]?.arrayValue ?? [] {
                let task = try #require(tasks[t[path: "taskRef", "name"]!.stringValue!], "unknown task")
                let taskParams = declared(task["spec"])
                let passed = Set((t["params"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue })
                #expect(passed.isSubset(of: Set(taskParams.keys)))
                #expect(taskParams.filter { !$0.value }.keys.allSatisfy(passed.contains), "\(t["name"]!): required task params missing")
            }
        }
    }

    /// Tekton's own admission validation (the kit's `tekton-validate`) accepts every manifest, and, with the
    /// PipelineRun reconciler's checks (params, types, workspaces, task resolution), every PipelineRun the operator
    /// makes for every sample. The check bites: the JupyterBook Pipeline's old `$(params.site-url)` result is refused.
    @Test(.enabled(if: KitControlPlane.testsEnabled, "no kit")) func tektonsOwnValidationAcceptsEveryManifestAndEveryRun() async throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter {
            $0.hasSuffix(".yaml") && $0 != "kustomization.yaml"
        }.sorted()
        let manifests = try await KitControlPlane.tektonValidate(files.map { Self.directory.appendingPathComponent($0).path })
        #expect(manifests.status == 0, "\(manifests.output)")
        #expect(manifests.output.split(separator: "\n").filter { $0.hasPrefix("OK ") }.count == files.count, "\(manifests.output)")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("runs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let samples = TestCluster.repositoryDirectory.appendingPathComponent("config/samples")
        var runs: [String] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: samples.path).sorted() where file.hasPrefix("meteor_") {
            var raw = try YAML.parse(String(contentsOf: samples.appendingPathComponent(file), encoding: .utf8))
            raw[path: "metadata", "namespace"] = "samples"
            raw[path: "metadata", "uid"] = "0b8e4b0e-0000-4000-8000-000000000000"
            raw[path: "metadata", "generation"] = 1
            let meteor = try ResourceCodec.decode(Meteor.self, from: raw)
            var built: [JSONValue] = []
            for pipeline in Pipeline.allCases where pipeline != .edge && meteor.spec.requestedPipelines.contains(pipeline.rawValue) {
                built.append(PipelineRunBuilder.build(meteor: meteor, owner: raw, pipeline: pipeline, settings: BuildSettings()))
            }
            for image in meteor.spec.edge?.images ?? [] {
                // Edge runs with push credentials bound (the dockerconfig workspace), the others without.
                built.append(
                    EdgePipelineRunBuilder.build(
                        meteor: meteor, owner: raw, image: image,
                        build: EdgeBuild(ref: "v1.0.0", release: EdgeRelease(tag: "v1.0.0", commit: nil), generation: 1),
                        settings: BuildSettings(pushSecret: "push-creds")))
            }
            for run in built {
                let path = dir.appendingPathComponent("\(run[path: "metadata", "name"]!.stringValue!).json").path
                try run.serializedString().write(toFile: path, atomically: true, encoding: .utf8)
                runs.append(path)
            }
        }
        for file in try FileManager.default.contentsOfDirectory(atPath: samples.path).sorted() where file.hasPrefix("cre_") {
            var raw = try YAML.parse(String(contentsOf: samples.appendingPathComponent(file), encoding: .utf8))
            raw[path: "metadata", "namespace"] = "samples"
            raw[path: "metadata", "uid"] = "0b8e4b0e-0000-4000-8000-000000000001"
            raw[path: "metadata", "generation"] = 1
            let cre = try ResourceCodec.decode(CustomRuntimeEnvironment.self, from: raw)
            #expect(RuntimeEnvironmentBuilder.problems(cre.spec).isEmpty, "\(file)")
            // As built, and with a pull Secret (the dockerconfig workspace and the Pod's pull secret).
            var withSecret = cre
            withSecret.spec.imagePullSecret = .init(name: "pull")
            withSecret.metadata.name = cre.name + "-private"
            for one in [cre, withSecret] {
                let run = RuntimeEnvironmentBuilder.build(one, owner: raw, settings: BuildSettings(pushSecret: "push-creds"))
                let path = dir.appendingPathComponent("\(run[path: "metadata", "name"]!.stringValue!).json").path
                try run.serializedString().write(toFile: path, atomically: true, encoding: .utf8)
                runs.append(path)
            }
        }
        #expect(runs.count >= 11, "jupyterhub and jupyterbook runs, one edge run per DonkeyCar image, two per CustomRuntimeEnvironment sample")
        let checked = try await KitControlPlane.tektonValidate(["--pipelines", Self.directory.path] + runs)
        #expect(checked.status == 0, "\(checked.output)")
        #expect(checked.output.split(separator: "\n").filter { $0.hasPrefix("OK PipelineRun/") }.count == runs.count, "\(checked.output)")

        // The sample rollout gate (manifests/tekton/samples), and the gate run the operator makes for it.
        let gates = Self.directory.appendingPathComponent("samples")
        let gateFiles = try FileManager.default.contentsOfDirectory(atPath: gates.path).filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" }
            .sorted()
        let gateChecked = try await KitControlPlane.tektonValidate(gateFiles.map { gates.appendingPathComponent($0).path })
        #expect(
            gateChecked.status == 0 && gateChecked.output.split(separator: "\n").filter { $0.hasPrefix("OK ") }.count == 2, "\(gateChecked.output)")
        let gateDir = dir.appendingPathComponent("gate-pipelines")
        try FileManager.default.createDirectory(at: gateDir, withIntermediateDirectories: true)
        for file in gateFiles { try FileManager.default.copyItem(at: gates.appendingPathComponent(file), to: gateDir.appendingPathComponent(file)) }
        let owner: JSONValue = [
            "apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor",
            "metadata": ["name": "donkeycar", "namespace": "samples", "uid": "0b8e4b0e-0000-4000-8000-000000000000", "generation": 1],
            "spec": ["url": "https://github.com/thoth-station/donkeycar-edge", "ref": "main"],
        ]
        let gateRun = EdgePipelineRunBuilder.gate(
            meteor: try ResourceCodec.decode(Meteor.self, from: owner), owner: owner, name: "donkeycar-gate-twin-0123abcd", stage: "twin",
            pipelineRef: "meteor-edge-gate",
            commit: String(repeating: "a", count: 40), images: ["quay.io/o/twin@sha256:" + String(repeating: "b", count: 64)],
            clusters: ["nuc-1", "nuc-2"], settings: BuildSettings())
        let gateRunPath = dir.appendingPathComponent("gate-run.json").path
        try gateRun.serializedString().write(toFile: gateRunPath, atomically: true, encoding: .utf8)
        let gateRunChecked = try await KitControlPlane.tektonValidate(["--pipelines", gateDir.path, gateRunPath])
        #expect(
            gateRunChecked.status == 0 && gateRunChecked.output.contains("OK PipelineRun/donkeycar-gate-twin-0123abcd"), "\(gateRunChecked.output)")

        var old = try YAML.parse(String(contentsOf: Self.directory.appendingPathComponent("pipeline-jupyterbook.yaml"), encoding: .utf8))
        var results = try #require(old[path: "spec", "results"]?.arrayValue)
        results[results.firstIndex { $0["name"] == "URL" }!]["value"] = "$(params.site-url)"
        old[path: "spec", "results"] = .array(results)
        let oldPath = dir.appendingPathComponent("old-pipeline.json").path
        try old.serializedString().write(toFile: oldPath, atomically: true, encoding: .utf8)
        let refused = try await KitControlPlane.tektonValidate([oldPath])
        #expect(refused.status != 0)
        #expect(
            refused.output.contains("INVALID Pipeline/meteor-jupyterbook: invalid value: expected pipeline results to be task result expressions"),
            "\(refused.output)")
    }

    /// A step with neither `script` nor `command` makes Tekton's controller fetch the image's config from its
    /// registry to find the entrypoint: the edge signing step failed that way on the real control plane
    /// (PodCreationFailed, "Get https://gcr.io/v2/"), and would in any cluster that cannot reach the registry.
    /// The sandbox's Tekton knows each Pipeline's tasks (real Tekton's messages count them) and which task each
    /// `…_FAILURE` result comes from; every Task that records a FAILURE result fails in a later step that reads it.
    @Test func theSimulatorsPipelinesAreTheManifestsAndFailureResultsAreReported() throws {
        let all = try Self.manifests()
        for (pipeline, tasks) in TektonSimulator.pipelineTasks {
            let manifest = try #require(all.first { $0["kind"] == "Pipeline" && $0[path: "metadata", "name"] == .string(pipeline.tektonPipeline) })
            let pipelineTasks = (manifest[path: "spec", "tasks"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            #expect(pipelineTasks == tasks, "\(pipeline)")
            let failures = (manifest[path: "spec", "results"]?.arrayValue ?? []).filter {
                $0["name"]?.stringValue?.hasSuffix(PipelineRunState.failureResultSuffix) == true
            }
            let declared = failures.map { "\($0["name"]?.stringValue ?? ""): \($0["value"]?.stringValue ?? "")" }
            #expect(
                declared == (TektonSimulator.failureResults[pipeline] ?? []).map { "\($0.result): $(tasks.\($0.task).results.FAILURE)" },
                "\(pipeline)")
        }
        for task in all where task["kind"] == "Task" {
            let steps = task[path: "spec", "steps"]?.arrayValue ?? []
            guard (task[path: "spec", "results"]?.arrayValue ?? []).contains(where: { $0["name"] == "FAILURE" }) else { continue }
            #expect(
                steps.first?["script"]?.stringValue?.contains("printf '' > \"$(results.FAILURE.path)\"") == true,
                "\(task[path: "metadata", "name"]!): FAILURE starts empty")
            #expect(
                steps.last?["script"]?.stringValue?.contains("if [ -s \"$(results.FAILURE.path)\" ]") == true,
                "\(task[path: "metadata", "name"]!): its last step fails on a recorded FAILURE")
        }
    }

    /// Every image a step runs or a param defaults to is `registry/repository:version`, never `latest` (digests,
    /// where pinned, after the tag): what the node pulls does not change under a re-run.
    @Test func everyImageIsAVersionedTagFromANamedRegistry() throws {
        var images: [String] = []
        for manifest in try Self.manifests() {
            for step in manifest[path: "spec", "steps"]?.arrayValue ?? [] {
                if let image = step["image"]?.stringValue, !image.hasPrefix("$(") { images.append(image) }
            }
            for param in manifest[path: "spec", "params"]?.arrayValue ?? [] where param["name"]?.stringValue?.hasSuffix("image") == true {
                if let image = param["default"]?.stringValue { images.append(image) }
            }
        }
        #expect(images.count >= 8, "\(images)")
        for image in images {
            let match = image.firstMatch(
                of: #/^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:(?<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(@sha256:[0-9a-f]{64})?$/#)
            #expect(match != nil && match?.output.tag != "latest", "\(image)")
        }
    }

    /// hack/pin-images.py against a real registry: each tag gets the digest the registry serves for it, in place,
    /// and a `latest` is refused by name.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func pinImagesPinsEachTagToTheDigestTheRegistryServes() async throws {
        let registry = try await LocalRegistry(port: nil)
        defer { registry.stop() }
        let client = RegistryClient(insecure: true, egress: .unrestricted)
        let repo = try RegistryClient.Reference(parsing: "\(registry.address)/meteor/tool")
        let digest = try await client.pushImage(repo, tag: "1.0", platform: "linux/amd64", content: "tool")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pin-\(UUID().uuidString).yaml")
        try "steps:\n  - image: \(registry.address)/meteor/tool:1.0\n    description: pushes repository:tag\n".write(
            to: file, atomically: true, encoding: .utf8)
        let script = TestCluster.repositoryDirectory.appendingPathComponent("hack/pin-images.py").path
        let pinned = try await runProcess("/usr/bin/python3", [script, "--insecure", registry.address, "--write", file.path])
        #expect(pinned.status == 0, "\(pinned.output)")
        #expect(
            try String(contentsOf: file, encoding: .utf8)
                == "steps:\n  - image: \(registry.address)/meteor/tool:1.0@\(digest)\n    description: pushes repository:tag\n")
        // Run again on the pinned file: the same digest, nothing else changes.
        #expect(try await runProcess("/usr/bin/python3", [script, "--insecure", registry.address, "--write", file.path]).status == 0)
        #expect(try String(contentsOf: file, encoding: .utf8).components(separatedBy: "@sha256:").count == 2)
        try "image: \(registry.address)/meteor/tool:latest\n".write(to: file, atomically: true, encoding: .utf8)
        let refused = try await runProcess("/usr/bin/python3", [script, "--insecure", registry.address, file.path])
        #expect(refused.status != 0 && refused.output.contains("meteor/tool:latest: name a version, not latest"), "\(refused.output)")
    }

    @Test func everyStepNamesWhatItRuns() throws {
        for task in try Self.manifests() where task["kind"] == "Task" {
            for step in task[path: "spec", "steps"]?.arrayValue ?? [] {
                #expect(
                    step["script"] != nil || step["command"] != nil,
                    "\(task[path: "metadata", "name"] ?? .null) step \(step["name"] ?? .null) names no command")
            }
        }
    }

    @Test func scriptsNeverSpliceParamsIntoShellText() throws {
        for task in try Self.manifests() where task["kind"] == "Task" {
            for step in task[path: "spec", "steps"]?.arrayValue ?? [] {
                let script = step["script"]?.stringValue ?? ""
                #expect(!script.contains("$(params."), "\(task[path: "metadata", "name"]!)/\(step["name"]!) splices a param into its script")
            }
        }
    }
}
