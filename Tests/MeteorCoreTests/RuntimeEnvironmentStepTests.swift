import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KubeModels
import KubeTestSupport
import MeteorCore
import Testing

/// The CustomRuntimeEnvironment Tasks' steps, run for real (`TektonStepRunner`): pip-compile (pip-tools 7.4.1) locks
/// a package list from real wheels and the notebook Containerfile installs the lock; skopeo reads an imported
/// image's digest from a real registry (Debian's docker-registry) and the check runs in a real notebook Python
/// (jupyter_server 2.14.2, hack/test installs both in `METEOR_STEP_TOOLS`).
@Suite(.enabled(if: StepTools.available, "no step tools (hack/test installs them)"), .timeLimit(.minutes(5)))
struct RuntimeEnvironmentStepTests {
    /// The lock step's image: a Python with pip-tools.
    static var pythonWithPipTools: TektonStepRunner.Image {
        let venv = StepTools.directory?.appendingPathComponent("pip-tools").path ?? "/nonexistent"
        return TektonStepRunner.Image(path: ["\(venv)/bin"], environment: ["VIRTUAL_ENV": venv])
    }

    /// A notebook image's Python: jupyter_server and the jupyter command.
    static var notebookImage: TektonStepRunner.Image {
        let venv = StepTools.directory?.appendingPathComponent("notebook-image").path ?? "/nonexistent"
        return TektonStepRunner.Image(path: ["\(venv)/bin"], environment: ["VIRTUAL_ENV": venv])
    }

    static func workspace() async throws -> URL {
        let ws = TektonStepTests.workspace()
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        if getuid() == 0 { _ = try await runProcess("/bin/chown", ["-R", "65532:65532", ws.path]) }
        return ws
    }

    static func lock(_ packages: String, python: String = "", in ws: URL) async throws -> TektonStepRunner.Outcome {
        let image = RuntimeEnvironmentBuilder.pythonImage("3.11")
        return try await TektonStepTests.runner("task-pip-compile.yaml", images: [image: pythonWithPipTools]).run(
            params: [
                "packages": packages, "python-version": python, "python-image": image,
                "find-links": StepTools.directory?.appendingPathComponent("wheels").path ?? "",
            ],
            workspaces: ["source": ws])
    }

    /// A package list, as the operator passes it, is locked into a fully pinned requirements.txt (an unpinned package
    /// gets the version the index has), which the notebook Containerfile installs in the base image.
    @Test func aPackageListIsLockedWithPipCompileAndTheLockInstalled() async throws {
        let cre = CustomRuntimeEnvironment(
            metadata: ObjectMeta(name: "six", namespace: "ns"),
            spec: .init(buildType: .packageList, packageVersions: ["six", "micropipenv==1.8.0"], runtimeEnvironment: .init(pythonVersion: "3.11")))
        let params = RuntimeEnvironmentBuilder.params(cre, image: "r/i:1")
        let packages = try #require(params.first { $0["name"] == "packages" }?["value"]?.stringValue)
        let ws = try await Self.workspace()
        let locked = try await Self.lock(packages, python: "3.11", in: ws)
        #expect(locked.succeeded, "\(locked.output)")
        #expect(locked.results["FAILURE"] == "")
        let lock = try String(contentsOf: ws.appendingPathComponent("requirements.txt"), encoding: .utf8)
        let pins = lock.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.hasPrefix(" ") }.map(String.init)
        #expect(pins == ["micropipenv==1.8.0", "six==1.16.0"], "every package pinned, the unpinned one too:\n\(lock)")
        let options = lock.split(separator: "\n").filter { $0.hasPrefix("-") }
        #expect(options.isEmpty, "the lock names no index or wheel directory of the build machine:\n\(lock)")

        let written = try await TektonStepTests.runner("task-containerfile.yaml").run(
            params: ["kind": "notebook", "base-image": "quay.io/example/notebook:1"], workspaces: ["source": ws])
        #expect(written.succeeded, "\(written.output)")
        let base = try await StepTools.bareImage()
        let built = try await StepTools.build(containerfile: ws.appendingPathComponent("Containerfile"), context: ws, in: base)
        #expect(built.status == 0, "\(built.output.suffix(2000))")
        let imported = try await runProcess(base.path[0] + "/python3", ["-c", "import six, micropipenv; print(six.__version__)"])
        #expect(imported.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1.16.0", "\(imported.output)")
    }

    /// What cannot be locked says why in the FAILURE result the operator shows, and the Task fails in its report step.
    @Test func whatCannotBeLockedIsNamed() async throws {
        let otherPython = try await Self.lock("six", python: "3.9", in: try await Self.workspace())
        #expect(!otherPython.succeeded && otherPython.failedStep == "report")
        #expect(
            otherPython.results["FAILURE"] == "runtimeEnvironment.pythonVersion is 3.9 but the lock step's image has Python 3.11",
            "\(otherPython.results)")
        let option = try await Self.lock("six\n--index-url http://elsewhere.example/simple", in: try await Self.workspace())
        #expect(
            option.results["FAILURE"] == "packageVersions may list packages only, not pip options: --index-url http://elsewhere.example/simple",
            "\(option.output)")
        let unknown = try await Self.lock("no-such-package-meteor==1.0", in: try await Self.workspace())
        #expect(!unknown.succeeded)
        #expect(unknown.results["FAILURE"]?.hasPrefix("pip-compile could not lock packageVersions for Python 3.11:") == true, "\(unknown.output)")
        #expect(unknown.results["FAILURE"]?.contains("no-such-package-meteor") == true, "\(unknown.results)")
        let empty = try await Self.lock(" \n", in: try await Self.workspace())
        #expect(empty.results["FAILURE"] == "packageVersions is empty: there is nothing to lock")
    }

    /// An image in a real registry: its digest read with skopeo, and the image's own Python checked for a Jupyter
    /// server; an image without one, and one that is not there, are refused by name.
    @Test(.enabled(if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil, "docker-registry is not installed"))
    func anImportedImageIsResolvedToItsDigestAndCheckedForAJupyterServer() async throws {
        let registry = try await LocalRegistry(port: nil)
        defer { registry.stop() }
        let client = RegistryClient(insecure: true, egress: .unrestricted)
        let image = "\(registry.address)/notebooks/datascience:2024a"
        let digest = try await client.pushImage(
            try RegistryClient.Reference(parsing: image), tag: "2024a", platform: "linux/amd64", content: "a notebook image")
        let plain = "\(registry.address)/notebooks/python:3.11"
        _ = try await client.pushImage(try RegistryClient.Reference(parsing: plain), tag: "3.11", platform: "linux/amd64", content: "python only")
        let bare = try await StepTools.bareImage()
        let runner = try TektonStepTests.runner("task-import-image.yaml", images: [image: Self.notebookImage, plain: bare])

        let imported = try await runner.run(params: ["image": image, "tls-verify": "false"], workspaces: [:])
        #expect(imported.succeeded, "\(imported.output)")
        #expect(imported.results["IMAGE_DIGEST"] == digest, "the digest the registry serves: \(imported.output)")
        #expect(imported.results["IMAGE_URL"] == image)
        #expect(imported.results["PYTHON_VERSION"] == "3.11")

        let notANotebook = try await runner.run(params: ["image": plain, "tls-verify": "false"], workspaces: [:])
        #expect(!notANotebook.succeeded && notANotebook.failedStep == "report")
        #expect(
            notANotebook.results["FAILURE"] == "not a notebook image: Python 3.11 has no Jupyter server (jupyter_server or notebook) to start",
            "\(notANotebook.output)")

        let absent = "\(registry.address)/notebooks/absent:1"
        let missing = try await runner.run(params: ["image": absent, "tls-verify": "false"], workspaces: [:])
        #expect(!missing.succeeded)
        #expect(missing.results["FAILURE"]?.hasPrefix("\(absent) could not be read from its registry:") == true, "\(missing.output)")
        #expect(missing.results["IMAGE_DIGEST"] == nil)
    }
}
