import Foundation
import KubeAPIServer
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import MeteorTestSupport
import Testing

/// A DonkeyCar-style edge spec (the shape of config/samples/meteor_edge_donkeycar.yaml) for a given registry.
func donkeycarEdge(registry: String, release: Edge.Release? = nil) -> Edge {
    Edge(
        images: [
            .init(name: "car", dockerfile: "Dockerfile.donkey.arm64", platform: "linux/arm64", repository: "\(registry)/meteor/donkeycar"),
            .init(
                name: "twin", dockerfile: "Dockerfile.donkey", platform: "linux/amd64", repository: "\(registry)/meteor/donkeycar-twin",
                emulated: false),
        ],
        signing: .init(publicKeySecretRef: .init(name: "cosign-pub")),
        targets: [
            .init(name: "rpi", cluster: "microshift-rpi", image: "car", path: "deploy/car", namespace: "donkeycar"),
            .init(name: "nuc", cluster: "microshift-nuc", image: "twin", path: "deploy/twin", namespace: "donkeycar"),
        ],
        release: release)
}

@Suite struct EdgeUnitTests {
    @Test func releasesAreOrderedAsVersions() {
        let ordered = ["v0.9.0", "v1.0.0-rc.1", "v1.0.0-rc.2", "v1.0.0", "v1.2.0", "v1.10.0", "v2.0.0-beta", "v2.0.0"]
        for (i, a) in ordered.enumerated() {
            for (j, b) in ordered.enumerated() {
                #expect(ReleaseSelection.versionLess(a, b) == (i < j), "\(a) < \(b)")
            }
        }
        let refs =
            ["v1.9.0", "v1.10.0", "release-3", "v2.0.0-rc.1"].map {
                GitRemote.Ref(name: "refs/tags/\($0)", commit: String(repeating: "a", count: 40))
            }
            + [GitRemote.Ref(name: "refs/heads/v9", commit: String(repeating: "b", count: 40))]
        #expect(ReleaseSelection.newest(refs, pattern: "v*")?.tag == "v2.0.0-rc.1")
        #expect(ReleaseSelection.newest(refs, pattern: "v1.*")?.tag == "v1.10.0")
        #expect(ReleaseSelection.newest(refs, pattern: "release-*")?.tag == "release-3")
        #expect(ReleaseSelection.newest(refs, pattern: "x*") == nil)
    }

    @Test func advertisementsParseAndMalformedOnesAreRefused() throws {
        func pkt(_ s: String) -> String { String(format: "%04x", s.utf8.count + 4) + s }
        let a = String(repeating: "a", count: 40), c = String(repeating: "c", count: 40), t = String(repeating: "d", count: 40)
        let body =
            pkt("# service=git-upload-pack\n") + "0000" + pkt("\(a) HEAD\0multi_ack side-band-64k\n") + pkt("\(a) refs/heads/main\n")
            + pkt("\(t) refs/tags/v1\n") + pkt("\(c) refs/tags/v1^{}\n") + "0000"
        let refs = try GitRemote.parseAdvertisement(Array(body.utf8))
        #expect(refs == [.init(name: "HEAD", commit: a), .init(name: "refs/heads/main", commit: a), .init(name: "refs/tags/v1", commit: c)])
        #expect(throws: GitRemote.Failure.self) { try GitRemote.parseAdvertisement(Array("zzzz".utf8)) }
        #expect(throws: GitRemote.Failure.self) { try GitRemote.parseAdvertisement(Array("00ffshort".utf8)) }
        #expect(throws: GitRemote.Failure.self) { try GitRemote.parseAdvertisement(Array(pkt("ERR access denied\n").utf8)) }
    }

    @Test func buildNamesStayDistinctAndWithinLimits() {
        let a = EdgeBuild(ref: "v1.0", release: EdgeRelease(tag: "v1.0", commit: nil), generation: 3)
        let b = EdgeBuild(ref: "v1-0", release: EdgeRelease(tag: "v1-0", commit: nil), generation: 3)
        #expect(a.buildID != b.buildID)
        #expect(b.buildID == "g3-v1-0")
        #expect(a.imageTag == "v1.0")
        #expect(EdgeBuild(ref: "main", release: nil, generation: 2).buildID == "g2")
        let long = EdgePipelineRunBuilder.name(meteor: String(repeating: "m", count: 60), image: "car", build: a)
        #expect(long.count <= 63 && long.hasSuffix(a.buildID))
        #expect(EdgePipelineRunBuilder.name(meteor: String(repeating: "m", count: 60), image: "twin", build: a) != long)
        let app = ArgoApplicationBuilder.name(
            meteorNamespace: String(repeating: "n", count: 63), meteor: String(repeating: "m", count: 63), target: "rpi")
        #expect(app.count <= 63 && app.hasSuffix("-rpi"))
        #expect(EdgeBuild.slug("--") != "" && EdgeBuild.slug("V1.0") != EdgeBuild.slug("v1.0"))
    }

    @Test func edgeSpecProblemsNameTheirFields() {
        let good = donkeycarEdge(registry: "quay.io")
        #expect(SpecValidation.problems(.init(url: "https://github.com/x/y", ref: "main", pipelines: ["edge"], edge: good)).isEmpty)
        #expect(SpecValidation.problems(.init(url: "https://github.com/x/y", ref: "main", pipelines: ["edge"])).map(\.field) == ["spec.edge"])
        func fields(_ change: (inout Edge) -> Void) -> [String] {
            var e = good
            change(&e)
            return SpecValidation.problems(.init(url: "https://github.com/x/y", ref: "main", pipelines: ["edge"], edge: e)).map(\.field)
        }
        #expect(fields { $0.targets[1].name = "rpi" } == ["spec.edge.targets[1].name"])
        #expect(fields { $0.targets.removeLast() } == ["spec.edge.images[1]"])
        #expect(fields { $0.targets[0].image = "nope" }.contains("spec.edge.targets[0].image"))
        #expect(fields { $0.images[0].platform = "windows/amd64" } == ["spec.edge.images[0].platform"])
        #expect(fields { $0.images[0].repository = "quay.io/x/y:latest" } == ["spec.edge.images[0].repository"])
        #expect(fields { $0.images[0].repository = "donkeycar" } == ["spec.edge.images[0].repository"])
        #expect(fields { $0.images[0].dockerfile = "../../etc/passwd" } == ["spec.edge.images[0].dockerfile"])
        #expect(fields { $0.targets[0].path = "/deploy" } == ["spec.edge.targets[0].path"])
        #expect(fields { $0.targets[0].namespace = "Donkey Car" } == ["spec.edge.targets[0].namespace"])
        #expect(fields { $0.images[1].name = "car" }.contains("spec.edge.images[1].name"))
        #expect(fields { $0.release = .init(tagPattern: "v* ; rm", interval: 5) } == ["spec.edge.release.tagPattern", "spec.edge.release.interval"])
        #expect(
            fields {
                $0.images = []; $0.targets = []
            } == ["spec.edge.images", "spec.edge.targets"])
    }

    /// What the operator creates must be what Argo CD and Tekton accept: validated strictly by their own CRDs.
    /// buildah builds for the node it runs on: each edge build goes to a node of its image's architecture, unless
    /// the image asks for an emulated build (qemu binfmt on the nodes).
    @Test func edgeBuildsAreScheduledOnTheirArchitectureUnlessEmulated() throws {
        let owner: JSONValue = ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "m", "uid": "u"]]
        let meteor = Meteor(metadata: ObjectMeta(name: "m", namespace: "ns"), spec: .init(url: "https://x/y", ref: "main"))
        let build = EdgeBuild(ref: "main", release: nil, generation: 1)
        for (platform, arch) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64"), ("linux/arm/v7", "arm")] {
            let image = Edge.Image(name: "i", dockerfile: "Dockerfile", platform: platform, repository: "quay.io/x/y")
            let run = EdgePipelineRunBuilder.build(meteor: meteor, owner: owner, image: image, build: build, settings: BuildSettings())
            #expect(
                run[path: "spec", "taskRunSpecs"] == [
                    ["pipelineTaskName": "image", "podTemplate": ["nodeSelector": ["kubernetes.io/arch": .string(arch)]]]
                ])
            // The pipeline task named is the one that builds.
            let pipeline = try YAML.parse(
                String(
                    contentsOf: TestCluster.repositoryDirectory.appendingPathComponent("manifests/tekton/pipeline-edge-image.yaml"), encoding: .utf8))
            let buildTask = (pipeline[path: "spec", "tasks"]?.arrayValue ?? []).first { $0["name"] == "image" }
            #expect(buildTask?[path: "taskRef", "name"] == "meteor-buildah")
        }
        let emulated = Edge.Image(name: "i", dockerfile: "Dockerfile", platform: "linux/arm64", repository: "quay.io/x/y", emulated: true)
        #expect(
            EdgePipelineRunBuilder.build(meteor: meteor, owner: owner, image: emulated, build: build, settings: BuildSettings())[
                path: "spec", "taskRunSpecs"] == nil)
    }

    @Test func applicationsAndEdgeRunsValidateAgainstUpstreamSchemas() async throws {
        try await TestCluster.with(crds: ["crds/tekton/300-pipelinerun.yaml", "crds/argocd/application-crd.yaml"]) { c in
            try c.server.installCRDs(yaml: try MeteorEnvironment.operatorCRDs)
            try await c.createNamespace("argocd")
            let edge = donkeycarEdge(registry: "quay.io")
            var meteor = Meteor(
                metadata: ObjectMeta(name: "donkeycar", namespace: "default"),
                spec: .init(url: "https://github.com/x/donkeycar", ref: "main", pipelines: ["edge"], edge: edge))
            let created = try await c.meteors.create(try JSONValue(encoding: meteor), params: WriteParams(fieldValidation: .strict))
            meteor = try ResourceCodec.decode(Meteor.self, from: created)
            #expect(meteor.spec.edge == edge, "the CRD keeps every edge field")
            let build = EdgeBuild(ref: "v1.2.0", release: EdgeRelease(tag: "v1.2.0", commit: String(repeating: "e", count: 40)), generation: 1)
            let run = EdgePipelineRunBuilder.build(meteor: meteor, owner: created, image: edge.images[0], build: build, settings: BuildSettings())
            _ = try await c.runs.create(run, params: WriteParams(fieldValidation: .strict))
            let apps = c.client.dynamic(ArgoApplicationBuilder.resourceType, namespace: "argocd")
            let pinned = "quay.io/meteor/donkeycar@sha256:" + String(repeating: "f", count: 64)
            let app = ArgoApplicationBuilder.build(
                meteor: meteor, placement: EdgePlacement(target: edge.targets[0], cluster: edge.targets[0].cluster!), image: edge.images[0],
                pinnedImage: pinned, revision: build.release!.commit!, namespace: "argocd", project: "meteor")
            let stored = try await apps.create(app, params: WriteParams(fieldValidation: .strict))
            #expect(stored[path: "spec", "source", "kustomize", "images"] == [.string("quay.io/meteor/donkeycar=\(pinned)")])
            #expect(stored[path: "spec", "destination", "name"] == "microshift-rpi")
            // The check bites: a misspelt field is refused by Argo CD's schema.
            var broken = app
            broken[path: "metadata", "name"] = "broken"
            broken[path: "spec", "destinaton"] = ["name": "x"]
            await #expect(throws: KubeError.self) { _ = try await apps.create(broken, params: WriteParams(fieldValidation: .strict)) }
        }
    }

    /// The same manifests through the AppProject CRD: manifests/argocd/ is valid Argo CD input.
    @Test func argoManifestsValidate() async throws {
        let dir = TestCluster.repositoryDirectory.appendingPathComponent("manifests/argocd")
        try await TestCluster.with(crds: ["crds/argocd/appproject-crd.yaml"]) { c in
            try await c.createNamespace("argocd")
            let project = try YAML.parse(String(contentsOf: dir.appendingPathComponent("appproject.yaml"), encoding: .utf8))
            let projects = c.client.dynamic(
                ResourceType(group: "argoproj.io", version: "v1alpha1", kind: "AppProject", plural: "appprojects", namespaced: true),
                namespace: "argocd")
            let stored = try await projects.create(project, params: WriteParams(fieldValidation: .strict))
            let destinations = (stored[path: "spec", "destinations"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            #expect(Set(destinations).isSuperset(of: ["microshift-rpi", "microshift-nuc"]))
            let secret = try YAML.parse(String(contentsOf: dir.appendingPathComponent("cluster-secret-example.yaml"), encoding: .utf8))
            #expect(secret[path: "metadata", "labels", "argocd.argoproj.io/secret-type"] == "cluster")
            #expect(secret[path: "stringData", "name"] == "microshift-rpi")
        }
    }
}

/// `git http-backend` on loopback is a real smart-HTTP remote: the operator's ref listing agrees with `git ls-remote`.
@Suite struct GitRemoteTests {
    @Test(.enabled(if: GitHTTPServer.isInstalled, "git http-backend is not installed"))
    func listsTagsLikeGitLsRemote() async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        try await git.createRepository("donkeycar")
        let v1 = try await git.tag("donkeycar", "v1.0.0")
        let v2commit = try await git.commit("donkeycar", files: ["model.py": "speed = 2\n"], message: "faster")
        let v2 = try await git.tag("donkeycar", "v1.10.0")
        #expect(v2 == v2commit && v1 != v2)
        let refs = try await GitRemote(url: git.url("donkeycar"), egress: .loopbackFixtures).refs()
        let newest = try #require(ReleaseSelection.newest(refs, pattern: "v*"))
        #expect(newest.tag == "v1.10.0" && newest.commit == v2)

        let lsRemote = try await runProcess("/usr/bin/git", ["ls-remote", "--tags", git.url("donkeycar")])
        #expect(lsRemote.status == 0, "\(lsRemote.output)")
        for line in lsRemote.output.split(separator: "\n") where line.hasSuffix("^{}") {
            let parts = line.split(separator: "\t")
            let name = String(parts[1].dropLast(3))
            #expect(refs.first { $0.name == name }?.commit == String(parts[0]), "\(name)")
        }

        await #expect { _ = try await GitRemote(url: git.url("missing"), egress: .loopbackFixtures).refs() } throws: {
            ($0 as? GitRemote.Failure)?.message.contains("404") == true
        }
        await #expect {
            _ = try await GitRemote(url: "http://127.0.0.1:\(try LocalRegistry.freePort())/x.git", egress: .loopbackFixtures).refs()
        } throws: { ($0 as? GitRemote.Failure)?.message.contains("cannot reach") == true }
    }
}

/// Repository addresses over ssh, as git reads them, and what admission refuses of them.
@Suite struct GitAddressTests {
    @Test func sshAddressesParseAsGitReadsThem() {
        #expect(GitSSHRemote.Address("git@github.com:AICoE/repo.git") == .init(user: "git", host: "github.com", port: 22, path: "AICoE/repo.git"))
        #expect(
            GitSSHRemote.Address("ssh://bot@git.example:2222/srv/repo.git")
                == .init(user: "bot", host: "git.example", port: 2222, path: "/srv/repo.git"))
        #expect(GitSSHRemote.Address("ssh://git.example/repo.git")?.user == "git")
        #expect(GitSSHRemote.Address("ssh://bot@git.example:2222/r")?.knownHostsName == "[git.example]:2222")
        #expect(GitSSHRemote.Address("git@GitHub.com:a/b")?.knownHostsName == "github.com")
        // What an ssh client would read as an option, a password, no path: not addresses.
        for bad in [
            "ssh://-oProxyCommand=touch%20x/repo", "-oProxyCommand=x@host:repo", "ssh://bot:pw@host/repo", "ssh://host", "git@host:",
            "https://host/repo",
        ] {
            #expect(GitSSHRemote.Address(bad) == nil, "\(bad)")
        }
        var spec = Meteor.Spec(url: "git@github.com:AICoE/repo.git", ref: "main")
        #expect(SpecValidation.problems(spec).isEmpty)
        spec.url = "ssh://-oProxyCommand=touch%20x/repo"
        #expect(SpecValidation.problems(spec).map(\.field) == ["spec.url"])
        spec.url = "git@host:repo name"
        #expect(SpecValidation.problems(spec).map(\.field) == ["spec.url"])
    }

    @Test func knownHostsPatternsAreOpenSSHs() {
        #expect(OpenSSHKeys.matches("[127.0.0.1]:2222", host: "[127.0.0.1]:2222"))
        #expect(!OpenSSHKeys.matches("[127.0.0.1]:2222", host: "1"))
        #expect(OpenSSHKeys.matches("*.example.com,!evil.example.com", host: "git.example.com"))
        #expect(!OpenSSHKeys.matches("*.example.com,!evil.example.com", host: "evil.example.com"))
        #expect(OpenSSHKeys.matches("git?.example", host: "git1.example") && !OpenSSHKeys.matches("git?.example", host: "git12.example"))
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        #expect(OpenSSHKeys.knownHostKeys("github.com \(key)", for: "github.com").count == 1)
        #expect(
            OpenSSHKeys.knownHostKeys("github.com \(key)\n@revoked github.com \(key)", for: "github.com").isEmpty, "a revoked key is never trusted")
        #expect(OpenSSHKeys.knownHostKeys("@cert-authority *.example \(key)", for: "a.example").isEmpty)
    }
}
