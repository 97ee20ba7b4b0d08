import Foundation
import HTTPTypes
import Hummingbird
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import NIOCore
import ServiceLifecycle
import Synchronization

/// The push webhook endpoint: `POST /hooks/git` from GitHub or GitLab, authenticated with a shared secret
/// (`GitPushHook`). A push only makes the operator look at the repositories it names again (`onPush`); the answer
/// says how many Meteors and environments were queued.
public final class GitWebhook: Service, Sendable {
    public struct Options: Sendable {
        /// HOST:PORT to listen on (port 0 picks a free one).
        public var bindAddress: String
        /// The secret the webhooks are configured with.
        public var secret: [UInt8]
        /// The largest payload read (GitHub's are at most 25 MB; pushes are far smaller).
        public var maxBodyBytes = 5 * 1024 * 1024

        public init(bindAddress: String, secret: [UInt8]) {
            self.bindAddress = bindAddress
            self.secret = secret
        }
    }

    public static let path = "/hooks/git"

    let options: Options
    let onPush: @Sendable ([String]) async -> Int
    let logger: Logger
    let listening = ListeningPort()

    /// `onPush` gets the repository URLs of an authenticated push and returns how many objects it queued
    /// (`GitPushHook.trigger`).
    public init(options: Options, onPush: @escaping @Sendable ([String]) async -> Int, logger: Logger) {
        self.options = options
        self.onPush = onPush
        self.logger = logger
    }

    /// The port actually bound, once listening.
    public var port: Int? { listening.port }

    /// Returns the port once the endpoint is served.
    public func waitUntilListening() async -> Int? { await listening.wait() }

    public func run() async throws {
        guard let (host, port) = Manager.parseBindAddress(options.bindAddress) else {
            throw Failure(message: "--git-webhook-bind-address must be HOST:PORT, got \(options.bindAddress)")
        }
        let router = Router()
        router.post(RouterPath(stringLiteral: Self.path)) { request, _ in try await self.handle(request) }
        router.get("/healthz") { _, _ in "ok" }
        var quiet = logger
        quiet.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                let p = channel.localAddress?.port ?? 0
                self.logger.info("git push webhook serving", metadata: ["address": "\(host):\(p)", "path": "\(Self.path)"])
                self.listening.listening(on: p)
            },
            logger: quiet)
        try await app.run()
    }

    func handle(_ request: Request) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: options.maxBodyBytes)
        } catch {
            return Self.reply(.contentTooLarge, ["message": .string("the payload is larger than \(options.maxBodyBytes) bytes")])
        }
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName.lowercased()] = field.value }
        do {
            switch try GitPushHook.read(headers: headers, body: Array(buffer: body), secret: options.secret) {
            case .push(let urls):
                let queued = await onPush(urls)
                logger.info("git push webhook: repositories to look at again", metadata: ["repositories": "\(urls)", "queued": "\(queued)"])
                return Self.reply(.accepted, ["repositories": .array(urls.map(JSONValue.string)), "queued": .int(Int64(queued))])
            case .ignored(let why):
                return Self.reply(.ok, ["ignored": .string(why)])
            }
        } catch let refusal as GitPushHook.Refusal {
            logger.warning("git push webhook: refused", metadata: ["reason": "\(refusal.message)"])
            return Self.reply(HTTPResponse.Status(code: refusal.status), ["message": .string(refusal.message)])
        }
    }

    static func reply(_ status: HTTPResponse.Status, _ body: JSONObject) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: JSONValue.object(body).serializedString())))
    }

    struct Failure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
