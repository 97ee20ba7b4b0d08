import Crypto
import Foundation
import KubeModels

/// Why a signature did not verify. Each case says precisely what was wrong, for the `ImagesVerified` condition.
public enum SignatureFailure: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidPublicKey(String)
    case missingSignature(String)
    case malformedSignature(String)
    case wrongKey
    case tamperedPayload(expected: String, actual: String)
    case malformedPayload(String)
    case digestMismatch(expected: String, signed: String)
    case identityMismatch(expected: String, signed: String)
    /// A valid signature whose annotations the caller does not accept (signed for another commit, say).
    case refusedClaims(reason: String, message: String)

    public var reason: String {
        switch self {
        case .invalidPublicKey: return "InvalidPublicKey"
        case .missingSignature: return "SignatureMissing"
        case .malformedSignature: return "SignatureMalformed"
        case .wrongKey: return "SignatureInvalid"
        case .tamperedPayload: return "PayloadTampered"
        case .malformedPayload: return "PayloadMalformed"
        case .digestMismatch: return "DigestMismatch"
        case .identityMismatch: return "IdentityMismatch"
        case .refusedClaims(let reason, _): return reason
        }
    }

    public var description: String {
        switch self {
        case .invalidPublicKey(let m): return "the verification key is not a PEM PKIX ECDSA P-256 public key: \(m)"
        case .missingSignature(let m): return "no signature: \(m)"
        case .malformedSignature(let m): return "the signature is malformed: \(m)"
        case .wrongKey: return "the signature does not verify with the configured key"
        case .tamperedPayload(let e, let a): return "the signature payload does not match its digest (manifest says \(e), blob is \(a))"
        case .malformedPayload(let m): return "the signature payload is not a cosign simple-signing payload: \(m)"
        case .digestMismatch(let e, let s): return "the signature is for \(s), not the built image \(e)"
        case .identityMismatch(let e, let s): return "the signature names \(s), not the repository \(e)"
        case .refusedClaims(_, let m): return m
        }
    }
}

/// The claims of a cosign "simple signing" payload.
public struct SimpleSigningPayload: Sendable, Equatable {
    public var dockerManifestDigest: String
    public var dockerReference: String
    public var type: String
    /// The signer's annotations (`cosign sign -a key=value`), the payload's `optional` object.
    public var annotations: [String: String]

    public static let cosignType = "cosign container image signature"
    /// The annotation the edge Pipeline signs the built commit under.
    public static let commitAnnotation = "meteor.zone/commit"

    public init(_ bytes: [UInt8]) throws {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch { throw SignatureFailure.malformedPayload("\(error)") }
        guard let digest = json[path: "critical", "image", "docker-manifest-digest"]?.stringValue else {
            throw SignatureFailure.malformedPayload("critical.image.docker-manifest-digest is missing")
        }
        guard let reference = json[path: "critical", "identity", "docker-reference"]?.stringValue else {
            throw SignatureFailure.malformedPayload("critical.identity.docker-reference is missing")
        }
        guard let type = json[path: "critical", "type"]?.stringValue, type == Self.cosignType else {
            throw SignatureFailure.malformedPayload("critical.type is not \"\(Self.cosignType)\"")
        }
        dockerManifestDigest = digest
        dockerReference = reference
        self.type = type
        annotations = (json["optional"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
    }
}

/// Verifies cosign-format signatures the way `cosign verify --key` does for the `.sig` tag layout: the signature
/// manifest's simple-signing layer is the payload, its `dev.cosignproject.cosign/signature` annotation is a
/// base64 ASN.1 DER ECDSA P-256 signature over the payload bytes (SHA-256), and the payload must name the built
/// digest and the image's repository.
public struct SignatureVerifier: Sendable {
    public static let simpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"

    public let key: P256.Signing.PublicKey

    public init(publicKeyPEM: String) throws {
        do {
            key = try P256.Signing.PublicKey(pemRepresentation: publicKeyPEM)
        } catch {
            throw SignatureFailure.invalidPublicKey("\(error)")
        }
    }

    /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo, shown in status so users can tell keys apart.
    public var fingerprint: String { Self.digest(Array(key.derRepresentation)) }

    public static func digest(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// The tag cosign stores a digest's signature under: `sha256-<hex>.sig`.
    public static func signatureTag(for digest: String) -> String {
        digest.replacingOccurrences(of: ":", with: "-") + ".sig"
    }

    /// Checks the signature over exactly these payload bytes (never re-serialised).
    public func verifySignature(payload: [UInt8], signatureBase64: String) throws {
        guard let der = Data(base64Encoded: signatureBase64.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw SignatureFailure.malformedSignature("not base64")
        }
        let signature: P256.Signing.ECDSASignature
        do { signature = try P256.Signing.ECDSASignature(derRepresentation: der) } catch {
            throw SignatureFailure.malformedSignature("not an ASN.1 DER ECDSA signature")
        }
        guard key.isValidSignature(signature, for: payload) else { throw SignatureFailure.wrongKey }
    }

    /// Checks the payload's claims against the image that was built.
    public static func checkClaims(_ payload: SimpleSigningPayload, digest: String, repository: String) throws {
        guard payload.dockerManifestDigest == digest else {
            throw SignatureFailure.digestMismatch(expected: digest, signed: payload.dockerManifestDigest)
        }
        guard repositoryPart(payload.dockerReference) == repositoryPart(repository) else {
            throw SignatureFailure.identityMismatch(expected: repositoryPart(repository), signed: payload.dockerReference)
        }
    }

    /// `registry:5000/ns/name:tag@sha256:…` → `registry:5000/ns/name`.
    public static func repositoryPart(_ reference: String) -> String {
        var r = reference
        if let at = r.firstIndex(of: "@") { r = String(r[..<at]) }
        if let colon = r.lastIndex(of: ":"), !r[colon...].contains("/") { r = String(r[..<colon]) }
        return r
    }

    /// What a verification established.
    public struct Verified: Sendable, Equatable {
        public var digest: String
        public var payload: SimpleSigningPayload
        public var keyFingerprint: String
    }

    /// Verifies from a signature manifest (the `.sig` tag's OCI manifest) and a way to fetch its blobs. Any one
    /// simple-signing layer that verifies, and whose payload `accept` does not refuse (throwing a SignatureFailure),
    /// is enough, as with cosign (which appends a layer per signing).
    public func verify(
        signatureManifest: JSONValue, digest: String, repository: String, accept: (SimpleSigningPayload) throws -> Void = { _ in },
        fetchBlob: (String) async throws -> [UInt8]
    ) async throws -> Verified {
        let layers = (signatureManifest["layers"]?.arrayValue ?? []).filter { $0["mediaType"]?.stringValue == Self.simpleSigningMediaType }
        guard !layers.isEmpty else { throw SignatureFailure.missingSignature("the signature manifest has no simple-signing layer") }
        var lastFailure: SignatureFailure = .missingSignature("no layer carries \(Self.signatureAnnotation)")
        for layer in layers {
            guard let signature = layer[path: "annotations", Self.signatureAnnotation]?.stringValue else { continue }
            guard let layerDigest = layer["digest"]?.stringValue else {
                lastFailure = .malformedPayload("layer without digest")
                continue
            }
            let blob = try await fetchBlob(layerDigest)
            let actual = Self.digest(blob)
            guard actual == layerDigest else {
                lastFailure = .tamperedPayload(expected: layerDigest, actual: actual)
                continue
            }
            do {
                try verifySignature(payload: blob, signatureBase64: signature)
                let payload = try SimpleSigningPayload(blob)
                try Self.checkClaims(payload, digest: digest, repository: repository)
                try accept(payload)
                return Verified(digest: digest, payload: payload, keyFingerprint: fingerprint)
            } catch let f as SignatureFailure {
                lastFailure = f
            }
        }
        throw lastFailure
    }
}
