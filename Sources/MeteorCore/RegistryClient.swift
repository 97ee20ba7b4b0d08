import AsyncHTTPClient
import Foundation
import KubeModels
import NIOCore
import NIOHTTP1
import Synchronization

/// A Docker Registry HTTP API v2 / OCI distribution client: manifests and blobs, with anonymous, basic and
/// bearer-token authentication (the token flow a `WWW-Authenticate: Bearer realm=…` challenge asks for).
public final class RegistryClient: Sendable {
    public typealias Credentials = BasicCredentials

    public struct RegistryError: Error, CustomStringConvertible, Sendable {
        public var status: Int
        public var message: String
        public var description: String { message }
        public var isNotFound: Bool { status == 404 }
    }

    /// An image reference `host[:port]/repository[:tag][@digest]`.
    public struct Reference: Sendable, Equatable, CustomStringConvertible {
        public var registry: String
        public var repository: String
        public var tag: String?
        public var digest: String?

        public init(parsing text: String) throws {
            var rest = text
            if let at = rest.firstIndex(of: "@") {
                digest = String(rest[rest.index(after: at)...])
                rest = String(rest[..<at])
            }
            if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
                tag = String(rest[rest.index(after: colon)...])
                rest = String(rest[..<colon])
            }
            guard let slash = rest.firstIndex(of: "/"), rest[..<slash].contains(".") || rest[..<slash].contains(":") || rest[..<slash] == "localhost" else {
                throw RegistryError(status: 0, message: "\(text) does not name a registry host (expected host[:port]/repository[@sha256:…])")
            }
            registry = String(rest[..<slash])
            repository = String(rest[rest.index(after: slash)...])
            if let digest, !(digest.hasPrefix("sha256:") && digest.count == 71) {
                throw RegistryError(status: 0, message: "\(text): the digest must be sha256:<64 hex digits>")
            }
        }

        public var description: String { "\(registry)/\(repository)" + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "") }
        public var repositoryReference: String { "\(registry)/\(repository)" }
    }

    public static let imageIndexType = "application/vnd.oci.image.index.v1+json"
    public static let manifestTypes = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ]

    let http: HTTPClient
    let insecure: Bool
    let credentials: [String: Credentials]
    let endpoints: [String: String]
    let tokens = Mutex<[String: String]>([:])

    /// `insecure` talks plain HTTP (loopback registries). `credentials` by registry host. `endpoints` sends a
    /// registry host's requests to another origin (`http://127.0.0.1:5001`), as a mirror does (`*`: every host); the
    /// sandbox uses it.
    public init(insecure: Bool = false, credentials: [String: Credentials] = [:], endpoints: [String: String] = [:]) {
        self.insecure = insecure
        self.credentials = credentials
        self.endpoints = endpoints
        var config = HTTPClient.Configuration(redirectConfiguration: .follow(max: 5, allowCycles: false), timeout: .init(connect: .seconds(5), read: .seconds(30)))
        config.httpVersion = .automatic
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// Reads registry credentials from a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`.
    public static func credentials(dockerConfigJSON: [UInt8]) -> [String: Credentials] {
        guard let json = try? JSONValue.parse(dockerConfigJSON) else { return [:] }
        var out: [String: Credentials] = [:]
        for (host, entry) in json["auths"]?.objectValue ?? [:] {
            let key = host.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "http://", with: "").split(separator: "/").first.map(String.init) ?? host
            if let user = entry["username"]?.stringValue, let pass = entry["password"]?.stringValue {
                out[key] = Credentials(username: user, password: pass)
            } else if let auth = entry["auth"]?.stringValue, let data = Data(base64Encoded: auth), let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") {
                out[key] = Credentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            }
        }
        return out
    }

    public func shutdown() async throws { try await http.shutdown() }

    /// A client for the length of `body`, shut down after it whatever it throws.
    public static func with<T>(insecure: Bool = false, credentials: [String: Credentials] = [:], endpoints: [String: String] = [:], _ body: (RegistryClient) async throws -> T) async throws -> T {
        let registry = RegistryClient(insecure: insecure, credentials: credentials, endpoints: endpoints)
        do {
            let result = try await body(registry)
            try? await registry.shutdown()
            return result
        } catch {
            try? await registry.shutdown()
            throw error
        }
    }

    func origin(_ registry: String) -> String { endpoints[registry] ?? endpoints["*"] ?? "\(insecure ? "http" : "https")://\(registry)" }
    func base(_ registry: String) -> String { origin(registry) + "/v2/" }

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// One request, answering an authentication challenge once.
    func send(_ method: HTTPMethod, registry: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil, scope: String) async throws -> Response {
        var attempt = 0
        while true {
            var request = HTTPClientRequest(url: path.hasPrefix("http") ? path : base(registry) + path)
            request.method = method
            for (k, v) in headers { request.headers.add(name: k, value: v) }
            if let token = tokens.withLock({ $0[registry + " " + scope] }) {
                request.headers.add(name: "Authorization", value: token)
            }
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
            let response = try await http.execute(request, timeout: .seconds(60))
            var buffer = try await response.body.collect(upTo: 64 * 1024 * 1024)
            let r = Response(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: buffer.readBytes(length: buffer.readableBytes) ?? [])
            if r.status == 401, attempt == 0, let challenge = r.header("WWW-Authenticate") {
                try await authenticate(registry: registry, challenge: challenge, scope: scope)
                attempt += 1
                continue
            }
            return r
        }
    }

    /// Answers `Basic` with the credentials, `Bearer realm=…,service=…` by fetching a token from the realm.
    func authenticate(registry: String, challenge: String, scope: String) async throws {
        let creds = credentials[registry]
        let basic = creds.map(\.authorization)
        if challenge.lowercased().hasPrefix("basic") {
            guard let basic else { throw RegistryError(status: 401, message: "\(registry) requires credentials and none are configured") }
            tokens.withLock { $0[registry + " " + scope] = basic }
            return
        }
        var params: [String: String] = [:]
        for part in challenge.dropFirst("Bearer ".count).split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if kv.count == 2 { params[kv[0]] = kv[1] }
        }
        guard let realm = params["realm"], var url = URLComponents(string: realm) else {
            throw RegistryError(status: 401, message: "\(registry): unsupported authentication challenge")
        }
        var items = url.queryItems ?? []
        if let service = params["service"] { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: params["scope"] ?? scope))
        url.queryItems = items
        var request = HTTPClientRequest(url: url.string ?? realm)
        if let basic { request.headers.add(name: "Authorization", value: basic) }
        let response = try await http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1024 * 1024)
        guard response.status.code == 200, let json = try? JSONValue.parse(body.readableBytesView),
            let token = json["token"]?.stringValue ?? json["access_token"]?.stringValue
        else { throw RegistryError(status: Int(response.status.code), message: "\(registry): token request to \(realm) failed with \(response.status.code)") }
        tokens.withLock { $0[registry + " " + scope] = "Bearer \(token)" }
    }

    func check(_ r: Response, _ what: String) throws {
        guard (200..<300).contains(r.status) else {
            let detail = (try? JSONValue.parse(r.body))?["errors"]?.arrayValue?.first?["message"]?.stringValue ?? "HTTP \(r.status)"
            throw RegistryError(status: r.status, message: "\(what): \(detail)")
        }
    }

    /// A manifest by tag or digest: its exact bytes and their digest (checked when asked by digest).
    public func manifest(_ repository: Reference, reference: String) async throws -> (bytes: [UInt8], digest: String, mediaType: String?) {
        let scope = "repository:\(repository.repository):pull"
        let r = try await send(.GET, registry: repository.registry, path: "\(repository.repository)/manifests/\(reference)", headers: [("Accept", Self.manifestTypes.joined(separator: ", "))], scope: scope)
        try check(r, "manifest \(repository.repositoryReference):\(reference)")
        let digest = SignatureVerifier.digest(r.body)
        if reference.hasPrefix("sha256:"), digest != reference {
            throw RegistryError(status: 0, message: "manifest \(reference) from \(repository.registry) has digest \(digest)")
        }
        return (r.body, digest, r.header("Content-Type"))
    }

    /// A blob's bytes (callers check the digest where it matters).
    public func blob(_ repository: Reference, digest: String) async throws -> [UInt8] {
        let r = try await send(.GET, registry: repository.registry, path: "\(repository.repository)/blobs/\(digest)", scope: "repository:\(repository.repository):pull")
        try check(r, "blob \(digest)")
        return r.body
    }

    /// Uploads a blob (monolithic POST then PUT), as `docker push` and cosign do.
    public func pushBlob(_ repository: Reference, _ bytes: [UInt8]) async throws -> String {
        let digest = SignatureVerifier.digest(bytes)
        let scope = "repository:\(repository.repository):pull,push"
        let start = try await send(.POST, registry: repository.registry, path: "\(repository.repository)/blobs/uploads/", scope: scope)
        try check(start, "blob upload")
        guard var location = start.header("Location") else { throw RegistryError(status: start.status, message: "blob upload: no Location") }
        if location.hasPrefix("/") { location = origin(repository.registry) + location }
        location += (location.contains("?") ? "&" : "?") + "digest=\(digest)"
        let put = try await send(.PUT, registry: repository.registry, path: location, headers: [("Content-Type", "application/octet-stream")], body: bytes, scope: scope)
        try check(put, "blob \(digest)")
        return digest
    }

    public func pushManifest(_ repository: Reference, reference: String, _ bytes: [UInt8], mediaType: String = "application/vnd.oci.image.manifest.v1+json") async throws {
        let r = try await send(.PUT, registry: repository.registry, path: "\(repository.repository)/manifests/\(reference)", headers: [("Content-Type", mediaType)], body: bytes, scope: "repository:\(repository.repository):pull,push")
        try check(r, "manifest \(reference)")
    }
}


extension SignatureVerifier {
    /// Verifies `image` (which must name its digest) by reading its cosign signature from the registry.
    public func verify(image: RegistryClient.Reference, registry: RegistryClient) async throws -> Verified {
        guard let digest = image.digest else { throw SignatureFailure.malformedPayload("\(image) names no digest; verify a digest, not a tag") }
        let signatureManifest: [UInt8]
        do {
            signatureManifest = try await registry.manifest(image, reference: Self.signatureTag(for: digest)).bytes
        } catch let e as RegistryClient.RegistryError where e.isNotFound {
            throw SignatureFailure.missingSignature("\(image.repositoryReference) has no \(Self.signatureTag(for: digest))")
        }
        let manifest: JSONValue
        do { manifest = try JSONValue.parse(signatureManifest) } catch { throw SignatureFailure.malformedPayload("signature manifest: \(error)") }
        return try await verify(signatureManifest: manifest, digest: digest, repository: image.repositoryReference) { d in
            try await registry.blob(image, digest: d)
        }
    }
}
