import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A loopback HTTP server that answers as an attacker's git host or registry would, for tests of what the operator
/// fetches: redirects (to other hosts, to loopback ports, in a loop), bodies that never end or never stop, token
/// realms that point elsewhere. It records every request (path and whether it carried credentials).
public final class HostileHTTPServer: Sendable {
    /// What the server does with a request.
    public enum Answer: Sendable {
        /// A status with headers and a body.
        case reply(Int, headers: [(String, String)] = [], body: String = "")
        /// A redirect (302) to `location`.
        case redirect(String)
        /// 200, then one byte every `interval`, never finishing.
        case trickle(Duration)
        /// 200 with `bytes` bytes of JSON-looking filler.
        case huge(Int)
    }

    public struct Seen: Sendable, Equatable {
        public var path: String
        public var authorization: String?
    }

    final class Log: Sendable {
        let seen = Mutex<[Seen]>([])
    }

    public let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let log: Log

    /// `answer` decides from the path and query.
    public static func start(_ answer: @escaping @Sendable (_ path: String, _ query: String) -> Answer) async throws -> HostileHTTPServer {
        let log = Log()
        let router = Router()
        router.on("**", method: .get) { request, _ -> Response in
            log.seen.withLock { $0.append(Seen(path: request.uri.path, authorization: request.headers[.authorization])) }
            switch answer(request.uri.path, request.uri.query ?? "") {
            case .reply(let code, let headers, let body):
                var fields = HTTPFields()
                for (k, v) in headers { if let name = HTTPField.Name(k) { fields.append(HTTPField(name: name, value: v)) } }
                return Response(status: .init(code: code), headers: fields, body: .init(byteBuffer: ByteBuffer(string: body)))
            case .redirect(let location):
                return Response(status: .found, headers: [.location: location])
            case .trickle(let interval):
                return Response(
                    status: .ok, headers: [.contentType: "application/x-git-upload-pack-advertisement"],
                    body: ResponseBody { writer in
                        while !Task.isCancelled {
                            try await writer.write(ByteBuffer(string: "0"))
                            try await Task.sleep(for: interval)
                        }
                        try await writer.finish(nil)
                    })
            case .huge(let bytes):
                let chunk = ByteBuffer(string: String(repeating: " ", count: 64 * 1024))
                return Response(
                    status: .ok, headers: [.contentType: "application/vnd.oci.image.manifest.v1+json"],
                    body: ResponseBody { writer in
                        var sent = 0
                        while sent < bytes {
                            try await writer.write(chunk)
                            sent += chunk.readableBytes
                        }
                        try await writer.finish(nil)
                    })
            }
        }
        let (bound, continuation) = AsyncStream<Int>.makeStream()
        let quiet = Logger(label: "hostile-http", factory: { _ in SwiftLogNoOpLogHandler() })
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [app], logger: quiet))
        let task = Task { try await group.run() }
        var port = 0
        for await p in bound { port = p }
        return HostileHTTPServer(port: port, group: group, task: task, log: log)
    }

    init(port: Int, group: ServiceGroup, task: Task<Void, any Error>, log: Log) {
        self.port = port
        self.group = group
        self.task = task
        self.log = log
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var requests: [Seen] { log.seen.withLock { $0 } }

    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}
