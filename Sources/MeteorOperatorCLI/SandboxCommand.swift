import ArgumentParser
import Foundation
import KubeRuntime
import Logging
import MeteorSandbox

/// `meteor-operator sandbox`: the operator's main job on an embedded cluster, with simulated Tekton and Argo CD.
struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run the operator on an embedded Kubernetes-compatible API server with simulated Tekton, Argo CD, registry and git.",
        discussion: """
            The simulators are stand-ins, not the real controllers: PipelineRuns succeed after --tekton-seconds with \
            realistic results (annotate a Meteor sandbox.meteor.zone/fail=jupyterbook to fail a pipeline, \
            sandbox.meteor.zone/signature=invalid to sign edge images with a stranger's key), Applications sync \
            after --argo-seconds, and edge images are pushed to an in-memory registry and signed with a sandbox key.
            """)

    @Option(help: "Port for the embedded API server (0 picks a free one).") var port = 0
    @Option(help: "Write the sandbox's kubeconfig here.") var kubeconfigOut = "./sandbox.kubeconfig"
    @Option(help: "Namespace for samples and the signing key Secret.") var namespace = "default"
    @Flag(help: "Create the Meteors in config/samples/ at start.") var applySamples = false
    @Flag(help: "Print log lines instead of the live table.") var noTUI = false
    @Option(help: "Seconds a simulated PipelineRun runs.") var tektonSeconds: Double = 4
    @Option(help: "Seconds a simulated Argo CD sync takes.") var argoSeconds: Double = 3
    @Flag(help: "Do not simulate Tekton (PipelineRuns stay pending).") var noTekton = false
    @Flag(help: "Do not simulate Argo CD (Applications stay unsynced).") var noArgo = false
    @Flag(help: "Do not serve the registry and git stand-ins (edge verification and releases then fail).") var noRemotes = false
    @Option(help: "Release tags the git stand-in advertises at start.") var tag: [String] = ["v1.0.0"]
    @Option(help: "The repository checkout with crds/ and config/samples/ (default: found from the working directory).") var repository: String?
    @Option(help: "Directory with upstream Tekton and Argo CD CRDs (default: ../shared/crds next to the checkout, if present).") var upstreamCRDs:
        String?
    @Option(help: "HOST:PORT for the operator's /metrics.") var metricsBindAddress = "127.0.0.1:0"
    @Option(help: "HOST:PORT for the Meteor Shower page (0 picks a free port).") var showerBindAddress = "127.0.0.1:0"
    @Flag(help: "Do not serve the Meteor Shower page.") var noShower = false
    @Option(help: "Log format: json or text.") var logFormat = "text"

    func validate() throws {
        if tektonSeconds < 0 || argoSeconds < 0 { throw ValidationError("--tekton-seconds and --argo-seconds must not be negative") }
        if LogFormat(rawValue: logFormat) == nil { throw ValidationError("--log-format must be json or text") }
    }

    func run() async throws {
        LogFormat(rawValue: logFormat)!.bootstrap()
        var logger = Logger(label: "meteor-sandbox")
        let tui = !noTUI && isatty(STDOUT_FILENO) == 1
        // The live table owns the terminal: only warnings reach it from the log.
        logger.logLevel = tui ? .warning : .info
        guard let checkout = repository.map({ URL(fileURLWithPath: $0) }) ?? Sandbox.locateRepository() else {
            throw ValidationError("cannot find the meteor-operator checkout (crds/meteor.zone_meteors.yaml); run from it or pass --repository")
        }
        var options = SandboxOptions(repository: checkout)
        options.port = port
        options.kubeconfigOut = kubeconfigOut
        options.namespace = namespace
        options.applySamples = applySamples
        options.tui = tui
        options.tektonDuration = .milliseconds(Int64(tektonSeconds * 1000))
        options.argoDuration = .milliseconds(Int64(argoSeconds * 1000))
        options.tekton = !noTekton
        options.argo = !noArgo
        options.remotes = !noRemotes
        options.releaseTags = tag
        options.metricsBindAddress = metricsBindAddress
        options.showerBindAddress = noShower ? nil : showerBindAddress
        options.upstreamCRDs = upstreamCRDs.map { URL(fileURLWithPath: $0) } ?? Sandbox.defaultUpstreamCRDs(repository: checkout)
        do {
            try await Sandbox.run(options, logger: logger) { text in
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        } catch let failure as Sandbox.Failure {
            throw ValidationError(failure.description)
        }
        FileHandle.standardOutput.write(Data("sandbox stopped\n".utf8))
    }
}
