import Crypto
import Foundation
import SwiftASN1
import X509

/// A self-signed serving certificate (CA and leaf in one, so clients trust it as their CA): the embedded API
/// server's on loopback, the metrics endpoint's when no certificate is mounted (as controller-runtime does).
public struct SelfSignedCertificate: Sendable {
    public let certificatePEM: String
    public let privateKeyPEM: String

    public init(
        commonName: String = "meteor-embedded-apiserver", hosts: [String] = ["localhost"],
        ips: [[UInt8]] = [[127, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
    ) throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        var sans: [GeneralName] = hosts.map { .dnsName($0) }
        sans += ips.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(sans)
        }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(365 * 24 * 3600),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: .init(key))
        certificatePEM = try cert.serializeAsPEM().pemString
        privateKeyPEM = key.pemRepresentation
    }
}
