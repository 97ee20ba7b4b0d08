import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import KubeModels
import Logging
import MeteorCore
import NIOCore
import Synchronization

/// SANDBOX STAND-IN for the network a real cluster reaches: an OCI registry (the read side of the Distribution
/// API v2, in memory) and git remotes (the smart-HTTP ref advertisement only), on one loopback listener. The
/// operator reaches it through `EdgeSettings.hostOverrides`, so `quay.io/...` images and `https://github.com/...`
/// repositories resolve here; verification then runs exactly as against a real registry.
public final class SandboxRemotes: OCIPushTarget, Sendable {
    struct Repository {
        var blobs: [String: [UInt8]] = [:]
        var manifests: [String: (bytes: [UInt8], mediaType: String)] = [:]
        var tags: [String: String] = [:]
    }

    let repositories = Mutex<[String: Repository]>([:])
    let releaseTags: Mutex<[String]>

    /// `tags`: the release tags every git remote advertises (each names a commit derived from the URL and tag).
    public init(tags: [String] = ["v1.0.0"]) {
        releaseTags = Mutex(tags)
    }

    public func addTag(_ tag: String) { releaseTags.withLock { if !$0.contains(tag) { $0.append(tag) } } }

    // MARK: OCIPushTarget (in process)

    public func pushBlob(_ repository: RegistryClient.Reference, _ bytes: [UInt8]) async throws -> String {
        let digest = SignatureVerifier.digest(bytes)
        repositories.withLock { $0[repository.repository, default: Repository()].blobs[digest] = bytes }
        return digest
    }

    public func pushManifest(_ repository: RegistryClient.Reference, reference: String, _ bytes: [UInt8], mediaType: String) async throws {
        let digest = SignatureVerifier.digest(bytes)
        repositories.withLock {
            $0[repository.repository, default: Repository()].manifests[digest] = (bytes, mediaType)
            if !reference.hasPrefix("sha256:") { $0[repository.repository, default: Repository()].tags[reference] = digest }
        }
    }

    // MARK: HTTP

    /// The router: `/v2/...` is the registry, `.../info/refs?service=git-upload-pack` a git remote, and
    /// `POST /sandbox/tags/NAME` publishes a new release tag on every remote.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.on("**", method: .get) { request, _ in try self.serve(request.uri.path, query: request.uri.query, head: false) }
        router.on("**", method: .head) { request, _ in try self.serve(request.uri.path, query: request.uri.query, head: true) }
        router.post("/sandbox/tags/:tag") { _, context -> Response in
            let tag = try context.parameters.require("tag")
            guard tag.range(of: #"\A[A-Za-z0-9._-]{1,128}\z"#, options: .regularExpression) != nil else { return Response(status: .badRequest) }
            self.addTag(tag)
            return Response(status: .created, body: .init(byteBuffer: ByteBuffer(string: "tagged \(tag)\n")))
        }
        return router
    }

    func serve(_ path: String, query: String?, head: Bool) throws -> Response {
        if path.hasSuffix("/info/refs") {
            guard query == "service=git-upload-pack" else { return Response(status: .forbidden) }
            let body = Self.advertisement(url: String(path.dropLast("/info/refs".count)), tags: releaseTags.withLock { $0 })
            return Response(
                status: .ok, headers: [.contentType: "application/x-git-upload-pack-advertisement", .cacheControl: "no-cache"],
                body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        if path == "/v2/" || path == "/v2" {
            return Response(
                status: .ok, headers: [.contentType: "application/json", HTTPField.Name("Docker-Distribution-API-Version")!: "registry/2.0"],
                body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        guard path.hasPrefix("/v2/") else { return Self.error(.notFound, "NAME_UNKNOWN", "not a registry or git path") }
        let rest = String(path.dropFirst(4))
        for (marker, isManifest) in [("/manifests/", true), ("/blobs/", false)] {
            guard let range = rest.range(of: marker, options: .backwards) else { continue }
            let name = String(rest[..<range.lowerBound]), reference = String(rest[range.upperBound...])
            let found: (bytes: [UInt8], mediaType: String)? = repositories.withLock { repos in
                guard let repo = repos[name] else { return nil }
                if isManifest {
                    let digest = reference.hasPrefix("sha256:") ? reference : repo.tags[reference]
                    return digest.flatMap { repo.manifests[$0] }
                }
                return repo.blobs[reference].map { ($0, "application/octet-stream") }
            }
            guard let found else { return Self.error(.notFound, isManifest ? "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN", "\(name) has no \(reference)") }
            var headers: HTTPFields = [.contentType: found.mediaType, .contentLength: String(found.bytes.count)]
            headers[HTTPField.Name("Docker-Content-Digest")!] = SignatureVerifier.digest(found.bytes)
            return Response(status: .ok, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: found.bytes)))
        }
        return Self.error(.notFound, "NAME_UNKNOWN", "unknown path")
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        let body: JSONValue = ["errors": [["code": .string(code), "message": .string(message)]]]
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body.serialized())))
    }

    /// The commit the stand-in says `ref` of the repository at `path` (`/github.com/org/repo`) is.
    static func commit(path: String, ref: String) -> String {
        Insecure.SHA1.hash(data: Data("\(path) \(ref)".utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The commit a clone of `repositoryURL` at `ref` gets from the stand-in (a tag, or `main`; any other ref as if
    /// it were a branch there).
    public static func commit(repositoryURL: String, ref: String) -> String {
        let components = URLComponents(string: repositoryURL)
        return commit(path: "/" + (components?.host ?? "") + (components?.path ?? ""), ref: ref)
    }

    /// A v0 upload-pack advertisement: `main` and lightweight tags, commits derived from the URL so they are stable.
    static func advertisement(url: String, tags: [String]) -> [UInt8] {
        func commit(_ name: String) -> String { Self.commit(path: url, ref: name) }
        func pkt(_ line: String) -> String { String(format: "%04x", line.utf8.count + 4) + line }
        var out = pkt("# service=git-upload-pack\n") + "0000"
        out += pkt("\(commit("main")) HEAD\0symref=HEAD:refs/heads/main agent=meteor-sandbox\n")
        out += pkt("\(commit("main")) refs/heads/main\n")
        for tag in tags { out += pkt("\(commit(tag)) refs/tags/\(tag)\n") }
        return Array((out + "0000").utf8)
    }
}
