import Crypto
import Foundation
import KubeModels
import KubeTestSupport
import MeteorCore
import Testing

@Suite(.serialized) struct RegistryVerificationTests {
    static let vector = TestCluster.sharedDirectory.appendingPathComponent("cosign/containers-image-5.40")
    static func bytes(_ p: String) throws -> [UInt8] { Array(try Data(contentsOf: vector.appendingPathComponent(p))) }
    static func text(_ p: String) throws -> String { try String(contentsOf: vector.appendingPathComponent(p), encoding: .utf8) }

    /// A signature manifest exactly as cosign writes it: an OCI manifest whose one layer is the simple-signing
    /// payload, annotated with the base64 DER signature, stored under the `sha256-<hex>.sig` tag.
    static func signatureManifest(payload: [UInt8], signature: String, configDigest: String, configSize: Int) -> [UInt8] {
        let m: JSONValue = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": .string(configDigest), "size": .int(Int64(configSize))],
            "layers": [
                [
                    "mediaType": .string(SignatureVerifier.simpleSigningMediaType), "digest": .string(SignatureVerifier.digest(payload)),
                    "size": .int(Int64(payload.count)), "annotations": .object([SignatureVerifier.signatureAnnotation: .string(signature)]),
                ]
            ],
        ]
        return m.serialized()
    }

    @Test(
        .enabled(
            if: LocalRegistry.isInstalled || ProcessInfo.processInfo.environment["CI"] != nil,
            "docker-registry is not installed (hack/test installs it)"))
    func verifiesAgainstARealRegistry() async throws {
        #expect(LocalRegistry.isInstalled, "CI must install docker-registry")
        let registry = try await LocalRegistry(port: 5000)
        defer { registry.stop() }
        let client = RegistryClient(insecure: true, egress: .unrestricted)
        let repo = try RegistryClient.Reference(parsing: "127.0.0.1:5000/meteor/donkey-car")

        // Seed the registry with the independent vector, byte for byte.
        for blob in try FileManager.default.contentsOfDirectory(atPath: Self.vector.appendingPathComponent("blobs").path) {
            let pushed = try await client.pushBlob(repo, try Self.bytes("blobs/" + blob))
            #expect(pushed == "sha256:" + blob)
        }
        let imageManifest = try Self.bytes("image-manifest.json")
        let imageDigest = SignatureVerifier.digest(imageManifest)
        try await client.pushManifest(repo, reference: "v1", imageManifest)
        try await client.pushManifest(repo, reference: SignatureVerifier.signatureTag(for: imageDigest), try Self.bytes("signature-manifest.json"))
        #expect(try await client.manifest(repo, reference: "v1").digest == imageDigest)

        let signed = try RegistryClient.Reference(parsing: "127.0.0.1:5000/meteor/donkey-car@\(imageDigest)")
        let good = try SignatureVerifier(publicKeyPEM: try Self.text("cosign.pub"))
        let verified = try await good.verify(image: signed, registry: client)
        #expect(verified.payload.dockerManifestDigest == imageDigest)
        await #expect(throws: SignatureFailure.wrongKey) {
            try await SignatureVerifier(publicKeyPEM: try Self.text("other.pub")).verify(image: signed, registry: client)
        }

        // An unsigned image: a different manifest with no .sig tag.
        var unsignedManifest = try JSONValue.parse(imageManifest)
        unsignedManifest["annotations"] = ["org.opencontainers.image.title": "unsigned"]
        let unsignedBytes = unsignedManifest.serialized()
        let unsignedDigest = SignatureVerifier.digest(unsignedBytes)
        try await client.pushManifest(repo, reference: "unsigned", unsignedBytes)
        let unsigned = try RegistryClient.Reference(parsing: "127.0.0.1:5000/meteor/donkey-car@\(unsignedDigest)")
        await #expect { try await good.verify(image: unsigned, registry: client) } throws: { ($0 as? SignatureFailure)?.reason == "SignatureMissing" }

        // A tampered payload: the stored signature, over a payload re-pointed at the unsigned image.
        let sigManifest = try JSONValue.parse(try Self.bytes("signature-manifest.json"))
        let layer = sigManifest["layers"]!.arrayValue![0]
        let originalPayload = try Self.bytes("blobs/" + layer["digest"]!.stringValue!.replacingOccurrences(of: "sha256:", with: ""))
        let tamperedPayload = Array(String(decoding: originalPayload, as: UTF8.self).replacingOccurrences(of: imageDigest, with: unsignedDigest).utf8)
        _ = try await client.pushBlob(repo, tamperedPayload)
        let config = sigManifest["config"]!
        try await client.pushManifest(
            repo, reference: SignatureVerifier.signatureTag(for: unsignedDigest),
            Self.signatureManifest(
                payload: tamperedPayload, signature: layer[path: "annotations", SignatureVerifier.signatureAnnotation]!.stringValue!,
                configDigest: config["digest"]!.stringValue!, configSize: Int(config["size"]!.intValue!)))
        await #expect(throws: SignatureFailure.wrongKey) { try await good.verify(image: unsigned, registry: client) }

        // Signed here with another key, in cosign's layout: verifies with that key only.
        let otherKey = P256.Signing.PrivateKey()
        var anotherManifest = try JSONValue.parse(imageManifest)
        anotherManifest["annotations"] = ["org.opencontainers.image.title": "signed-elsewhere"]
        let anotherBytes = anotherManifest.serialized()
        let anotherDigest = SignatureVerifier.digest(anotherBytes)
        try await client.pushManifest(repo, reference: "elsewhere", anotherBytes)
        let payload: JSONValue = [
            "critical": [
                "identity": ["docker-reference": "127.0.0.1:5000/meteor/donkey-car:elsewhere"],
                "image": ["docker-manifest-digest": .string(anotherDigest)], "type": "cosign container image signature",
            ], "optional": .null,
        ]
        let payloadBytes = payload.serialized()
        _ = try await client.pushBlob(repo, payloadBytes)
        let signature = try otherKey.signature(for: payloadBytes).derRepresentation.base64EncodedString()
        try await client.pushManifest(
            repo, reference: SignatureVerifier.signatureTag(for: anotherDigest),
            Self.signatureManifest(
                payload: payloadBytes, signature: signature, configDigest: config["digest"]!.stringValue!, configSize: Int(config["size"]!.intValue!))
        )
        let another = try RegistryClient.Reference(parsing: "127.0.0.1:5000/meteor/donkey-car@\(anotherDigest)")
        await #expect(throws: SignatureFailure.wrongKey) { try await good.verify(image: another, registry: client) }
        _ = try await SignatureVerifier(publicKeyPEM: otherKey.publicKey.pemRepresentation).verify(image: another, registry: client)

        // The command line does the same, with a one-line reason on failure.
        let ok = try await runProcess(
            operatorBinary,
            [
                "verify", "--key", Self.vector.appendingPathComponent("cosign.pub").path, "--insecure-registry",
                "127.0.0.1:5000/meteor/donkey-car@\(imageDigest)",
            ])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("Verified 127.0.0.1:5000/meteor/donkey-car@\(imageDigest)"))
        let bad = try await runProcess(
            operatorBinary,
            [
                "verify", "--key", Self.vector.appendingPathComponent("other.pub").path, "--insecure-registry",
                "127.0.0.1:5000/meteor/donkey-car@\(imageDigest)",
            ])
        #expect(bad.status != 0)
        #expect(bad.output.contains("SignatureInvalid: the signature does not verify with the configured key"), "\(bad.output)")
        let missing = try await runProcess(
            operatorBinary,
            [
                "verify", "--key", Self.vector.appendingPathComponent("cosign.pub").path, "--insecure-registry",
                "127.0.0.1:5000/meteor/donkey-car@\(unsignedDigest.replacingOccurrences(of: "a", with: "b"))",
            ])
        #expect(missing.status != 0)
    }

    @Test func referencesParseAndDockerConfigCredentialsDecode() throws {
        let r = try RegistryClient.Reference(parsing: "quay.io/org/app:v1@sha256:" + String(repeating: "a", count: 64))
        #expect(r.registry == "quay.io" && r.repository == "org/app" && r.tag == "v1")
        #expect(throws: RegistryClient.RegistryError.self) { try RegistryClient.Reference(parsing: "app:v1") }
        #expect(throws: RegistryClient.RegistryError.self) { try RegistryClient.Reference(parsing: "quay.io/org/app@sha256:short") }
        let creds = RegistryClient.credentials(
            dockerConfigJSON: Array(
                #"{"auths":{"https://quay.io":{"auth":"\#(Data("bot:s3cret".utf8).base64EncodedString())"},"reg.local:5000":{"username":"u","password":"p"}}}"#
                    .utf8))
        #expect(creds["quay.io"]?.username == "bot" && creds["quay.io"]?.password == "s3cret")
        #expect(creds["reg.local:5000"]?.password == "p")
    }
}
