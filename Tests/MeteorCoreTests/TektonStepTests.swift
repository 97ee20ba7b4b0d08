import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KubeModels
import KubeTestSupport
import MeteorCore
import Testing

/// The Tasks' step scripts run for real (`TektonStepRunner`: Tekton's substitution, the step's env and
/// workingDir, the PipelineRun's UID and fsGroup), on fixture repositories served by `git http-backend`, with the
/// tools the images carry: git, jupyter-book 1.0.2, pip and micropipenv (hack/test installs them in
/// `METEOR_STEP_TOOLS`). What a container would be is a virtualenv on PATH; what `buildah build` would run of a
/// generated Containerfile, its COPY and RUN lines, runs in a fresh virtualenv standing in for the base image.
@Suite(.enabled(if: StepTools.available, "no step tools (hack/test installs them)"), .timeLimit(.minutes(5)))
struct TektonStepTests {
    static let tekton = TestCluster.repositoryDirectory.appendingPathComponent("manifests/tekton")
    static let settings = BuildSettings()

    /// A runner for one Task, as the PipelineRuns the operator creates run it (their podTemplate's UID).
    static func runner(_ file: String, images: [String: TektonStepRunner.Image] = [:]) throws -> TektonStepRunner {
        var r = try TektonStepRunner(taskFile: tekton.appendingPathComponent(file))
        let owner: JSONValue = ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "m", "uid": "u"]]
        let run = PipelineRunBuilder.build(
            meteor: Meteor(metadata: ObjectMeta(name: "m", namespace: "ns"), spec: .init(url: "https://x/y", ref: "main")), owner: owner,
            pipeline: .jupyterbook, settings: settings)
        let context = run[path: "spec", "taskRunTemplate", "podTemplate", "securityContext"]
        r.runAsUser = context?["runAsUser"]?.intValue.map { UInt32($0) }
        r.fsGroup = context?["fsGroup"]?.intValue.map { UInt32($0) }
        r.images = images
        return r
    }

    static func workspace() -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("ws-\(UUID().uuidString)") }

    /// Clones `repository` at `ref` into a new workspace with the clone Task; the workspace and the commit.
    static func clone(_ git: GitHTTPServer, _ repository: String, ref: String = "main") async throws -> (URL, TektonStepRunner.Outcome) {
        let ws = workspace()
        let outcome = try await runner("task-git-clone.yaml").run(params: ["url": git.url(repository), "ref": ref], workspaces: ["source": ws])
        return (ws, outcome)
    }

    @Test func theCloneChecksOutTheRefAsTheBuildsNonRootUser() async throws {
        #expect(Self.settings.runAsUser == 65532, "builds run as Tekton's catalog UID by default")
        let git = try await GitHTTPServer.start()
        let commit = try await git.createRepository(
            "plain", files: ["README.md": "hello\n", "notebooks/a.ipynb": Fixtures.notebook(title: "A", code: "1 + 1")])
        let (ws, outcome) = try await Self.clone(git, "plain")
        await git.stop()
        #expect(outcome.succeeded, "\(outcome.output)")
        #expect(outcome.results["commit"] == commit)
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("notebooks/a.ipynb").path))
        if getuid() == 0 {
            // Written by the build's UID into a volume that is root's with the fsGroup: the next step can write too.
            let owner = try FileManager.default.attributesOfItem(atPath: ws.appendingPathComponent("README.md").path)[.ownerAccountID] as? NSNumber
            #expect(owner?.uint32Value == 65532)
        }
    }

    /// A private repository over ssh, served by OpenSSH's sshd to one key: the clone uses the Meteor's
    /// kubernetes.io/ssh-auth Secret (ssh-privatekey, known_hosts) and trusts only the hosts it lists. ssh stops
    /// for a UID without a passwd entry, as the build's 65532 is in alpine/git (tektoncd/catalog#1341): the step
    /// says so and how to fix it; as a UID the image knows (nobody, 65534) it clones.
    @Test(.enabled(if: SSHServer.isInstalled || ProcessInfo.processInfo.environment["CI"] == "true", "no sshd (hack/test installs openssh-server)"))
    func aPrivateRepositoryIsClonedOverSSHWithTheMeteorsKeySecret() async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        let commit = try await git.createRepository("by-ssh", files: ["README.md": "over ssh\n"])
        let key = try await SSHServer.keyPair()
        let ecdsa = try await SSHServer.keyPair(type: "ecdsa")
        let sshd = try await SSHServer.start(root: git.root, authorizedKey: key.publicKey + "\n" + ecdsa.publicKey)
        defer { sshd.stop() }
        func secret(knownHosts: String?) throws -> URL {
            let dir = Self.workspace()
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try key.privateKey.write(to: dir.appendingPathComponent("ssh-privatekey"), atomically: true, encoding: .utf8)
            if let knownHosts { try (knownHosts + "\n").write(to: dir.appendingPathComponent("known_hosts"), atomically: true, encoding: .utf8) }
            return dir
        }
        let params = ["url": sshd.url("by-ssh"), "ref": "main"]
        var asNobody = try Self.runner("task-git-clone.yaml")
        if getuid() == 0 { asNobody.runAsUser = 65534 }

        let cloned = try await asNobody.run(
            params: params, workspaces: ["source": Self.workspace(), "git-credentials": try secret(knownHosts: sshd.knownHosts)])
        #expect(cloned.succeeded, "\(cloned.output)\n--- sshd:\n\(sshd.log)")
        #expect(cloned.results["commit"] == commit)
        #expect(sshd.log.contains("Accepted publickey"), "authenticated by the Secret's key: \(sshd.log)")

        let unlisted = try await asNobody.run(
            params: params, workspaces: ["source": Self.workspace(), "git-credentials": try secret(knownHosts: nil)])
        #expect(!unlisted.succeeded && unlisted.output.contains("the ssh Secret has no known_hosts"), "\(unlisted.output)")
        let other = try await SSHServer.keyPair()
        let stranger = "[127.0.0.1]:\(sshd.port) " + other.publicKey.split(separator: " ").prefix(2).joined(separator: " ")
        let spoofed = try await asNobody.run(
            params: params, workspaces: ["source": Self.workspace(), "git-credentials": try secret(knownHosts: stranger)])
        #expect(
            !spoofed.succeeded && spoofed.output.contains("Host key verification failed"), "a host not in known_hosts is refused: \(spoofed.output)")

        // The operator's own listing of the repository's tags, over the same ssh with the same Secret (NIOSSH: its
        // image has no ssh or git): refs and peeled annotated tags as git ls-remote gives them.
        let tagged = try await git.tag("by-ssh", "v1.0.0")
        let address = try #require(GitSSHRemote.Address(sshd.url("by-ssh")))
        let refs = try await GitSSHRemote(
            address: address, credentials: .init(privateKey: key.privateKey, knownHosts: sshd.knownHosts), egress: .loopbackFixtures
        ).refs()
        #expect(
            refs.contains(GitRemote.Ref(name: "refs/heads/main", commit: commit))
                && refs.contains(GitRemote.Ref(name: "refs/tags/v1.0.0", commit: tagged)), "\(refs)")
        let mine = try secret(knownHosts: sshd.knownHosts)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: mine.appendingPathComponent("ssh-privatekey").path)
        let lsRemote = try await runProcess(
            "/usr/bin/git", ["ls-remote", sshd.url("by-ssh")],
            environment: [
                "GIT_SSH_COMMAND":
                    "ssh -i \(mine.appendingPathComponent("ssh-privatekey").path) -o IdentitiesOnly=yes -o UserKnownHostsFile=\(mine.appendingPathComponent("known_hosts").path) -o BatchMode=yes"
            ])
        let fromGit = lsRemote.output.split(separator: "\n").compactMap { line -> String? in
            let p = line.split(separator: "\t"); return p.count == 2 && !p[1].hasSuffix("^{}") ? "\(p[1])" : nil
        }
        #expect(Set(refs.map(\.name)) == Set(fromGit), "the same refs as git ls-remote: \(lsRemote.output)")
        // A hashed known_hosts (ssh-keygen -H), as many are, and an ECDSA key.
        let hashedFile = Self.workspace()
        try (sshd.knownHosts + "\n").write(to: hashedFile, atomically: true, encoding: .utf8)
        _ = try await runProcess("/usr/bin/ssh-keygen", ["-H", "-f", hashedFile.path])
        let hashed = try String(contentsOf: hashedFile, encoding: .utf8)
        #expect(hashed.hasPrefix("|1|"), "\(hashed)")
        #expect(
            try await GitSSHRemote(address: address, credentials: .init(privateKey: ecdsa.privateKey, knownHosts: hashed), egress: .loopbackFixtures)
                .refs().count == refs.count)
        // Refusals, each in its own words: a host key known_hosts does not list, a host it has no line for, a key
        // the server does not accept, a key the operator cannot read.
        await #expect {
            _ = try await GitSSHRemote(
                address: address, credentials: .init(privateKey: key.privateKey, knownHosts: stranger), egress: .loopbackFixtures
            ).refs()
        } throws: {
            ($0 as? GitRemote.Failure)?.message.contains("is not the one spec.gitSecretRef's known_hosts lists for it") == true
        }
        await #expect {
            _ = try await GitSSHRemote(
                address: address, credentials: .init(privateKey: key.privateKey, knownHosts: "elsewhere.example " + other.publicKey),
                egress: .loopbackFixtures
            ).refs()
        } throws: {
            ($0 as? GitRemote.Failure)?.message.contains("known_hosts has no key for [127.0.0.1]:\(sshd.port)") == true
        }
        await #expect {
            _ = try await GitSSHRemote(
                address: address, credentials: .init(privateKey: other.privateKey, knownHosts: sshd.knownHosts), egress: .loopbackFixtures
            ).refs()
        } throws: {
            ($0 as? GitRemote.Failure)?.message.contains("refused the key in spec.gitSecretRef for user \(address.user)") == true
        }
        let rsa = try await SSHServer.keyPair(type: "rsa")
        #expect(throws: GitRemote.Failure.self) { try OpenSSHKeys.privateKey(rsa.privateKey) }
        do { _ = try OpenSSHKeys.privateKey(rsa.privateKey) } catch let e as GitRemote.Failure {
            #expect(e.message.contains("a ssh-rsa key, which the operator cannot use"))
        }

        if getuid() == 0, getpwuid(65532) == nil {
            let as65532 = try await Self.runner("task-git-clone.yaml").run(
                params: params, workspaces: ["source": Self.workspace(), "git-credentials": try secret(knownHosts: sshd.knownHosts)])
            #expect(
                !as65532.succeeded && as65532.output.contains("ssh cannot run as UID 65532: the git image has no passwd entry for it"),
                "\(as65532.output)")
        }
    }

    /// The CRD admits any ref, abbreviated commits included, which `git fetch origin <abbrev>` cannot fetch: the
    /// clone resolves them against the fetched branches and tags; a ref that names nothing is refused by name.
    @Test func abbreviatedCommitsAreResolvedAndUnknownRefsNamed() async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        let first = try await git.createRepository("history", files: ["README.md": "one\n"])
        let second = try await git.commit("history", files: ["README.md": "two\n"], message: "second")
        let (ws, outcome) = try await Self.clone(git, "history", ref: String(first.prefix(8)))
        #expect(outcome.succeeded, "\(outcome.output)")
        #expect(outcome.results["commit"] == first)
        #expect(try String(contentsOf: ws.appendingPathComponent("README.md"), encoding: .utf8) == "one\n")
        let (_, full) = try await Self.clone(git, "history", ref: second)
        #expect(full.succeeded && full.results["commit"] == second, "\(full.output)")
        let (_, unknown) = try await Self.clone(git, "history", ref: "deadbeef")
        #expect(!unknown.succeeded)
        #expect(unknown.output.contains("ref deadbeef: no branch, tag or commit of that name in \(git.url("history"))"), "\(unknown.output)")
        let (_, branch) = try await Self.clone(git, "history", ref: "no-such-branch")
        #expect(!branch.succeeded && branch.output.contains("no-such-branch"), "\(branch.output)")
    }

    /// The sample rollout gate's check: the stage's images pinned by digest pass and are counted; a tag, or a stage
    /// on no cluster, fails it naming why.
    @Test func theSampleGatePassesPinnedImagesAndFailsATag() async throws {
        let gate = try TektonStepRunner(taskFile: Self.tekton.appendingPathComponent("samples/task-edge-gate-check.yaml"))
        let pinned = "quay.io/o/twin@sha256:" + String(repeating: "a", count: 64)
        let passed = try await gate.run(
            params: ["images": "\(pinned) \(pinned.replacingOccurrences(of: "twin", with: "car"))", "clusters": "nuc-1 nuc-2"], workspaces: [:])
        #expect(passed.succeeded && passed.results["CHECKED"] == "2", "\(passed.output)")
        let tagged = try await gate.run(params: ["images": "\(pinned) quay.io/o/twin:latest", "clusters": "nuc-1"], workspaces: [:])
        #expect(!tagged.succeeded && tagged.output.contains("not pinned by digest: quay.io/o/twin:latest"), "\(tagged.output)")
        let nowhere = try await gate.run(params: ["images": pinned, "clusters": " "], workspaces: [:])
        #expect(!nowhere.succeeded && nowhere.output.contains("the stage runs on no cluster"), "\(nowhere.output)")
    }

    /// A private repository: without credentials the clone fails at once (no prompt); with the Meteor's
    /// basic-auth Secret bound as the git-credentials workspace it clones, and the password is in no file the
    /// step wrote.
    @Test func aPrivateRepositoryIsClonedWithTheMeteorsBasicAuthSecret() async throws {
        let git = try await GitHTTPServer.start(basicAuth: ("meteor-bot", "s3cr3t-t0ken"))
        defer { Task { await git.stop() } }
        let commit = try await git.createRepository("private", files: ["README.md": "secret notebooks\n"])
        let (_, refused) = try await Self.clone(git, "private")
        #expect(!refused.succeeded)
        #expect(refused.output.contains("could not read Username") || refused.output.contains("Authentication failed"), "\(refused.output)")

        let credentials = Self.workspace()
        try FileManager.default.createDirectory(at: credentials, withIntermediateDirectories: true)
        try "meteor-bot".write(to: credentials.appendingPathComponent("username"), atomically: true, encoding: .utf8)
        try "s3cr3t-t0ken".write(to: credentials.appendingPathComponent("password"), atomically: true, encoding: .utf8)
        let ws = Self.workspace()
        let cloned = try await Self.runner("task-git-clone.yaml").run(
            params: ["url": git.url("private"), "ref": "main"], workspaces: ["source": ws, "git-credentials": credentials])
        #expect(cloned.succeeded, "\(cloned.output)")
        #expect(cloned.results["commit"] == commit)
        let written = try FileManager.default.subpathsOfDirectory(atPath: ws.path).filter { !$0.hasPrefix(".git/objects") }
        for path in written {
            let text = (try? String(contentsOf: ws.appendingPathComponent(path), encoding: .utf8)) ?? ""
            #expect(!text.contains("s3cr3t-t0ken"), "the token was written to \(path)")
        }
        // The operator's own listing of its tags, with and without the same credentials.
        #expect(
            try await GitRemote(
                url: git.url("private"), credentials: .init(username: "meteor-bot", password: "s3cr3t-t0ken"), egress: .loopbackFixtures
            ).refs().contains { $0.commit == commit })
        await #expect { _ = try await GitRemote(url: git.url("private"), egress: .loopbackFixtures).refs() } throws: {
            ($0 as? GitRemote.Failure)?.message.contains("a private repository needs spec.gitSecretRef") == true
        }
        // The Meteor's spec.gitSecretRef is what the run binds.
        var meteor = Meteor(metadata: ObjectMeta(name: "p", namespace: "ns"), spec: .init(url: git.url("private"), ref: "main"))
        meteor.spec.gitSecretRef = .init(name: "repo-creds")
        let run = PipelineRunBuilder.build(
            meteor: meteor, owner: ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "p", "uid": "u"]],
            pipeline: .jupyterbook, settings: Self.settings)
        #expect((run[path: "spec", "workspaces"]?.arrayValue ?? []).contains(["name": "git-credentials", "secret": ["secretName": "repo-creds"]]))
    }

    @Test func aBookIsBuiltWithATocWhenTheRepositoryHasNoneAndItsNotebooksAreNotRun() async throws {
        let git = try await GitHTTPServer.start()
        // The repository asks jupyter-book to run every notebook; a run would print the joined marker.
        try await git.createRepository(
            "book",
            files: [
                "intro.md": "# Meteor fixture\n\nA book from a repository.\n",
                "analysis.ipynb": Fixtures.notebook(title: "Analysis", code: "print('EXECUTED' + '-MARKER')"),
                "_config.yml": "title: Fixture book\nauthor: Meteor\nexecute:\n  execute_notebooks: force\n",
            ])
        let (ws, cloned) = try await Self.clone(git, "book")
        await git.stop()
        #expect(cloned.succeeded, "\(cloned.output)")
        let book = try Self.runner("task-jupyter-book.yaml", images: [StepTools.pythonImage: StepTools.imageWithJupyterBook])
        let outcome = try await book.run(params: ["site-url": "http://book.example/"], workspaces: ["source": ws])
        #expect(outcome.succeeded, "\(outcome.output.suffix(3000))")
        #expect(outcome.results["URL"] == "http://book.example/")
        let html = ws.appendingPathComponent("_build/html")
        #expect(FileManager.default.fileExists(atPath: html.appendingPathComponent("index.html").path))
        let page = try String(contentsOf: html.appendingPathComponent("analysis.html"), encoding: .utf8)
        #expect(page.contains("Analysis"))
        #expect(!page.contains("EXECUTED-MARKER"), "the notebook was run although execute-notebooks is off")
        #expect(
            try String(contentsOf: ws.appendingPathComponent("_config.yml"), encoding: .utf8).contains("title: Fixture book"),
            "the repository's own settings are kept")
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("_toc.yml").path))
    }

    /// ubi9/python-311 has no jupyter-book and its python3 is a virtualenv's: `pip install --user` is refused
    /// there. The Task installs the pinned version into a new virtualenv instead (from the wheels hack/test
    /// downloaded, as a mirror would serve them).
    @Test func withoutJupyterBookInTheImageThePinnedVersionIsInstalledAndUsed() async throws {
        let image = try await StepTools.bareImage()
        let ws = Self.workspace()
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        try "# Only a page\n".write(to: ws.appendingPathComponent("index.md"), atomically: true, encoding: .utf8)
        if getuid() == 0 { _ = try await runProcess("/bin/chown", ["-R", "65532:65532", ws.path]) }
        let book = try Self.runner("task-jupyter-book.yaml", images: [StepTools.pythonImage: image])
        let outcome = try await book.run(workspaces: ["source": ws])
        #expect(outcome.succeeded, "\(outcome.output.suffix(3000))")
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("_build/html/index.html").path))
        #expect(!outcome.output.contains("Can not perform a '--user' install"))
    }

    @Test func theSiteImageServesOnTheDeploymentsPortAsNonRoot() async throws {
        let ws = Self.workspace()
        let outcome = try await Self.runner("task-containerfile.yaml").run(
            params: ["kind": "book", "base-image": "registry.access.redhat.com/ubi9/nginx-124:9.5"], workspaces: ["source": ws])
        #expect(outcome.succeeded, "\(outcome.output)")
        let containerfile = try String(contentsOf: ws.appendingPathComponent("Containerfile"), encoding: .utf8)
        // The base image's own CMD prints usage and exits: the Deployment would crash-loop.
        #expect(containerfile.contains("CMD [\"nginx\", \"-g\", \"daemon off;\"]"), "\(containerfile)")
        #expect(containerfile.contains("EXPOSE \(BookSite.port)"))
        #expect(BookSite.port >= 1024, "a non-root user cannot listen below 1024")
    }

    /// Pipfile and Pipfile.lock both go in (`micropipenv install --deploy` checks one against the other), and the
    /// locked packages are installed in the base image.
    @Test func aNotebookImageInstallsTheLockedDependencies() async throws {
        let base = try await StepTools.bareImage()
        let python = try await StepTools.pythonVersion(base)
        let git = try await GitHTTPServer.start()
        try await git.createRepository("locked", files: try await Fixtures.pipenvProject(python: python))
        let (ws, cloned) = try await Self.clone(git, "locked")
        await git.stop()
        #expect(cloned.succeeded, "\(cloned.output)")
        let written = try await Self.runner("task-containerfile.yaml").run(
            params: ["kind": "notebook", "base-image": "quay.io/example/notebook:1"], workspaces: ["source": ws])
        #expect(written.succeeded, "\(written.output)")
        let built = try await StepTools.build(containerfile: ws.appendingPathComponent("Containerfile"), context: ws, in: base)
        #expect(built.status == 0, "\(built.output.suffix(3000))")
        let imported = try await runProcess(base.path[0] + "/python3", ["-c", "import six; print(six.__version__)"])
        #expect(imported.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1.16.0", "\(imported.output)")
    }

    @Test func aLockForAnotherPythonStopsTheBuildNamingBothVersions() async throws {
        let base = try await StepTools.bareImage()
        let python = try await StepTools.pythonVersion(base)
        let ws = Self.workspace()
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        for (name, text) in try await Fixtures.pipenvProject(python: "3.6") {
            try text.write(to: ws.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        if getuid() == 0 { _ = try await runProcess("/bin/chown", ["-R", "65532:65532", ws.path]) }
        let written = try await Self.runner("task-containerfile.yaml").run(
            params: ["kind": "notebook", "base-image": "quay.io/example/notebook:1"], workspaces: ["source": ws])
        #expect(written.succeeded, "\(written.output)")
        let built = try await StepTools.build(containerfile: ws.appendingPathComponent("Containerfile"), context: ws, in: base)
        #expect(built.status != 0)
        let why =
            "Pipfile.lock is locked for Python 3.6 but the base image has Python \(python): lock it again with Python \(python), or choose a base image with Python 3.6"
        #expect(built.output.contains(why), "\(built.output.suffix(2000))")

        // The buildah Task, given that build's output and exit status, records the line as its FAILURE result and
        // fails in its report step; the operator reads it from the PipelineRun's IMAGE_FAILURE.
        let buildah = try StepTools.buildah(buildOutput: built.output, buildStatus: built.status)
        let image = try await Self.runner("task-buildah.yaml", images: ["quay.io/buildah/stable:v1.37": buildah]).run(
            params: ["image": "registry.example/ns/m:1"], workspaces: ["source": ws])
        #expect(!image.succeeded && image.failedStep == "report", "\(image.output)")
        #expect(image.results["FAILURE"] == "could not build Containerfile for linux/amd64: \(why)", "\(image.results)")
        #expect(image.results["IMAGE_DIGEST"] == nil, "nothing was pushed")
        let run: JSONValue = [
            "status": [
                "conditions": [
                    [
                        "type": "Succeeded", "status": "False", "reason": "Failed",
                        "message": "Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 0",
                    ]
                ],
                "results": [
                    ["name": "CONTAINERFILE_FAILURE", "value": ""], ["name": "IMAGE_FAILURE", "value": .string(image.results["FAILURE"] ?? "")],
                ],
            ]
        ]
        #expect(
            PipelineRunState(run).message
                == "could not build Containerfile for linux/amd64: \(why) (Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 0)")

        // A build that works pushes, and the same Task reports no failure.
        let good = try StepTools.buildah(buildOutput: "STEP 1/3: FROM b\n", buildStatus: 0, digest: "sha256:" + String(repeating: "ab", count: 32))
        let pushed = try await Self.runner("task-buildah.yaml", images: ["quay.io/buildah/stable:v1.37": good]).run(
            params: ["image": "registry.example/ns/m:1"], workspaces: ["source": ws])
        #expect(pushed.succeeded, "\(pushed.output)")
        #expect(
            pushed.results["FAILURE"] == "" && pushed.results["IMAGE_URL"] == "registry.example/ns/m:1"
                && pushed.results["IMAGE_DIGEST"] == "sha256:" + String(repeating: "ab", count: 32), "\(pushed.results)")
        // A refused push is named too (the registry's last words).
        let refused = try StepTools.buildah(
            buildOutput: "", buildStatus: 0, pushOutput: "Error: pushing image: unauthorized: authentication required\n", pushStatus: 125)
        let denied = try await Self.runner("task-buildah.yaml", images: ["quay.io/buildah/stable:v1.37": refused]).run(
            params: ["image": "registry.example/ns/m:1"], workspaces: ["source": ws])
        #expect(
            denied.results["FAILURE"] == "could not push registry.example/ns/m:1: Error: pushing image: unauthorized: authentication required",
            "\(denied.results)")
    }

    /// The Elyra AIDevSecOps tutorial's shape: no lock at the root, Thoth overlays named in .thoth.yaml. The
    /// first runtime environment is built unless the Meteor names another; an unknown one is refused by name.
    @Test func thothOverlaysGiveTheNotebookImageItsDependencies() async throws {
        let base = try await StepTools.bareImage()
        let python = try await StepTools.pythonVersion(base)
        let git = try await GitHTTPServer.start()
        var files: [String: String] = [
            ".thoth.yaml": """
            host: khemenu.thoth-station.ninja
            tls_verify: false
            requirements_format: pipenv
            overlays_dir: overlays
            runtime_environments:
              - name: training
                operating_system:
                  name: ubi
                  version: "9"
                python_version: "\(python)"
              - name: serving
                python_version: "3.6"

            """,
            "notebooks/intro.ipynb": Fixtures.notebook(title: "Tutorial", code: "import six"),
        ]
        for (name, text) in try await Fixtures.pipenvProject(python: python) where name.hasPrefix("Pipfile") {
            files["overlays/training/\(name)"] = text
        }
        for (name, text) in try await Fixtures.pipenvProject(python: "3.6") where name.hasPrefix("Pipfile") {
            files["overlays/serving/\(name)"] = text
        }
        try await git.createRepository("elyra", files: files)
        defer { Task { await git.stop() } }
        let containerfileTask = try Self.runner("task-containerfile.yaml")

        let (ws, cloned) = try await Self.clone(git, "elyra")
        #expect(cloned.succeeded, "\(cloned.output)")
        let first = try await containerfileTask.run(params: ["kind": "notebook", "base-image": "b"], workspaces: ["source": ws])
        #expect(first.succeeded, "\(first.output)")
        #expect(first.output.contains("dependencies from the Thoth overlay overlays/training"))
        let built = try await StepTools.build(containerfile: ws.appendingPathComponent("Containerfile"), context: ws, in: base)
        #expect(built.status == 0, "\(built.output.suffix(2000))")
        let imported = try await runProcess(base.path[0] + "/python3", ["-c", "import six; print(six.__version__)"])
        #expect(imported.output.contains("1.16.0"), "\(imported.output)")
        // Its book too, from the notebooks in their folder (no _toc.yml, and no page at the root to start from:
        // jupyter-book's toc generation stopped with "path does not contain a root file").
        let book = try await Self.runner("task-jupyter-book.yaml", images: [StepTools.pythonImage: StepTools.imageWithJupyterBook]).run(workspaces: [
            "source": ws
        ])
        #expect(book.succeeded, "\(book.output.suffix(2000))")
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("_build/html/notebooks/intro.html").path))

        let (ws2, _) = try await Self.clone(git, "elyra")
        let named = try await containerfileTask.run(
            params: ["kind": "notebook", "base-image": "b", "overlay": "serving"], workspaces: ["source": ws2])
        #expect(named.succeeded && named.output.contains("overlays/serving"), "\(named.output)")
        let serving = try await StepTools.build(
            containerfile: ws2.appendingPathComponent("Containerfile"), context: ws2, in: try await StepTools.bareImage())
        #expect(
            serving.output.contains("Pipfile.lock is locked for Python 3.6"),
            "the serving overlay's own lock was taken: \(serving.output.suffix(1000))")

        let (ws3, _) = try await Self.clone(git, "elyra")
        let unknown = try await containerfileTask.run(
            params: ["kind": "notebook", "base-image": "b", "overlay": "inference"], workspaces: ["source": ws3])
        #expect(!unknown.succeeded)
        #expect(unknown.output.contains("Thoth overlay \"inference\" not found in overlays/ (it has: serving training )"), "\(unknown.output)")

        // The Meteor's spec.overlay is what the run asks for.
        var meteor = Meteor(metadata: ObjectMeta(name: "elyra", namespace: "ns"), spec: .init(url: git.url("elyra"), ref: "main"))
        meteor.spec.overlay = "serving"
        let run = PipelineRunBuilder.build(
            meteor: meteor, owner: ["apiVersion": "meteor.zone/v1alpha1", "kind": "Meteor", "metadata": ["name": "elyra", "uid": "u"]],
            pipeline: .jupyterhub, settings: Self.settings)
        #expect((run[path: "spec", "params"]?.arrayValue ?? []).contains(["name": "overlay", "value": "serving"]))
        // A name that could leave overlays_dir never reaches the run (the CRD's pattern, and the reconciler's check
        // for Meteors stored under a laxer CRD).
        meteor.spec.overlay = "../../etc"
        #expect(SpecValidation.problems(meteor.spec).map(\.field) == ["spec.overlay"])
    }

    @Test func requirementsAreInstalledAndARepositoryWithNoLockIsRefusedByName() async throws {
        let ws = Self.workspace()
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        if getuid() == 0 { _ = try await runProcess("/bin/chown", ["-R", "65532:65532", ws.path]) }
        let containerfileTask = try Self.runner("task-containerfile.yaml")
        let none = try await containerfileTask.run(params: ["kind": "notebook", "base-image": "b"], workspaces: ["source": ws])
        // The reason is a result (what the operator puts in the Meteor's status); a later step fails the TaskRun.
        #expect(!none.succeeded && none.failedStep == "report")
        #expect(none.results["FAILURE"] == "no Pipfile.lock or requirements.txt in .: nothing to lock dependencies from", "\(none.results)")
        #expect(none.output.contains("no Pipfile.lock or requirements.txt in .: nothing to lock dependencies from"))
        try "six==1.16.0\n".write(to: ws.appendingPathComponent("requirements.txt"), atomically: true, encoding: .utf8)
        let written = try await containerfileTask.run(params: ["kind": "notebook", "base-image": "b"], workspaces: ["source": ws])
        #expect(written.succeeded, "\(written.output)")
        let base = try await StepTools.bareImage()
        let built = try await StepTools.build(containerfile: ws.appendingPathComponent("Containerfile"), context: ws, in: base)
        #expect(built.status == 0, "\(built.output.suffix(2000))")
    }
}

/// The tools hack/test installs for the step tests, and stand-ins for images built from them.
enum StepTools {
    static let directory: URL? = {
        let env = ProcessInfo.processInfo.environment
        let dir =
            env["METEOR_STEP_TOOLS"].map { URL(fileURLWithPath: $0) } ?? TestCluster.repositoryDirectory.appendingPathComponent(".build/step-tools")
        return FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("jupyter-book/bin/jupyter-book").path) ? dir : nil
    }()

    /// Under CI a missing tool fails the suite's tests instead of skipping them.
    static var available: Bool { directory != nil || ProcessInfo.processInfo.environment["CI"] == "true" }

    static let pythonImage = "registry.access.redhat.com/ubi9/python-311:9.5"

    /// The buildah image, standing in for it: a `buildah` that replays a build's output and exit status (there is
    /// no container runtime here; `build(containerfile:)` is what ran the build) and, for `push`, writes
    /// `--digestfile` or fails as told.
    static func buildah(
        buildOutput: String, buildStatus: Int32, pushOutput: String = "", pushStatus: Int32 = 0,
        digest: String = "sha256:" + String(repeating: "0", count: 64)
    ) throws -> TektonStepRunner.Image {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("buildah-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try buildOutput.write(to: dir.appendingPathComponent("build.out"), atomically: true, encoding: .utf8)
        try pushOutput.write(to: dir.appendingPathComponent("push.out"), atomically: true, encoding: .utf8)
        let script = """
            #!/bin/sh
            for a in "$@"; do case "$a" in build|push) verb=$a ;; esac; done
            case "$verb" in
              build) cat '\(dir.path)/build.out'; exit \(buildStatus) ;;
              push)
                cat '\(dir.path)/push.out'
                [ \(pushStatus) -eq 0 ] || exit \(pushStatus)
                while [ $# -gt 0 ]; do [ "$1" = --digestfile ] && printf '%s' '\(digest)' > "$2"; shift; done ;;
            esac

            """
        let tool = dir.appendingPathComponent("buildah")
        try script.write(to: tool, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tool.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir.path)
        return TektonStepRunner.Image(path: [dir.path])
    }

    /// An image that carries jupyter-book: its virtualenv first on PATH.
    static var imageWithJupyterBook: TektonStepRunner.Image {
        let venv = directory?.appendingPathComponent("jupyter-book").path ?? "/nonexistent"
        return TektonStepRunner.Image(path: ["\(venv)/bin"], environment: ["VIRTUAL_ENV": venv])
    }

    /// A Python image without jupyter-book, as ubi9/python-311 is: a new virtualenv first on PATH (the image's
    /// /opt/app-root), pip pointed at the downloaded wheels instead of an index.
    static func bareImage() async throws -> TektonStepRunner.Image {
        guard let directory else { throw TektonStepRunner.Failure(message: "no step tools: run hack/test, or set METEOR_STEP_TOOLS") }
        let venv = FileManager.default.temporaryDirectory.appendingPathComponent("image-\(UUID().uuidString)")
        // From the system's Python (as the tools are), which the builds' non-root UID can run.
        let made = try await runProcess("/usr/bin/python3", ["-m", "venv", venv.path])
        guard made.status == 0 else { throw TektonStepRunner.Failure(message: "venv: \(made.output)") }
        if getuid() == 0 { _ = try await runProcess("/bin/chown", ["-R", "65532:65532", venv.path]) }
        return TektonStepRunner.Image(
            path: ["\(venv.path)/bin"],
            environment: [
                "VIRTUAL_ENV": venv.path, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": directory.appendingPathComponent("wheels").path,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            ])
    }

    /// `X.Y` of an image's python3.
    static func pythonVersion(_ image: TektonStepRunner.Image) async throws -> String {
        let r = try await runProcess(image.path[0] + "/python3", ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What `buildah build` would do with a generated Containerfile, for the instructions these Containerfiles
    /// use: COPY from the context into a work directory, RUN there with the base image's tools, as the build's
    /// UID. FROM is the image given; anything else is refused, so a new instruction cannot pass unseen.
    static func build(containerfile: URL, context: URL, in image: TektonStepRunner.Image) async throws -> (status: Int32, output: String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("build-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        var output = ""
        for line in try String(contentsOf: containerfile, encoding: .utf8).split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard let instruction = words.first else { continue }
            let rest = words.count > 1 ? words[1] : ""
            switch instruction {
            case "FROM", "EXPOSE", "CMD":
                continue
            case "COPY":
                let parts = rest.split(separator: " ").map(String.init)
                for source in parts.dropLast() {
                    let from = context.appendingPathComponent(source), to = root.appendingPathComponent(from.lastPathComponent)
                    try FileManager.default.copyItem(at: from, to: to)
                }
            case "RUN":
                var env = ["PATH": (image.path + ["/usr/bin", "/bin"]).joined(separator: ":"), "HOME": root.path, "LANG": "C.UTF-8"]
                for (k, v) in image.environment { env[k] = v }
                var command = ["/bin/sh", "-c", rest]
                if getuid() == 0 {
                    _ = try await runProcess("/bin/chown", ["-R", "65532:65532", root.path])
                    command = ["/usr/bin/setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", "--"] + command
                }
                let r = try await runProcess(command[0], Array(command.dropFirst()), environment: env, replacingEnvironment: true, directory: root)
                output += r.output
                if r.status != 0 { return (r.status, output) }
            default:
                return (1, output + "unsupported instruction \(instruction)")
            }
        }
        return (0, output)
    }
}

/// Fixture repository content.
enum Fixtures {
    /// A notebook with a title cell and one code cell, saved without outputs.
    static func notebook(title: String, code: String) -> String {
        let nb: JSONValue = [
            "cells": [
                ["cell_type": "markdown", "metadata": [:], "source": .array([.string("# \(title)\n")])],
                ["cell_type": "code", "execution_count": .null, "metadata": [:], "outputs": [], "source": .array([.string(code)])],
            ],
            "metadata": ["kernelspec": ["display_name": "Python 3", "language": "python", "name": "python3"]],
            "nbformat": 4, "nbformat_minor": 5,
        ]
        return nb.serializedString()
    }

    /// A pipenv project locking six 1.16.0 for Python `python`: Pipfile and a Pipfile.lock whose hash is the
    /// Pipfile's (pipenv's: SHA-256 of its sources, requires and packages as sorted compact JSON).
    static func pipenvProject(python: String) async throws -> [String: String] {
        let pipfile = """
            [[source]]
            url = "https://pypi.org/simple"
            verify_ssl = true
            name = "pypi"

            [packages]
            six = "==1.16.0"

            [requires]
            python_version = "\(python)"

            """
        let meta =
            "{\"_meta\":{\"requires\":{\"python_version\":\"\(python)\"},\"sources\":[{\"name\":\"pypi\",\"url\":\"https://pypi.org/simple\",\"verify_ssl\":true}]},\"default\":{\"six\":\"==1.16.0\"},\"develop\":{}}"
        let hash = SHA256.hash(data: Data(meta.utf8)).map { String(format: "%02x", $0) }.joined()
        let lock = """
            {
                "_meta": {
                    "hash": {"sha256": "\(hash)"},
                    "pipfile-spec": 6,
                    "requires": {"python_version": "\(python)"},
                    "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": true}]
                },
                "default": {
                    "six": {
                        "hashes": [
                            "sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926",
                            "sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"
                        ],
                        "index": "pypi",
                        "version": "==1.16.0"
                    }
                },
                "develop": {}
            }

            """
        return ["Pipfile": pipfile, "Pipfile.lock": lock, "notebook.ipynb": notebook(title: "Locked", code: "import six")]
    }
}
