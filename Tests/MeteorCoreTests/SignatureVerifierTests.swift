import Foundation
import KubeModels
import KubeTestSupport
import MeteorCore
import Testing

@Suite struct SignatureVerifierTests {
    static let vectors = TestCluster.sharedDirectory.appendingPathComponent("cosign")

    static func text(_ path: String) throws -> String { try String(contentsOf: vectors.appendingPathComponent(path), encoding: .utf8) }
    static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: vectors.appendingPathComponent(path))) }

    // containers/image 5.40 (skopeo) wrote this signature to a real registry, in cosign's .sig layout.
    static let imageDigest = "sha256:f3a5f18169023c3964f2e53cfff8a5a2cfbd771fe84830a9d5e825b4b2838d24"
    static let repository = "127.0.0.1:5000/meteor/donkey-car"

    func verify(
        key: String, manifest: JSONValue? = nil, digest: String = imageDigest, repository: String = repository, blobs: [String: [UInt8]] = [:]
    ) async throws -> SignatureVerifier.Verified {
        let verifier = try SignatureVerifier(publicKeyPEM: try Self.text(key))
        let m = try manifest ?? JSONValue.parse(try Self.bytes("containers-image-5.40/signature-manifest.json"))
        return try await verifier.verify(signatureManifest: m, digest: digest, repository: repository) { d in
            if let b = blobs[d] { return b }
            return try Self.bytes("containers-image-5.40/blobs/" + d.replacingOccurrences(of: "sha256:", with: ""))
        }
    }

    @Test func registryVectorVerifiesExactlyAsStored() async throws {
        #expect(SignatureVerifier.digest(try Self.bytes("containers-image-5.40/image-manifest.json")) == Self.imageDigest)
        #expect(
            SignatureVerifier.signatureTag(for: Self.imageDigest) == "sha256-f3a5f18169023c3964f2e53cfff8a5a2cfbd771fe84830a9d5e825b4b2838d24.sig")
        let verified = try await verify(key: "containers-image-5.40/cosign.pub")
        #expect(verified.payload.dockerReference == "127.0.0.1:5000/meteor/donkey-car:v1")
        #expect(verified.keyFingerprint.hasPrefix("sha256:") && verified.keyFingerprint.count == 71)
    }

    @Test func everyWayItCanGoWrongHasItsOwnReason() async throws {
        await #expect(throws: SignatureFailure.wrongKey) { try await verify(key: "containers-image-5.40/other.pub") }
        let other = "sha256:" + String(repeating: "0", count: 64)
        await #expect(throws: SignatureFailure.digestMismatch(expected: other, signed: Self.imageDigest)) {
            try await verify(key: "containers-image-5.40/cosign.pub", digest: other)
        }
        await #expect(
            throws: SignatureFailure.identityMismatch(expected: "127.0.0.1:5000/meteor/other", signed: "127.0.0.1:5000/meteor/donkey-car:v1")
        ) {
            try await verify(key: "containers-image-5.40/cosign.pub", repository: "127.0.0.1:5000/meteor/other:v1")
        }
        // A payload blob changed after signing (the registry serves different bytes under the layer's digest).
        let manifest = try JSONValue.parse(try Self.bytes("containers-image-5.40/signature-manifest.json"))
        let layerDigest = manifest["layers"]!.arrayValue![0]["digest"]!.stringValue!
        var tampered = try Self.bytes("containers-image-5.40/blobs/" + layerDigest.replacingOccurrences(of: "sha256:", with: ""))
        tampered[tampered.count - 5] ^= 1
        await #expect(throws: SignatureFailure.tamperedPayload(expected: layerDigest, actual: SignatureVerifier.digest(tampered))) {
            try await verify(key: "containers-image-5.40/cosign.pub", blobs: [layerDigest: tampered])
        }
        var unsigned = manifest
        var layers = unsigned["layers"]!.arrayValue!
        layers[0]["annotations"] = .object([:])
        unsigned["layers"] = .array(layers)
        await #expect { try await verify(key: "containers-image-5.40/cosign.pub", manifest: unsigned) } throws: {
            ($0 as? SignatureFailure)?.reason == "SignatureMissing"
        }
        await #expect { try await verify(key: "containers-image-5.40/cosign.pub", manifest: ["layers": []]) } throws: {
            ($0 as? SignatureFailure)?.reason == "SignatureMissing"
        }
        #expect(throws: SignatureFailure.self) { try SignatureVerifier(publicKeyPEM: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----") }
    }

    @Test func cosignsOwnSignatureFromContainersImageFixtures() throws {
        let payload = try Self.bytes("cosign-fixtures-containers-image/derived/payload.json")
        let signature = try Self.text("cosign-fixtures-containers-image/derived/signature.b64")
        try SignatureVerifier(publicKeyPEM: try Self.text("cosign-fixtures-containers-image/cosign.pub")).verifySignature(
            payload: payload, signatureBase64: signature)
        #expect(throws: SignatureFailure.wrongKey) {
            try SignatureVerifier(publicKeyPEM: try Self.text("cosign-fixtures-containers-image/cosign2.pub")).verifySignature(
                payload: payload, signatureBase64: signature)
        }
        let claims = try SimpleSigningPayload(payload)
        let validDigest = SignatureVerifier.digest(try Self.bytes("cosign-fixtures-containers-image/dir-img-cosign-valid/manifest.json"))
        try SignatureVerifier.checkClaims(claims, digest: validDigest, repository: "192.168.64.2:5000/cosign-signed-single-sample")
        let modified = SignatureVerifier.digest(try Self.bytes("cosign-fixtures-containers-image/dir-img-cosign-modified-manifest/manifest.json"))
        #expect(throws: SignatureFailure.digestMismatch(expected: modified, signed: validDigest)) {
            try SignatureVerifier.checkClaims(claims, digest: modified, repository: "192.168.64.2:5000/cosign-signed-single-sample")
        }
        // containers/image's envelope: "\0sigstore-json\n" then JSON with the payload and the signature annotation.
        let envelope = try Self.bytes("cosign-fixtures-containers-image/unknown-cosign-key.signature")
        let json = try JSONValue.parse(envelope.drop { $0 != UInt8(ascii: "{") })
        let unknownPayload = Array(Data(base64Encoded: json["payload"]!.stringValue!)!)
        let unknownSignature = json[path: "annotations", SignatureVerifier.signatureAnnotation]!.stringValue!
        for key in ["cosign.pub", "cosign2.pub"] {
            #expect(throws: SignatureFailure.wrongKey) {
                try SignatureVerifier(publicKeyPEM: try Self.text("cosign-fixtures-containers-image/" + key)).verifySignature(
                    payload: unknownPayload, signatureBase64: unknownSignature)
            }
        }
    }

    @Test func sigstoreRsVector() throws {
        let payload = try Self.bytes("sigstore-rs/payload.json")
        let signature = try Self.text("sigstore-rs/signature.b64")
        let verifier = try SignatureVerifier(publicKeyPEM: try Self.text("sigstore-rs/cosign.pub"))
        try verifier.verifySignature(payload: payload, signatureBase64: signature)
        #expect(throws: SignatureFailure.wrongKey) {
            try SignatureVerifier(publicKeyPEM: try Self.text("sigstore-rs/wrong-key.pub")).verifySignature(
                payload: payload, signatureBase64: signature)
        }
        let altered = Array(String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "busybox", with: "busyb0x").utf8)
        #expect(throws: SignatureFailure.wrongKey) { try verifier.verifySignature(payload: altered, signatureBase64: signature) }
        #expect(throws: SignatureFailure.malformedSignature("not base64")) { try verifier.verifySignature(payload: payload, signatureBase64: "%%%") }
    }

    @Test func repositoryPartStripsTagsAndDigests() {
        #expect(SignatureVerifier.repositoryPart("127.0.0.1:5000/meteor/car:v1") == "127.0.0.1:5000/meteor/car")
        #expect(SignatureVerifier.repositoryPart("127.0.0.1:5000/meteor/car@sha256:abc") == "127.0.0.1:5000/meteor/car")
        #expect(SignatureVerifier.repositoryPart("127.0.0.1:5000/meteor/car") == "127.0.0.1:5000/meteor/car")
        #expect(SignatureVerifier.repositoryPart("quay.io/org/img:tag@sha256:abc") == "quay.io/org/img")
    }
}
