import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// Where the operator itself may connect when a Meteor names the address: a repository's URL, an image's registry,
/// the token realm a registry names. A Meteor's author could otherwise make the operator, from inside the cluster,
/// reach what they cannot: the API server, cloud metadata (169.254.169.254), other Services. Refused unless
/// allowed: loopback, link-local, unspecified and multicast addresses, the cluster's Service and Pod ranges, and
/// cluster-internal names (`*.svc`, `*.cluster.local`, `kubernetes.default`, single labels). A name is resolved
/// once, every address it resolves to is checked, and the connection goes to the checked address (no second
/// lookup for a rebinding DNS server to answer differently). What the cluster admin configured (`--egress-allow`,
/// the image registry, insecure registries, mirrors) is allowed as named.
public struct EgressPolicy: Sendable {
    /// An exception the admin made: a host name (any port), a host and port, or an address range.
    public enum Allowance: Sendable, Hashable, CustomStringConvertible {
        case host(String)
        case hostPort(String, Int)
        case range(AddressRange)

        /// `10.0.0.0/8`, `192.168.1.5`, `git.internal`, `git.internal:8443`, `[fd00::1]:5000`.
        public init?(_ text: String) {
            let t = text.trimmingCharacters(in: .whitespaces).lowercased()
            guard !t.isEmpty else { return nil }
            if let range = AddressRange(t) {
                self = .range(range)
                return
            }
            if t.hasPrefix("["), let close = t.firstIndex(of: "]") {
                let host = String(t[t.index(after: t.startIndex)..<close])
                let rest = t[t.index(after: close)...]
                guard AddressRange.bytes(of: host) != nil else { return nil }
                if rest.isEmpty { self = .host(host); return }
                guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port) else { return nil }
                self = .hostPort(host, port)
                return
            }
            let parts = t.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, Self.isHostName(String(parts[0])) || AddressRange.bytes(of: String(parts[0])) != nil else { return nil }
            if parts.count == 2 {
                guard let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
                self = .hostPort(String(parts[0]), port)
            } else {
                self = .host(String(parts[0]))
            }
        }

        static func isHostName(_ s: String) -> Bool {
            !s.isEmpty && s.count <= 253 && s.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }
        }

        public var description: String {
            switch self {
            case .host(let h): return h
            case .hostPort(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
            case .range(let r): return r.description
            }
        }
    }

    public struct Refused: Error, CustomStringConvertible, Sendable, Equatable {
        public var message: String
        public var description: String { message }
        public init(message: String) { self.message = message }
    }

    /// Never reached unless allowed, whatever the cluster.
    public static let reservedRanges: [(AddressRange, String)] = [
        ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"), ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
        ("169.254.0.0/16", "link-local, where cloud metadata services answer"), ("fe80::/10", "link-local"),
        ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"), ("fd00:ec2::254/128", "the cloud metadata service"),
    ].map { (AddressRange($0.0)!, $0.1) }

    /// The Service and Pod ranges of common distributions, when the admin does not say (`--cluster-cidr`):
    /// kubeadm's Service range, flannel's and kind's Pods, OpenShift's Services and Pods, k3s's and MicroShift's.
    public static let defaultClusterRanges = ["10.96.0.0/12", "10.244.0.0/16", "172.30.0.0/16", "10.128.0.0/14", "10.42.0.0/16", "10.43.0.0/16"].map {
        AddressRange($0)!
    }

    /// What the admin allowed.
    public var allowed: [Allowance]
    /// The cluster's Service and Pod ranges.
    public var clusterRanges: [AddressRange]
    /// The most a response body may carry, unless a call asks for less.
    public var maxResponseBytes = 16 << 20
    /// The most a call may take, every redirect, the body and any token request included.
    public var deadline: Duration = .seconds(30)
    /// The most redirects a call follows.
    public var maxRedirects = 5
    /// Off for what a person runs for themselves (`meteor-operator verify`): every address allowed.
    public var enforced = true
    /// Resolves a host name to its addresses (tests give a hostile resolver).
    public var resolve: @Sendable (String) async throws -> [String] = EgressPolicy.systemResolve

    public init(allowing allowed: [Allowance] = [], clusterRanges: [AddressRange] = EgressPolicy.defaultClusterRanges) {
        self.allowed = allowed
        self.clusterRanges = clusterRanges
    }

    /// Every address allowed: for a person's own command, not for what a Meteor names.
    public static var unrestricted: EgressPolicy {
        var p = EgressPolicy()
        p.enforced = false
        return p
    }

    /// Allows `host:port` as named (an endpoint the admin configured).
    public mutating func allow(endpoint: String) {
        if let a = Allowance(endpoint) { allowed.append(a) }
    }

    /// Allows the origin of an admin-configured URL (`http://127.0.0.1:5001`).
    public mutating func allow(originOf url: String) {
        guard let c = URLComponents(string: url), let host = c.host else { return }
        let port = c.port ?? (c.scheme == "https" ? 443 : 80)
        allowed.append(.hostPort(host.lowercased(), port))
    }

    func isAllowed(host: String, port: Int) -> Bool {
        allowed.contains { a in
            switch a {
            case .host(let h): return h == host
            case .hostPort(let h, let p): return h == host && p == port
            case .range: return false
            }
        }
    }

    /// Why `ip` may not be reached, or nil.
    func refusal(ip: String) -> String? {
        guard let bytes = AddressRange.bytes(of: ip) else { return "is not an address" }
        if allowed.contains(where: { if case .range(let r) = $0 { return r.contains(bytes) } else { return false } }) { return nil }
        if let (range, what) = Self.reservedRanges.first(where: { $0.0.contains(bytes) }) { return "is \(what) (\(range))" }
        if let range = clusterRanges.first(where: { $0.contains(bytes) }) { return "is in the cluster's range \(range)" }
        return nil
    }

    /// Why a host name may not be looked up at all, or nil.
    static func nameRefusal(_ host: String) -> String? {
        if host == "localhost" || host.hasSuffix(".localhost") { return "is loopback" }
        if !host.contains(".") { return "is a single-label name, which resolves through the cluster's search domains" }
        if host == "metadata.google.internal" { return "is the cloud metadata service" }
        for suffix in [".svc", ".svc.cluster.local", ".cluster.local"] where host.hasSuffix(suffix) {
            return "is a cluster-internal name (*\(suffix))"
        }
        if host == "kubernetes.default" || host.hasPrefix("kubernetes.default.") { return "is the Kubernetes API server" }
        return nil
    }

    /// Checks `host:port` before a connection: nil to connect by name (the admin allowed it), else the checked
    /// address to connect to. Throws `Refused` saying why.
    public func admit(host rawHost: String, port: Int) async throws -> String? {
        var host = rawHost.lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        while host.hasSuffix(".") { host.removeLast() }
        guard enforced, !isAllowed(host: host, port: port) else { return nil }
        let shown = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        if AddressRange.bytes(of: host) != nil {
            if let why = refusal(ip: host) {
                throw Refused(message: "\(shown) \(why): the operator does not connect there for a Meteor (allow it with --egress-allow)")
            }
            return host
        }
        if let why = Self.nameRefusal(host) {
            throw Refused(message: "\(shown) \(why): the operator does not connect there for a Meteor (allow it with --egress-allow)")
        }
        let addresses: [String]
        do { addresses = try await resolve(host) } catch { throw Refused(message: "\(host) does not resolve: \(error)") }
        guard let first = addresses.first else { throw Refused(message: "\(host) does not resolve") }
        for address in addresses {
            if let why = refusal(ip: address) {
                throw Refused(
                    message:
                        "\(shown) resolves to \(address), which \(why): the operator does not connect there for a Meteor (allow it with --egress-allow)"
                )
            }
        }
        return first
    }

    /// getaddrinfo, off the cooperative pool.
    @Sendable public static func systemResolve(_ host: String) async throws -> [String] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                var result: UnsafeMutablePointer<addrinfo>?
                let code = getaddrinfo(host, nil, &hints, &result)
                guard code == 0 else {
                    continuation.resume(throwing: Refused(message: String(cString: gai_strerror(code))))
                    return
                }
                defer { freeaddrinfo(result) }
                var out: [String] = []
                var next = result
                while let info = next {
                    var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                    if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                        let text = String(cString: buffer)
                        if !out.contains(text) { out.append(text) }
                    }
                    next = info.pointee.ai_next
                }
                continuation.resume(returning: out)
            }
        }
    }
}

/// What a remote answered.
public struct RemoteResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// The URL that answered (after redirects).
    public var url: String
}

extension EgressPolicy {
    /// Which redirects a call follows; every hop is admitted like the first.
    public enum Redirects: Sendable {
        /// Only to the same host (http to https allowed): git remotes, registry APIs, token realms.
        case sameHost
        /// To any host that is admitted, without the Authorization header: registry blob downloads, which the
        /// distribution spec lets a registry send to its storage (a CDN, a bucket).
        case anyAdmittedHost
    }

    /// One HTTP call to a remote a Meteor named: admitted before it connects (and at every redirect), connected to
    /// the checked address, its body capped at `limit` (default `maxResponseBytes`), the whole of it — redirects
    /// and body included — within `deadline`.
    public func fetch(_ request: HTTPClientRequest, limit: Int? = nil, redirects: Redirects = .sameHost) async throws -> RemoteResponse {
        let cap = limit ?? maxResponseBytes
        let deadline = self.deadline
        let started = ContinuousClock.now
        return try await withThrowingTaskGroup(of: RemoteResponse.self) { group in
            group.addTask { try await self.follow(request, cap: cap, redirects: redirects) }
            group.addTask {
                try await Task.sleep(until: started + deadline)
                throw Refused(message: "\(Self.display(request.url)) did not answer in full within \(deadline)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    func follow(_ first: HTTPClientRequest, cap: Int, redirects: Redirects) async throws -> RemoteResponse {
        var request = first
        let origin = URLComponents(string: first.url)?.host?.lowercased()
        for _ in 0...maxRedirects {
            guard let url = URLComponents(string: request.url), let host = url.host, let scheme = url.scheme?.lowercased(),
                ["http", "https"].contains(scheme)
            else {
                throw Refused(message: "\(Self.display(request.url)) is not an http or https URL")
            }
            let port = url.port ?? (scheme == "https" ? 443 : 80)
            let address = try await admit(host: host, port: port)
            let response = try await once(request, host: host, address: address, cap: cap)
            guard [301, 302, 303, 307, 308].contains(response.status), let location = response.headers.first(name: "Location") else {
                return response
            }
            guard let target = URL(string: location, relativeTo: URL(string: request.url))?.absoluteURL, let targetHost = target.host?.lowercased()
            else {
                throw Refused(message: "\(Self.display(request.url)) redirected to \(location), which is not a URL")
            }
            let sameHost = targetHost == host.lowercased() || targetHost == origin
            if !sameHost {
                guard case .anyAdmittedHost = redirects else {
                    throw Refused(
                        message:
                            "\(Self.display(request.url)) redirected to another host (\(targetHost)); the operator follows redirects within one host only"
                    )
                }
                request.headers.remove(name: "Authorization")
            }
            if response.status == 303 || (request.method == .POST && [301, 302].contains(response.status)) {
                request.method = .GET
                request.body = nil
            }
            request.url = target.absoluteString
        }
        throw Refused(message: "\(Self.display(first.url)) redirected more than \(maxRedirects) times")
    }

    /// One request over a client of its own that connects to `address` for `host` (TLS still checks `host`).
    func once(_ request: HTTPClientRequest, host: String, address: String?, cap: Int) async throws -> RemoteResponse {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)))
        configuration.httpVersion = .automatic
        if let address { configuration.dnsOverride = [host: address] }
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let response = try await http.execute(request, timeout: .init(deadline))
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: cap)
            } catch is NIOTooManyBytesError {
                throw Refused(message: "\(Self.display(request.url)) answered more than \(cap) bytes")
            }
            try? await http.shutdown()
            return RemoteResponse(status: Int(response.status.code), headers: response.headers, body: Array(body.readableBytesView), url: request.url)
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    /// A URL without its query (tokens ride there) for messages.
    static func display(_ url: String) -> String {
        String(url.split(separator: "?", maxSplits: 1).first ?? "")
    }
}
