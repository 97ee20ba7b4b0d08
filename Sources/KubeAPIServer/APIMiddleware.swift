import Foundation
import HTTPTypes
import Hummingbird
import KubeModels
import NIOCore
import Synchronization

/// What the embedded server's handler chain learns about a request as it passes through, as kube-apiserver's
/// request context carries its RequestInfo and user: the parse (once, by the request log), who is asking (by
/// authentication), and whether the request is an unauthenticated one to a public path.
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var info = RequestInfo(method: .get, path: "/", query: [:])
    var query: [String: String] = [:]
    /// Written by authentication, read back by the request log that wraps it (shared: each middleware passes on a
    /// copy of the context).
    let caller = CallerSlot()
    /// Served without authentication (`/healthz`, `/version`…): no faults are injected.
    var isPublic = false

    init(source: Source) { coreContext = .init(source: source) }
}

final class CallerSlot: Sendable {
    let value = Mutex<Caller?>(nil)
}

/// The chain, outermost first: the request log, the Status errors, authentication, injected faults.
struct APIServerResponder: HTTPResponder {
    typealias Context = APIRequestContext
    let middleware: any MiddlewareProtocol<Request, Response, APIRequestContext>
    let handler: APIRequestHandler

    init(handler: APIRequestHandler) {
        self.handler = handler
        middleware = Self.chain(faults: handler.faults, authentication: handler.authentication)
    }

    @MiddlewareFixedTypeBuilder<Request, Response, APIRequestContext>
    static func chain(faults: FaultInjector, authentication: Authentication) -> some MiddlewareProtocol<Request, Response, APIRequestContext> {
        RequestLogMiddleware(faults: faults)
        StatusErrorMiddleware()
        AuthenticationMiddleware(faults: faults, authentication: authentication)
        FaultMiddleware(faults: faults)
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        try await middleware.handle(request, context: context) { request, context in try await handler.respond(to: request, context: context) }
    }
}

/// Parses the request once (`RequestInfo`) and records every request — verb, path, code, user — in the request
/// log tests and the sandbox read.
struct RequestLogMiddleware: RouterMiddleware {
    let faults: FaultInjector

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.query = APIRequestHandler.parseQuery(request.uri.query ?? "")
        context.info = RequestInfo(method: request.method, path: request.uri.path, query: context.query)
        let response = try await next(request, context)
        let userAgent = request.headers[.userAgent] ?? ""
        let caller = context.caller.value.withLock { $0 } ?? Caller(userAgent: userAgent, requester: .admin)
        faults.record(
            RequestRecord(
                verb: context.info.verb.description, method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
                userAgent: userAgent, code: response.status.code, time: Date(), user: caller.user.name,
                impersonatedBy: caller.impersonation == nil ? nil : caller.requester.name))
        return response
    }
}

/// What the chain throws, answered as kube-apiserver answers it: a `Status` object with the code.
struct StatusErrorMiddleware: RouterMiddleware {
    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return APIRequestHandler.statusResponse(e)
        } catch let e as JSONParseError {
            return APIRequestHandler.statusResponse(APIError.badRequest("error decoding request body: \(e)"))
        } catch let e as YAML.Error {
            return APIRequestHandler.statusResponse(APIError.badRequest(e.message))
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return APIRequestHandler.statusResponse(
                APIError(code: 500, reason: StatusReason.internalError, message: "Internal error occurred: \(error)"))
        }
    }
}

/// 503 while the server stops; the bearer token, checked when a request starts as kube-apiserver does (a watch
/// already streaming outlives the token it began with), and impersonation headers. Public paths are served without
/// a token.
struct AuthenticationMiddleware: RouterMiddleware {
    let faults: FaultInjector
    let authentication: Authentication

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        if faults.stopping.withLock({ $0 }) {
            throw APIError(code: 503, reason: StatusReason.serviceUnavailable, message: "the server is shutting down")
        }
        let userAgent = request.headers[.userAgent] ?? ""
        guard let requester = authentication.authenticate(request.headers[.authorization]) else {
            guard APIRequestHandler.isPublic(request.uri.path) else {
                throw APIError(code: 401, reason: StatusReason.unauthorized, message: "Unauthorized")
            }
            var context = context
            context.isPublic = true
            context.caller.value.withLock { $0 = Caller(userAgent: userAgent, requester: .admin) }
            return try await next(request, context)
        }
        let caller = Caller(
            userAgent: userAgent, requester: requester,
            impersonation: try Authentication.requestedImpersonation(
                user: request.headers[HTTPField.Name("Impersonate-User")!], groups: request.headers[values: HTTPField.Name("Impersonate-Group")!],
                uid: request.headers[HTTPField.Name("Impersonate-Uid")!]))
        context.caller.value.withLock { $0 = caller }
        return try await next(request, context)
    }
}

/// Faults a test aimed at this request (`FaultInjector`, by verb, path and user agent): an error status, a delay,
/// a hold, or a watch that is dead, trickles, or is expired at once.
struct FaultMiddleware: RouterMiddleware {
    let faults: FaultInjector

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        guard !context.isPublic,
            let fault = faults.take(verb: context.info.verb.description, path: request.uri.path, userAgent: request.headers[.userAgent] ?? "")
        else { return try await next(request, context) }
        switch fault {
        case .status(let code, let retryAfter):
            throw Self.injected(code: code, retryAfter: retryAfter)
        case .delay(let d):
            try await Task.sleep(for: d)
        case .hold:
            await faults.hold()
        case .silentWatch:
            return deadWatch(trickle: nil)
        case .tricklingWatch(let interval):
            return deadWatch(trickle: interval)
        case .expiredWatch:
            let line = APIRequestHandler.errorFrame(Status(message: "too old resource version (injected)", reason: StatusReason.expired, code: 410))
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: line)))
        }
        return try await next(request, context)
    }

    /// A 200 watch that never delivers an event (nothing at all, or one byte of an event that never ends per
    /// `trickle`) and stays open until the client goes or the server stops, whatever its `timeoutSeconds`.
    func deadWatch(trickle: Duration?) -> Response {
        let faults = self.faults
        let body = ResponseBody { writer in
            let partial = Array(#"{"type":"ADDED","object":{"kind":"#.utf8)
            var sent = 0
            while !faults.stopping.withLock({ $0 }) {
                try await Task.sleep(for: trickle ?? .milliseconds(100))
                if trickle != nil {
                    // The start of an event, then JSON whitespace: never a complete line.
                    try await writer.write(ByteBuffer(bytes: [sent < partial.count ? partial[sent] : UInt8(ascii: " ")]))
                    sent += 1
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
    }

    static func injected(code: Int, retryAfter: Int?) -> APIError {
        switch code {
        case 409:
            return APIError(
                code: 409, reason: StatusReason.conflict,
                message:
                    "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected)"
            )
        case 429:
            return APIError(
                code: 429, reason: StatusReason.tooManyRequests, message: "Too many requests, please try again later. (injected)",
                details: StatusDetails(retryAfterSeconds: retryAfter ?? 1), retryAfter: retryAfter ?? 1)
        case 503:
            return APIError(
                code: 503, reason: StatusReason.serviceUnavailable, message: "The server is currently unable to handle the request (injected)",
                retryAfter: retryAfter)
        case 410: return APIError.gone("too old resource version (injected)")
        default:
            return APIError(
                code: code, reason: StatusReason.internalError, message: "Internal error occurred: injected fault", retryAfter: retryAfter)
        }
    }
}
