import Crypto
import Foundation
import KubeModels

/// Writes signatures in cosign's registry layout (what `cosign sign --key` stores): a simple-signing JSON payload,
/// signed with ECDSA P-256/SHA-256, as the one layer of an OCI manifest tagged `sha256-<hex>.sig` in the image's
/// repository, the base64 DER signature in the layer's `dev.cosignproject.cosign/signature` annotation. The
/// sandbox's registry and the tests sign with it; the operator only ever verifies.
public struct CosignSigner: Sendable {
    public let key: P256.Signing.PrivateKey

    public init(key: P256.Signing.PrivateKey = P256.Signing.PrivateKey()) { self.key = key }

    public var publicKeyPEM: String { key.publicKey.pemRepresentation }

    /// The simple-signing payload for `digest`, claiming `dockerReference` (repository[:tag]).
    public static func payload(digest: String, dockerReference: String, annotations: [String: String] = [:]) -> [UInt8] {
        let payload: JSONValue = [
            "critical": [
                "identity": ["docker-reference": .string(dockerReference)],
                "image": ["docker-manifest-digest": .string(digest)],
                "type": .string(SimpleSigningPayload.cosignType),
            ],
            "optional": annotations.isEmpty ? .null : .object(annotations.mapValues(JSONValue.string)),
        ]
        return payload.serialized()
    }

    public func signature(for payload: [UInt8]) throws -> String {
        try key.signature(for: payload).derRepresentation.base64EncodedString()
    }

    /// The blobs and the manifest of one signature, ready to push.
    public struct SignatureArtifact: Sendable {
        public var payload: [UInt8]
        public var config: [UInt8]
        public var manifest: [UInt8]
        public var tag: String
    }

    /// `annotations` go in the payload's `optional` object, as `cosign sign -a key=value` puts them.
    public func sign(digest: String, dockerReference: String, annotations: [String: String] = [:]) throws -> SignatureArtifact {
        let payload = Self.payload(digest: digest, dockerReference: dockerReference, annotations: annotations)
        return Self.artifact(payload: payload, signature: try signature(for: payload), digest: digest)
    }

    /// The artifact for a given payload and signature (tests use it to store tampered combinations).
    public static func artifact(payload: [UInt8], signature: String, digest: String) -> SignatureArtifact {
        let payloadDigest = SignatureVerifier.digest(payload)
        let config: JSONValue = [
            "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [["created": "0001-01-01T00:00:00Z"]],
            "os": "", "rootfs": ["type": "layers", "diff_ids": [.string(payloadDigest)]], "config": .object([:]),
        ]
        let configBytes = config.serialized()
        let manifest: JSONValue = [
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": [
                "mediaType": "application/vnd.oci.image.config.v1+json", "size": .int(Int64(configBytes.count)),
                "digest": .string(SignatureVerifier.digest(configBytes)),
            ],
            "layers": [
                [
                    "mediaType": .string(SignatureVerifier.simpleSigningMediaType),
                    "size": .int(Int64(payload.count)),
                    "digest": .string(payloadDigest),
                    "annotations": .object([SignatureVerifier.signatureAnnotation: .string(signature)]),
                ]
            ],
        ]
        return SignatureArtifact(
            payload: payload, config: configBytes, manifest: manifest.serialized(), tag: SignatureVerifier.signatureTag(for: digest))
    }
}

/// Somewhere blobs and manifests can be pushed: a registry over HTTP (`RegistryClient`) or the sandbox's
/// in-memory registry.
public protocol OCIPushTarget: Sendable {
    func pushBlob(_ repository: RegistryClient.Reference, _ bytes: [UInt8]) async throws -> String
    func pushManifest(_ repository: RegistryClient.Reference, reference: String, _ bytes: [UInt8], mediaType: String) async throws
}

extension RegistryClient: OCIPushTarget {}

extension OCIPushTarget {
    /// Pushes a signature artifact next to the image it signs.
    public func push(_ signature: CosignSigner.SignatureArtifact, to repository: RegistryClient.Reference) async throws {
        _ = try await pushBlob(repository, signature.config)
        _ = try await pushBlob(repository, signature.payload)
        try await pushManifest(repository, reference: signature.tag, signature.manifest, mediaType: "application/vnd.oci.image.manifest.v1+json")
    }

    /// Pushes a minimal single-layer OCI image for `platform` (`os/arch`) whose layer holds `content`; returns its
    /// manifest digest. For tests and the sandbox, where nothing real is built.
    public func pushImage(_ repository: RegistryClient.Reference, tag: String, platform: String, content: String) async throws -> String {
        let parts = platform.split(separator: "/").map(String.init)
        let layer = Array(content.utf8)
        let layerDigest = try await pushBlob(repository, layer)
        let config: JSONValue = [
            "architecture": .string(parts.count > 1 ? parts[1] : "amd64"), "os": .string(parts.first ?? "linux"),
            "rootfs": ["type": "layers", "diff_ids": [.string(layerDigest)]], "config": .object([:]),
        ]
        let configBytes = config.serialized()
        let configDigest = try await pushBlob(repository, configBytes)
        let manifest: JSONValue = [
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": [
                "mediaType": "application/vnd.oci.image.config.v1+json", "size": .int(Int64(configBytes.count)), "digest": .string(configDigest),
            ],
            "layers": [["mediaType": "application/vnd.oci.image.layer.v1.tar", "size": .int(Int64(layer.count)), "digest": .string(layerDigest)]],
        ]
        let bytes = manifest.serialized()
        try await pushManifest(repository, reference: tag, bytes, mediaType: "application/vnd.oci.image.manifest.v1+json")
        return SignatureVerifier.digest(bytes)
    }
}
