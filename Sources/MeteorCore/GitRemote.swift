import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Reads a git remote's refs over the smart HTTP protocol (`GET <repo>/info/refs?service=git-upload-pack`), as
/// `git ls-remote` does, with no git binary: the advertisement is a sequence of pkt-lines.
public struct GitRemote: Sendable {
    public struct Ref: Sendable, Equatable {
        public var name: String
        /// The object the ref names; for an annotated tag, the commit it peels to.
        public var commit: String
        public init(name: String, commit: String) {
            self.name = name
            self.commit = commit
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var message: String
        public var description: String { message }
    }

    /// For a private repository: a `kubernetes.io/basic-auth` Secret's username and password (for GitHub and
    /// GitLab, a token as the password).
    public typealias Credentials = BasicCredentials

    public let url: String
    let egress: EgressPolicy
    let credentials: Credentials?

    /// `egress` decides where the listing may connect (the URL is a Meteor's: by default nowhere inside the cluster).
    public init(url: String, credentials: Credentials? = nil, egress: EgressPolicy = EgressPolicy()) {
        self.url = url
        self.egress = egress
        self.credentials = credentials
    }

    /// Every ref the remote advertises, annotated tags peeled to their commits.
    public func refs() async throws -> [Ref] {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        var request = HTTPClientRequest(url: base + "/info/refs?service=git-upload-pack")
        request.headers.add(name: "User-Agent", value: "git/2.39 meteor-operator")
        if let credentials {
            request.headers.add(name: "Authorization", value: credentials.authorization)
        }
        let response: RemoteResponse
        do {
            response = try await egress.fetch(request)
        } catch let refused as EgressPolicy.Refused {
            throw Failure(message: "will not list the refs of \(url): \(refused.message)")
        } catch {
            throw Failure(message: "cannot reach \(url): \(error)")
        }
        if response.status == 401 || response.status == 403 {
            throw Failure(
                message:
                    "\(url) refused to list its refs (\(response.status)): \(credentials == nil ? "a private repository needs spec.gitSecretRef" : "the credentials in spec.gitSecretRef were not accepted")"
            )
        }
        guard response.status == 200 else {
            throw Failure(message: "\(url) answered \(response.status) \(HTTPResponseStatus(statusCode: response.status).reasonPhrase) to info/refs")
        }
        guard response.headers.first(name: "Content-Type") == "application/x-git-upload-pack-advertisement" else {
            throw Failure(message: "\(url) does not speak git's smart HTTP protocol")
        }
        return try Self.parseAdvertisement(response.body)
    }

    /// Parses a v0 upload-pack advertisement: `# service=` header, flush, `<sha> <ref>\0<caps>`, `<sha> <ref>`…, flush.
    public static func parseAdvertisement(_ bytes: [UInt8]) throws -> [Ref] {
        var lines: [String?] = []  // nil = flush packet
        var i = 0
        while i < bytes.count {
            guard i + 4 <= bytes.count, let length = Int(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else {
                throw Failure(message: "malformed pkt-line at byte \(i)")
            }
            if length == 0 { lines.append(nil); i += 4; continue }
            guard length >= 4, i + length <= bytes.count else {
                throw Failure(message: "pkt-line of length \(length) overruns the response at byte \(i)")
            }
            var payload = Array(bytes[i + 4..<i + length])
            if payload.last == UInt8(ascii: "\n") { payload.removeLast() }
            if let nul = payload.firstIndex(of: 0) { payload = Array(payload[..<nul]) }
            lines.append(String(decoding: payload, as: UTF8.self))
            i += length
        }
        var direct: [String: String] = [:]
        var peeled: [String: String] = [:]
        var order: [String] = []
        for case let line? in lines where !line.hasPrefix("#") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard parts.count == 2, parts[0].count == 40 || parts[0].count == 64, parts[0].allSatisfy(\.isHexDigit) else {
                if line.hasPrefix("ERR ") { throw Failure(message: "remote error: \(line.dropFirst(4))") }
                continue
            }
            if parts[1].hasSuffix("^{}") {
                peeled[String(parts[1].dropLast(3))] = parts[0]
            } else {
                if direct[parts[1]] == nil { order.append(parts[1]) }
                direct[parts[1]] = parts[0]
            }
        }
        return order.map { Ref(name: $0, commit: peeled[$0] ?? direct[$0]!) }
    }
}

/// Picks the release to deliver from a remote's tags.
public enum ReleaseSelection {
    /// Shell-glob match of a tag name (without `refs/tags/`), `*` crossing `/` as in `git tag -l`.
    public static func matches(_ tag: String, pattern: String) -> Bool {
        fnmatch(pattern, tag, 0) == 0
    }

    /// The newest tag matching `pattern`, by version order.
    public static func newest(_ refs: [GitRemote.Ref], pattern: String) -> (tag: String, commit: String)? {
        let tags = refs.compactMap { ref -> (String, String)? in
            guard ref.name.hasPrefix("refs/tags/") else { return nil }
            let tag = String(ref.name.dropFirst("refs/tags/".count))
            return matches(tag, pattern: pattern) ? (tag, ref.commit) : nil
        }
        return tags.max { versionLess($0.0, $1.0) }.map { (tag: $0.0, commit: $0.1) }
    }

    /// Version order: numeric runs compare as numbers (v1.10 > v1.9), and a pre-release (`v1.0.0-rc.1`) sorts
    /// before its release (`v1.0.0`), as in semver.
    public static func versionLess(_ a: String, _ b: String) -> Bool {
        func split(_ s: String) -> (core: String, pre: String?) {
            guard let dash = s.firstIndex(of: "-") else { return (s, nil) }
            return (String(s[..<dash]), String(s[s.index(after: dash)...]))
        }
        let (ca, pa) = split(a), (cb, pb) = split(b)
        let c = naturalCompare(ca, cb)
        if c != 0 { return c < 0 }
        switch (pa, pb) {
        case (nil, nil): return false
        case (nil, _): return false
        case (_, nil): return true
        case let (x?, y?): return naturalCompare(x, y) < 0
        }
    }

    static func naturalCompare(_ a: String, _ b: String) -> Int {
        func chunks(_ s: String) -> [Substring] {
            var out: [Substring] = []
            var start = s.startIndex
            var i = s.startIndex
            while i < s.endIndex {
                let next = s.index(after: i)
                if next < s.endIndex, s[i].isNumber != s[next].isNumber {
                    out.append(s[start..<next])
                    start = next
                }
                i = next
            }
            if start < s.endIndex { out.append(s[start...]) }
            return out
        }
        let x = chunks(a), y = chunks(b)
        for (p, q) in zip(x, y) where p != q {
            if let m = Int(p), let n = Int(q) { if m != n { return m < n ? -1 : 1 } else { continue } }
            return p < q ? -1 : 1
        }
        return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
    }
}
