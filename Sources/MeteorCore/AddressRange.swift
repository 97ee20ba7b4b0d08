#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 network in CIDR notation (`10.96.0.0/12`, `fd00::/8`), or one address (`127.0.0.1`, a /32).
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are judged as the IPv4 address they carry, so a check cannot be
/// passed by writing an address the other way.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    /// The network's bytes: 4 for IPv4, 16 for IPv6.
    public let network: [UInt8]
    public let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = Self.bytes(of: String(parts[0])) else { return nil }
        let bits = bytes.count * 8
        var length = bits
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bits).contains(n), parts[1].allSatisfy(\.isNumber) else { return nil }
            length = n
        }
        network = Self.masked(bytes, length)
        prefixLength = length
    }

    public func contains(_ address: [UInt8]) -> Bool {
        address.count == network.count && Self.masked(address, prefixLength) == network
    }

    /// Whether the textual address `ip` is in the range.
    public func contains(_ ip: String) -> Bool {
        Self.bytes(of: ip).map(contains) ?? false
    }

    public var description: String {
        "\(Self.text(network))/\(prefixLength)"
    }

    static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { i, b in
            let keep = max(0, min(8, length - i * 8))
            return keep == 8 ? b : b & ~(UInt8(0xFF) >> keep)
        }
    }

    /// The bytes of an IPv4 or IPv6 address in text (4 or 16; an IPv4-mapped IPv6 address gives its 4); nil for
    /// anything else, host names included.
    public static func bytes(of ip: String) -> [UInt8]? {
        var trimmed = ip
        if trimmed.hasPrefix("["), trimmed.hasSuffix("]") { trimmed = String(trimmed.dropFirst().dropLast()) }
        if let zone = trimmed.firstIndex(of: "%") { trimmed = String(trimmed[..<zone]) }
        var v4 = in_addr()
        if inet_pton(AF_INET, trimmed, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, trimmed, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12...]) }
        return bytes
    }

    static func text(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var v6 = in6_addr()
        withUnsafeMutableBytes(of: &v6) { $0.copyBytes(from: bytes) }
        return inet_ntop(AF_INET6, &v6, &buffer, socklen_t(buffer.count)) != nil ? String(cString: buffer) : "?"
    }
}
