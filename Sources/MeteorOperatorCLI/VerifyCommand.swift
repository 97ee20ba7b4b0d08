import ArgumentParser
import Foundation
import MeteorCore

/// `meteor-operator verify`: the operator's signature check, from the command line.
struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify an image's cosign signature in its registry, as the operator does before deploying it.")

    @Option(help: "PEM PKIX ECDSA P-256 public key (as cosign.pub).") var key: String
    @Flag(help: "Talk plain HTTP to the registry (loopback registries).") var insecureRegistry = false
    @Argument(help: "REGISTRY/REPOSITORY@sha256:DIGEST") var image: String

    struct Failure: Error, CustomStringConvertible { var description: String }

    func run() async throws {
        let pem: String
        do { pem = try String(contentsOfFile: key, encoding: .utf8) } catch { throw Failure(description: "cannot read key \(key)") }
        // A person checking an image they chose: no egress restriction (that guards what Meteors name).
        let registry = RegistryClient(insecure: insecureRegistry, egress: .unrestricted)
        do {
            let reference = try RegistryClient.Reference(parsing: image)
            let verifier = try SignatureVerifier(publicKeyPEM: pem)
            let verified = try await verifier.verify(image: reference, registry: registry)
            print("Verified \(reference.repositoryReference)@\(verified.digest)")
            print("  signature: \(reference.repositoryReference):\(SignatureVerifier.signatureTag(for: verified.digest)) (ECDSA P-256, SHA-256)")
            print("  key: \(verifier.fingerprint)")
            print("  claims: docker-manifest-digest \(verified.payload.dockerManifestDigest), docker-reference \(verified.payload.dockerReference)")
        } catch let f as SignatureFailure {
            throw Failure(description: "\(f.reason): \(f)")
        } catch {
            throw Failure(description: "\(error)")
        }
    }
}
