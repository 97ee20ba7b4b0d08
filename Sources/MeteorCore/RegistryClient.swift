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
            guard let slash = rest.firstIndex(of: "/"), rest[..<slash].contains(".") || rest[..<slash].contains(":") || rest[..<slash] == "localhost"
            else {
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

    let insecure: Bool
    let credentials: [String: Credentials]
    let endpoints: [String: String]
    let egress: EgressPolicy
    let tokens = Mutex<[String: String]>([:])

    /// `insecure` talks plain HTTP (loopback registries). `credentials` by registry host. `endpoints` sends a
    /// registry host's requests to another origin (`http://127.0.0.1:5001`), as a mirror does (`*`: every host); the
    /// sandbox uses it. `egress` decides where requests may go (registries are named by Meteors: by default nowhere
    /// inside the cluster); the endpoints, configured by the admin, are allowed as named.
    public init(
        insecure: Bool = false, credentials: [String: Credentials] = [:], endpoints: [String: String] = [:], egress: EgressPolicy = EgressPolicy()
    ) {
        self.insecure = insecure
        self.credentials = credentials
        self.endpoints = endpoints
        var egress = egress
        for origin in endpoints.values { egress.allow(originOf: origin) }
        self.egress = egress
    }

    /// The most a manifest may weigh (the distribution spec's recommended limit), a signature blob, a token answer.
    public static let manifestLimit = 4 << 20
    public static let blobLimit = 16 << 20
    public static let tokenLimit = 1 << 20

    /// Reads registry credentials from a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`.
    public static func credentials(dockerConfigJSON: [UInt8]) -> [String: Credentials] {
        guard let json = try? JSONValue.parse(dockerConfigJSON) else { return [:] }
        var out: [String: Credentials] = [:]
        for (host, entry) in json["auths"]?.objectValue ?? [:] {
            let key =
                host.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "http://", with: "").split(separator: "/").first.map(
                    String.init) ?? host
            if let user = entry["username"]?.stringValue, let pass = entry["password"]?.stringValue {
                out[key] = Credentials(username: user, password: pass)
            } else if let auth = entry["auth"]?.stringValue, let data = Data(base64Encoded: auth), let text = String(data: data, encoding: .utf8),
                let colon = text.firstIndex(of: ":")
            {
                out[key] = Credentials(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            }
        }
        return out
    }

    func origin(_ registry: String) -> String { endpoints[registry] ?? endpoints["*"] ?? "\(insecure ? "http" : "https")://\(registry)" }
    func base(_ registry: String) -> String { origin(registry) + "/v2/" }

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// One request, answering an authentication challenge once; the body capped at `limit`. Blob downloads may be
    /// redirected to the registry's storage on another host (admitted like the registry, without credentials).
    func send(
        _ method: HTTPMethod, registry: String, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil, scope: String,
        limit: Int? = nil, redirects: EgressPolicy.Redirects = .sameHost
    ) async throws -> Response {
        var attempt = 0
        while true {
            var request = HTTPClientRequest(url: path.hasPrefix("http") ? path : base(registry) + path)
            request.method = method
            for (k, v) in headers { request.headers.add(name: k, value: v) }
            if let token = tokens.withLock({ $0[registry + " " + scope] }) {
                request.headers.add(name: "Authorization", value: token)
            }
            if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
            let response: RemoteResponse
            do {
                response = try await egress.fetch(request, limit: limit, redirects: redirects)
            } catch let refused as EgressPolicy.Refused {
                throw RegistryError(status: 0, message: "\(registry): \(refused.message)")
            }
            let r = Response(status: response.status, headers: response.headers.map { ($0.name, $0.value) }, body: response.body)
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
            let kv = part.split(separator: "=", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
            if kv.count == 2 { params[kv[0]] = kv[1] }
        }
        guard let realm = params["realm"], var url = URLComponents(string: realm) else {
            throw RegistryError(status: 401, message: "\(registry): unsupported authentication challenge")
        }
        if let why = realmRefusal(url, registry: registry) {
            throw RegistryError(
                status: 401,
                message:
                    "\(registry): its token realm \(EgressPolicy.display(realm)) \(why); the operator sends no credentials there (allow the host with --egress-allow)"
            )
        }
        var items = url.queryItems ?? []
        if let service = params["service"] { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: params["scope"] ?? scope))
        url.queryItems = items
        var request = HTTPClientRequest(url: url.string ?? realm)
        if let basic { request.headers.add(name: "Authorization", value: basic) }
        let response: RemoteResponse
        do {
            response = try await egress.fetch(request, limit: Self.tokenLimit)
        } catch let refused as EgressPolicy.Refused {
            throw RegistryError(status: 0, message: "\(registry): token request: \(refused.message)")
        }
        guard response.status == 200, let json = try? JSONValue.parse(response.body),
            let token = json["token"]?.stringValue ?? json["access_token"]?.stringValue
        else {
            throw RegistryError(
                status: response.status, message: "\(registry): token request to \(EgressPolicy.display(realm)) failed with \(response.status)")
        }
        tokens.withLock { $0[registry + " " + scope] = "Bearer \(token)" }
    }

    /// Registries whose token service is on a host of its own (the realm they name), known here.
    static let tokenHosts = ["docker.io": "auth.docker.io", "registry-1.docker.io": "auth.docker.io", "index.docker.io": "auth.docker.io"]

    /// Why credentials must not go to `realm`, or nil: a realm is HTTPS on the registry's own host (the host its
    /// requests go to, for a mirrored one), a known token host of that registry, or a host the admin allowed; plain
    /// HTTP only for a registry itself reached over plain HTTP.
    func realmRefusal(_ realm: URLComponents, registry: String) -> String? {
        guard let host = realm.host?.lowercased() else { return "names no host" }
        let registryHost = String(registry.lowercased().split(separator: ":").first ?? "")
        let originHost = URLComponents(string: origin(registry))?.host?.lowercased()
        let port = realm.port ?? (realm.scheme == "https" ? 443 : 80)
        let allowed = egress.isAllowed(host: host, port: port) || !egress.enforced
        guard host == registryHost || host == originHost || Self.tokenHosts[registryHost] == host || allowed else {
            return "is on another host than the registry (\(host))"
        }
        if realm.scheme?.lowercased() != "https",
            !(realm.scheme?.lowercased() == "http" && (insecure || origin(registry).hasPrefix("http:"))
                && (host == registryHost || host == originHost))
        {
            return "is not HTTPS"
        }
        return nil
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
        let r = try await send(
            .GET, registry: repository.registry, path: "\(repository.repository)/manifests/\(reference)",
            headers: [("Accept", Self.manifestTypes.joined(separator: ", "))], scope: scope, limit: Self.manifestLimit)
        try check(r, "manifest \(repository.repositoryReference):\(reference)")
        let digest = SignatureVerifier.digest(r.body)
        if reference.hasPrefix("sha256:"), digest != reference {
            throw RegistryError(status: 0, message: "manifest \(reference) from \(repository.registry) has digest \(digest)")
        }
        return (r.body, digest, r.header("Content-Type"))
    }

    /// A blob's bytes (callers check the digest where it matters).
    public func blob(_ repository: Reference, digest: String) async throws -> [UInt8] {
        let r = try await send(
            .GET, registry: repository.registry, path: "\(repository.repository)/blobs/\(digest)", scope: "repository:\(repository.repository):pull",
            limit: Self.blobLimit, redirects: .anyAdmittedHost)
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
        let put = try await send(
            .PUT, registry: repository.registry, path: location, headers: [("Content-Type", "application/octet-stream")], body: bytes, scope: scope)
        try check(put, "blob \(digest)")
        return digest
    }

    public func pushManifest(
        _ repository: Reference, reference: String, _ bytes: [UInt8], mediaType: String = "application/vnd.oci.image.manifest.v1+json"
    ) async throws {
        let r = try await send(
            .PUT, registry: repository.registry, path: "\(repository.repository)/manifests/\(reference)", headers: [("Content-Type", mediaType)],
            body: bytes, scope: "repository:\(repository.repository):pull,push")
        try check(r, "manifest \(reference)")
    }
}

extension SignatureVerifier {
    /// An image's cosign signature as its registry stores it: the `.sig` tag's manifest, and its blobs (each read
    /// once, however many keys are tried).
    public final class StoredSignature: Sendable {
        public let digest: String
        public let manifest: JSONValue
        let image: RegistryClient.Reference
        let registry: RegistryClient
        let blobs = Mutex<[String: [UInt8]]>([:])

        init(digest: String, manifest: JSONValue, image: RegistryClient.Reference, registry: RegistryClient) {
            self.digest = digest
            self.manifest = manifest
            self.image = image
            self.registry = registry
        }

        public func blob(_ digest: String) async throws -> [UInt8] {
            if let cached = blobs.withLock({ $0[digest] }) { return cached }
            let bytes = try await registry.blob(image, digest: digest)
            blobs.withLock { $0[digest] = bytes }
            return bytes
        }
    }

    /// Reads the signature of `image` (which must name its digest) from the registry.
    public static func fetchSignature(image: RegistryClient.Reference, registry: RegistryClient) async throws -> StoredSignature {
        guard let digest = image.digest else { throw SignatureFailure.malformedPayload("\(image) names no digest; verify a digest, not a tag") }
        let signatureManifest: [UInt8]
        do {
            signatureManifest = try await registry.manifest(image, reference: Self.signatureTag(for: digest)).bytes
        } catch let e as RegistryClient.RegistryError where e.isNotFound {
            throw SignatureFailure.missingSignature("\(image.repositoryReference) has no \(Self.signatureTag(for: digest))")
        }
        let manifest: JSONValue
        do { manifest = try JSONValue.parse(signatureManifest) } catch { throw SignatureFailure.malformedPayload("signature manifest: \(error)") }
        return StoredSignature(digest: digest, manifest: manifest, image: image, registry: registry)
    }

    /// Verifies `image` (which must name its digest) by reading its cosign signature from the registry.
    public func verify(image: RegistryClient.Reference, registry: RegistryClient) async throws -> Verified {
        let signature = try await Self.fetchSignature(image: image, registry: registry)
        return try await verify(signatureManifest: signature.manifest, digest: signature.digest, repository: image.repositoryReference) {
            try await signature.blob($0)
        }
    }
}
