import ArgumentParser
import MeteorCore
import Foundation
import KubeAPIServer

@main
struct MeteorOperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meteor-operator",
        abstract: "Turns Meteor resources (meteor.zone/v1alpha1) into JupyterBook sites, JupyterHub images and edge deployments.",
        subcommands: [SandboxCommand.self, RunCommand.self, VerifyCommand.self, VersionCommand.self, APIServerCommand.self])
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the operator version.")

    func run() throws {
        print("meteor-operator \(BuildInfo.version)")
    }
}

/// Serves the embedded Kubernetes-compatible API server on its own, for poking at it with kubectl.
struct APIServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apiserver",
        abstract: "Run the embedded Kubernetes-compatible API server on loopback (development and tests).")

    @Option(help: "Port to listen on (0 picks a free one).") var port = 0
    @Flag(help: "Serve HTTPS with a generated self-signed certificate.") var tls = false
    @Option(help: "Require this bearer token.") var token: String?
    @Option(help: "Write a kubeconfig for the server here.") var kubeconfigOut = "./apiserver.kubeconfig"
    @Option(help: "CRD YAML files to install at start.") var crd: [String] = []

    func run() async throws {
        let server = try EmbeddedAPIServer(configuration: .init(port: port, tls: tls, token: token))
        for path in crd {
            do {
                try server.installCRDs(yaml: try String(contentsOfFile: path, encoding: .utf8))
            } catch {
                throw ValidationError("cannot install CRDs from \(path): \(error)")
            }
        }
        try await server.start()
        try server.kubeconfig().write(toFile: kubeconfigOut, atomically: true, encoding: .utf8)
        let banner =
            "embedded API server listening on \(server.url)\nexport KUBECONFIG=\(URL(fileURLWithPath: kubeconfigOut).standardizedFileURL.path)\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        let (signals, continuation) = AsyncStream<Void>.makeStream()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { continuation.yield() }
            source.resume()
            SignalSources.keep(source)
        }
        for await _ in signals { break }
        await server.stop()
    }
}

enum SignalSources {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []
    static func keep(_ s: any DispatchSourceSignal) { sources.append(s) }
}
