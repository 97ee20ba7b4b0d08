import Foundation
import KubeClient
import Hummingbird
import Logging
import HTTPTypes
import NIOCore
import ServiceLifecycle

/// git's own smart-HTTP server (`git http-backend`, a CGI program) behind a loopback HTTP listener, serving bare
/// repositories it creates; tests use it as a real git remote.
public final class GitHTTPServer: Sendable {
    public let root: URL
    public let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>

    public static let backend = "/usr/lib/git-core/git-http-backend"
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: backend) }

    /// `basicAuth` (username, password): every request must carry them, as a private repository's host asks.
    public static func start(basicAuth: (username: String, password: String)? = nil) async throws -> GitHTTPServer {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("git-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let router = Router()
        if let basicAuth {
            let expected = "Basic " + Data("\(basicAuth.username):\(basicAuth.password)".utf8).base64EncodedString()
            router.add(middleware: BasicAuthGate(expected: expected))
        }
        router.get("**") { request, _ -> Response in
            try await cgi(root: root, path: request.uri.path, query: request.uri.query ?? "")
        }
        // Fetches and clones POST to git-upload-pack.
        router.post("**") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 * 1024 * 1024)
            return try await cgi(
                root: root, path: request.uri.path, query: request.uri.query ?? "", method: "POST", body: Data(buffer: body),
                contentType: request.headers[.contentType], contentEncoding: request.headers[.contentEncoding],
                gitProtocol: request.headers[HTTPField.Name("Git-Protocol")!])
        }
        let (bound, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            }, logger: Logger(label: "git-http", factory: { _ in SwiftLogNoOpLogHandler() }))
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "git-http", factory: { _ in SwiftLogNoOpLogHandler() })))
        let task = Task { try await group.run() }
        var port = 0
        for await p in bound { port = p }
        return GitHTTPServer(root: root, port: port, group: group, task: task)
    }

    init(root: URL, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.root = root
        self.port = port
        self.group = group
        self.task = task
    }

    public func url(_ repository: String) -> String { "http://127.0.0.1:\(port)/\(repository).git" }

    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        try? FileManager.default.removeItem(at: root)
    }

    /// Creates a bare repository with one commit on `main`; returns the commit.
    @discardableResult
    public func createRepository(_ name: String, files: [String: String] = ["README.md": "hello\n"]) async throws -> String {
        let bare = root.appendingPathComponent("\(name).git")
        try await git(["init", "-q", "--bare", "-b", "main", bare.path])
        return try await commit(name, files: files, message: "initial")
    }

    /// Commits `files` on `main`; returns the new commit.
    @discardableResult
    public func commit(_ name: String, files: [String: String], message: String) async throws -> String {
        let work = root.appendingPathComponent("\(name).work")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        for (path, text) in files {
            let url = work.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        let dirs = ["--git-dir=\(root.appendingPathComponent("\(name).git").path)", "--work-tree=\(work.path)"]
        try await git(dirs + ["add", "-A"])
        try await git(dirs + ["commit", "-q", "-m", message])
        return try await git(dirs + ["rev-parse", "HEAD"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Adds an annotated tag at `main`'s head (`force`: moves an existing one there); returns the commit it points at.
    @discardableResult
    public func tag(_ name: String, _ tag: String, force: Bool = false) async throws -> String {
        let dir = "--git-dir=\(root.appendingPathComponent("\(name).git").path)"
        try await git([dir, "tag"] + (force ? ["-f"] : []) + ["-a", tag, "-m", "release \(tag)"])
        return try await git([dir, "rev-parse", "\(tag)^{commit}"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    func git(_ arguments: [String]) async throws -> String {
        let r = try await runProcess(
            "/usr/bin/git", ["-c", "user.name=Meteor Test", "-c", "user.email=test@meteor.zone"] + arguments,
            environment: ["GIT_CONFIG_NOSYSTEM": "1", "HOME": root.path])
        guard r.status == 0 else { throw Failure(message: "git \(arguments.joined(separator: " ")): \(r.output)") }
        return r.output
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Runs the CGI program for one request and turns its output (headers, blank line, body) into a response.
    static func cgi(
        root: URL, path: String, query: String, method: String = "GET", body: Data? = nil, contentType: String? = nil, contentEncoding: String? = nil,
        gitProtocol: String? = nil
    ) async throws -> Response {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: backend)
        var environment = [
            "GIT_PROJECT_ROOT": root.path, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
            "REQUEST_METHOD": method, "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        ]
        if let body { environment["CONTENT_LENGTH"] = String(body.count) }
        if let contentType { environment["CONTENT_TYPE"] = contentType }
        if let contentEncoding { environment["HTTP_CONTENT_ENCODING"] = contentEncoding }
        if let gitProtocol { environment["GIT_PROTOCOL"] = gitProtocol }
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        let input = Pipe()
        process.standardInput = body == nil ? FileHandle.nullDevice : input
        try process.run()
        if let body {
            // Written from a GCD thread: a large request can fill the pipe before the CGI reads it.
            let writer = input.fileHandleForWriting
            DispatchQueue.global().async {
                try? writer.write(contentsOf: body)
                try? writer.close()
            }
        }
        let handle = out.fileHandleForReading
        let data = await withCheckedContinuation { (c: CheckedContinuation<Data, Never>) in
            DispatchQueue.global().async {
                let d = PipeReader.readToEnd(handle.fileDescriptor)
                process.waitUntilExit()
                c.resume(returning: d)
            }
        }
        let bytes = Array(data)
        var headerEnd = bytes.count, bodyStart = bytes.count
        for i in 0..<bytes.count {
            if bytes[i] == 10, i + 1 < bytes.count, bytes[i + 1] == 10 { headerEnd = i; bodyStart = i + 2; break }
            if bytes[i] == 13, i + 3 < bytes.count, bytes[i + 1] == 10, bytes[i + 2] == 13, bytes[i + 3] == 10 {
                headerEnd = i; bodyStart = i + 4; break
            }
        }
        var status = HTTPResponse.Status.ok
        var headers = HTTPFields()
        for line in String(decoding: bytes[..<headerEnd], as: UTF8.self).split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name.lowercased() == "status" {
                status = HTTPResponse.Status(code: Int(value.prefix(3)) ?? 500)
            } else if let field = HTTPField.Name(name) {
                headers[field] = value
            }
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes[bodyStart...])))
    }
}

/// 401 with a Basic challenge unless the request carries the expected Authorization header.
struct BasicAuthGate: RouterMiddleware {
    typealias Context = BasicRequestContext
    let expected: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.headers[.authorization] == expected else {
            return Response(status: .unauthorized, headers: [.wwwAuthenticate: "Basic realm=\"git\""])
        }
        return try await next(request, context)
    }
}
