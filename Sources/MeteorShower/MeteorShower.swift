import Foundation
import HTTPTypes
import Hummingbird
import KubeClient
import KubeModels
import KubeRuntime
import Logging
import MeteorCore
import NIOCore
import ServiceLifecycle
import Synchronization
import Crypto

/// Meteor Shower: the operator's web page where a data scientist pastes a repository URL and watches the builds
/// finish. Pages render from the operator's informer cache; live updates are server-sent events fed by the same
/// cache, so the page never makes the API server do more work than the operator already does. Writes (submit,
/// delete) act as the person: the user (and configured groups) an authenticating proxy in front asserts, believed
/// only from the proxy's address, go to the API server as Kubernetes impersonation, so RBAC decides what each
/// person may do. They are also behind server-signed CSRF tokens and a bounded per-user rate limit.
public final class MeteorShower: Service, Sendable {
    public struct Options: Sendable {
        /// HOST:PORT to listen on (port 0 picks a free one).
        public var bindAddress: String
        /// Where Meteors are listed and submitted.
        public var namespace: String
        /// Submitting and deleting are off unless this is set.
        public var allowSubmit = false
        /// Without a user from a trusted proxy, writes are refused unless this is set; anonymous writes go with
        /// the operator's own identity (the sandbox's mode).
        public var allowAnonymous = false
        /// Peers whose user headers are believed: the authenticating proxy's addresses. Nobody else's are.
        public var trustedProxies: [AddressRange] = []
        /// The header an authenticating proxy in front sets to the signed-in user.
        public var userHeader = "X-Forwarded-User"
        /// The header it sets to the user's groups (comma-separated).
        public var groupsHeader = "X-Forwarded-Groups"
        /// Groups passed on to the API server when the proxy asserts them (the operator must be allowed to
        /// impersonate each); other groups are dropped.
        public var forwardedGroups: Set<String> = []
        /// Signs CSRF tokens; replicas behind one Service need the same key (`--shower-session-key-file`).
        public var sessionKey = SymmetricKey(size: .bits256)
        /// Writes per user (or, anonymous, per peer address) per minute, the burst allowed at once, and how many
        /// users and peers the limiter remembers.
        public var submitsPerMinute = 6
        public var submitBurst = 3
        public var rateLimitCapacity = 4096
        /// How many recent Events the detail page shows.
        public var eventLimit = 20

        public init(bindAddress: String, namespace: String) {
            self.bindAddress = bindAddress
            self.namespace = namespace
        }
    }

    /// Who submitted a Meteor through the page (the proxy's user, or `anonymous`).
    public static let submitterAnnotation = "meteor.zone/submitted-by"

    let options: Options
    let client: KubeClient
    let meteors: DynamicInformer
    let feed: MeteorFeed
    let limiter: SubmitRateLimiter
    let csrf: CSRFTokens
    let logger: Logger
    let listening = ListeningPort()
    /// Names a submit of this page is creating, or created before the cache showed them: concurrent submits of
    /// one repository take different names instead of all asking the API server for the first and being refused
    /// in turn.
    let creating = Mutex<Set<String>>([])

    /// `meteors` is the operator's Meteor informer (the page reads its cache and follows its events).
    public init(options: Options, client: KubeClient, meteors: DynamicInformer, logger: Logger) {
        self.options = options
        self.client = client
        self.meteors = meteors
        self.feed = MeteorFeed(namespace: options.namespace)
        self.limiter = SubmitRateLimiter(perMinute: options.submitsPerMinute, burst: options.submitBurst, capacity: options.rateLimitCapacity)
        self.csrf = CSRFTokens(key: options.sessionKey)
        self.logger = logger
    }

    /// The port actually bound, once listening.
    public var port: Int? { listening.port }

    /// Returns the port once the page is served.
    public func waitUntilListening() async -> Int? { await listening.wait() }

    public func run() async throws {
        await feed.attach(to: meteors)
        // A name this page created stays reserved until the cache shows its Meteor (then the cache says it is taken).
        await meteors.addHandler { [self] event in
            if case .added(let o) = event, let name = o[path: "metadata", "name"]?.stringValue { _ = self.creating.withLock { $0.remove(name) } }
        }
        guard let (host, port) = Manager.parseBindAddress(options.bindAddress) else {
            throw ShowerError(message: "--shower-bind-address must be HOST:PORT, got \(options.bindAddress)")
        }
        var quiet = logger
        quiet.logLevel = .warning
        let app = Application(
            router: router(), configuration: .init(address: .hostname(host, port: port), serverName: nil, reuseAddress: true),
            onServerRunning: { channel in
                let p = channel.localAddress?.port ?? 0
                self.logger.info(
                    "Meteor Shower serving",
                    metadata: ["address": "\(host):\(p)", "namespace": "\(self.options.namespace)", "submit": "\(self.options.allowSubmit)"])
                self.listening.listening(on: p)
            },
            logger: quiet)
        // As a service of the caller's group: it stops when that group shuts down, not on signals of its own (a
        // SIGTERM handler here would end the page before the operator and fail the group).
        try await withGracefulShutdownHandler {
            try await app.run()
        } onGracefulShutdown: {
            self.feed.finishAll()
        }
    }

    struct ShowerError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    // MARK: Routes

    func router() -> Router<ShowerContext> {
        let router = Router(context: ShowerContext.self)
        router.middlewares.add(SecurityHeaders())
        router.get("/") { request, context in self.home(request, context) }
        router.post("/meteors") { request, context in try await self.submit(request, context) }
        router.post("/environments") { request, context in try await self.submitEnvironment(request, context) }
        router.get("/environments/:name") { request, context in
            try await self.environmentPage(request, context, name: context.parameters.get("name") ?? "")
        }
        router.get("/meteors/:name") { request, context in try await self.detail(request, context, name: context.parameters.get("name") ?? "") }
        router.post("/meteors/:name/delete") { request, context in try await self.delete(request, context, name: context.parameters.get("name") ?? "")
        }
        router.get("/events") { request, _ in self.events(request) }
        router.get("/static/shower.css") { _, _ in Self.asset(Templates.stylesheet, type: "text/css; charset=utf-8") }
        router.get("/static/shower.js") { _, _ in Self.asset(Templates.script, type: "text/javascript; charset=utf-8") }
        router.get("/healthz") { _, _ in "ok" }
        return router
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "public, max-age=300"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Why writes are refused for this visitor, or nil when they are allowed.
    func writeRefusal(_ visitor: Visitor) -> String? {
        if !options.allowSubmit { return "Submitting is turned off on this server (start the operator with --shower-allow-submit)." }
        if visitor.user == nil && !options.allowAnonymous {
            return
                "Sign in to submit: this page takes the user from the authenticating proxy in front of it (\(options.userHeader), believed only from --shower-trusted-proxy addresses); anonymous submission is off (--shower-allow-anonymous)."
        }
        return nil
    }

    /// A page in the layout; `refresh` reloads it every so many seconds (a page the live updates do not feed).
    func page(
        _ visitor: Visitor, title: String, content: String, events: String, status: HTTPResponse.Status = .ok, csrf: String, refresh: Int? = nil
    ) -> Response {
        var context: [String: Any] = [
            "title": title, "content": content, "events": events, "namespace": options.namespace, "version": BuildInfo.version,
        ]
        if let refresh { context["refresh"] = refresh }
        if let user = visitor.user { context["user"] = user }
        let html = Templates.render("layout", context)
        var headers: HTTPFields = [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"]
        headers[.setCookie] = "\(CSRFTokens.cookie)=\(csrf); Path=/; HttpOnly; SameSite=Strict" + (visitor.secure ? "; Secure" : "")
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// This browser's token when this server minted it for this visitor, else a new one (set with every page).
    func csrfToken(_ request: Request, _ visitor: Visitor) -> String {
        if let existing = CSRFTokens.cookieValue(in: request.headers[.cookie]), csrf.verifies(existing, for: visitor.sessionIdentity) {
            return existing
        }
        return csrf.mint(for: visitor.sessionIdentity)
    }

    func rows() -> [[String: Any]] {
        MeteorViews.sorted(meteors.store.list(namespace: options.namespace)).map(MeteorViews.row)
    }

    func home(
        _ request: Request, _ shower: ShowerContext, form: [String: Any]? = nil, environment: [String: Any]? = nil, errors: [String: String] = [:],
        formError: String? = nil, environmentError: String? = nil, status: HTTPResponse.Status = .ok
    ) -> Response {
        let visitor = visitor(request, shower)
        let csrf = csrfToken(request, visitor)
        let chosenTTL = (form?["ttl"] as? String) ?? "86400"
        let chosenPython = (environment?["python"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? EnvironmentSubmission.pythons[0]
        var context: [String: Any] = [
            "rows": rows(), "csrf": csrf, "namespace": options.namespace, "errors": errors,
            "form": form ?? ["url": "", "ref": "main", "jupyterbook": true, "jupyterhub": true],
            "environment": environment ?? ["name": "", "packages": ""],
            "ttlChoices": TTLChoice.all.map { ["value": $0.value, "label": $0.label, "selected": $0.value == chosenTTL] as [String: Any] },
            "pythonChoices": EnvironmentSubmission.pythons.map { ["value": $0, "selected": $0 == chosenPython] as [String: Any] },
        ]
        if let refusal = writeRefusal(visitor) { context["submitRefused"] = refusal }
        if let formError { context["formError"] = formError }
        if let environmentError { context["environmentError"] = environmentError }
        return page(visitor, title: "Meteors", content: Templates.render("home", context), events: "/events", status: status, csrf: csrf)
    }

    func detail(_ request: Request, _ shower: ShowerContext, name: String) async throws -> Response {
        let visitor = visitor(request, shower)
        let csrf = csrfToken(request, visitor)
        var found = meteors.store.get(ObjectKey(namespace: options.namespace, name: name))
        if found == nil {
            // A submission redirects here at once, often before the cache has heard of the Meteor it created:
            // ask the API server rather than say "not found" about what the user just made.
            do {
                found = try await client.dynamic(Meteor.resourceType, namespace: options.namespace).get(name)
            } catch let e as KubeError where e.isNotFound {
            } catch {
                return message(
                    request, visitor, status: .badGateway, heading: "Cluster unavailable",
                    text: "Could not read \(name) from the API server: \(error)", csrf: csrf)
            }
        }
        guard let m = found else {
            return message(
                request, visitor, status: .notFound, heading: "Not found", text: "There is no Meteor named \(name) in \(options.namespace).",
                csrf: csrf)
        }
        var context = MeteorViews.detail(m, events: await recentEvents(name))
        context["csrf"] = csrf
        context["canDelete"] = writeRefusal(visitor) == nil
        return page(visitor, title: name, content: Templates.render("detail", context), events: "/events?meteor=\(name)", csrf: csrf)
    }

    func message(
        _ request: Request, _ visitor: Visitor, status: HTTPResponse.Status, heading: String, text: String, csrf: String? = nil,
        headers extra: HTTPFields = [:]
    ) -> Response {
        var response = page(
            visitor, title: heading, content: Templates.render("message", ["heading": heading, "text": text, "alert": status.code >= 400]),
            events: "", status: status, csrf: csrf ?? csrfToken(request, visitor))
        for field in extra { response.headers.append(field) }
        return response
    }

    /// Events about this Meteor, newest first (one list request per page view or change, never a poll).
    func recentEvents(_ name: String) async -> [JSONValue] {
        let api = client.dynamic(
            ResourceType(group: "", version: "v1", kind: "Event", plural: "events", namespaced: true), namespace: options.namespace)
        guard let list = try? await api.list(ListOptions(fieldSelector: "involvedObject.kind=Meteor,involvedObject.name=\(name)")) else { return [] }
        let stamp: (JSONValue) -> String = { $0["lastTimestamp"]?.stringValue ?? $0["eventTime"]?.stringValue ?? "" }
        return Array(list.items.sorted { stamp($0) > stamp($1) }.prefix(options.eventLimit))
    }

    // MARK: Writes

    /// Refuses a write that is off, anonymous or forged; nil when it may go ahead.
    func guardWrite(_ request: Request, _ visitor: Visitor, form csrfField: String?) -> Response? {
        if let refusal = writeRefusal(visitor) { return message(request, visitor, status: .forbidden, heading: "Not allowed", text: refusal) }
        if request.headers[HTTPField.Name("Sec-Fetch-Site")!] == "cross-site"
            || !csrf.accepts(cookie: CSRFTokens.cookieValue(in: request.headers[.cookie]), form: csrfField, identity: visitor.sessionIdentity)
        {
            logger.warning(
                "shower: refused a write without a valid CSRF token", metadata: ["path": "\(request.uri.path)", "peer": "\(visitor.peer)"])
            return message(
                request, visitor, status: .forbidden, heading: "Refused",
                text:
                    "The form's security token is missing, was not issued by this server, or was issued to someone else. Reload the page and try again."
            )
        }
        return nil
    }

    /// Refuses a write when this user (or anonymous peer) has used up its rate (only writes that reach the API
    /// server count).
    func rateLimit(_ request: Request, _ visitor: Visitor) -> Response? {
        guard let wait = limiter.take(visitor.rateLimitKey) else { return nil }
        let seconds = max(1, Int(wait.components.seconds) + 1)
        return message(
            request, visitor, status: .tooManyRequests, heading: "Slow down",
            text: "Too many submissions from \(visitor.user ?? visitor.peer); try again in \(seconds) s.", headers: [.retryAfter: "\(seconds)"])
    }

    /// The client a visitor's writes go through: acting as the signed-in user, or the operator's own when anonymous
    /// writes are allowed.
    func writer(_ visitor: Visitor) -> KubeClient {
        visitor.impersonation.map { client.impersonating($0) } ?? client
    }

    /// The API server's refusal of a write, said on the page with its words (RBAC's included) and a fitting code.
    static func refusalStatus(_ e: KubeError) -> HTTPResponse.Status {
        if e.isInvalid { return .unprocessableContent }
        if e.code == 403 { return .forbidden }
        return .badGateway
    }

    func submit(_ request: Request, _ context: ShowerContext) async throws -> Response {
        let visitor = visitor(request, context)
        let body = try await request.body.collect(upTo: 64 * 1024)
        let form = (try? URLEncodedFormDecoder().decode(SubmitForm.self, from: String(buffer: body))) ?? SubmitForm()
        if let refused = guardWrite(request, visitor, form: form.csrf) { return refused }
        let echo: [String: Any] = [
            "url": form.url ?? "", "ref": form.ref ?? "", "ttl": form.ttl ?? "",
            "jupyterbook": form.pipelines?.contains("jupyterbook") == true, "jupyterhub": form.pipelines?.contains("jupyterhub") == true,
        ]
        let (spec, errors) = Submission.validate(form)
        guard let spec else { return home(request, context, form: echo, errors: errors, status: .unprocessableContent) }
        if let limited = rateLimit(request, visitor) { return limited }
        let submitter = visitor.user ?? "anonymous"
        let api = writer(visitor).dynamic(Meteor.resourceType, namespace: options.namespace)
        let base = Submission.baseName(for: spec.url)
        for attempt in 0..<20 {
            let name = Submission.candidate(base, attempt: attempt)
            // Taken as far as the cache knows, or being created by another submit here: the next name, without a
            // request (the server still has the last word: another replica, a cache behind).
            if meteors.store.get(ObjectKey(namespace: options.namespace, name: name)) != nil { continue }
            guard creating.withLock({ $0.insert(name).inserted }) else { continue }
            var created = false
            defer { if !created { _ = creating.withLock { $0.remove(name) } } }
            var meteor = Meteor(metadata: ObjectMeta(name: name, namespace: options.namespace), spec: spec)
            meteor.metadata.annotations = [Self.submitterAnnotation: submitter]
            meteor.metadata.labels = ["app.kubernetes.io/created-by": "meteor-shower"]
            do {
                _ = try await api.create(
                    try JSONValue(encoding: meteor), params: WriteParams(fieldManager: "meteor-shower", fieldValidation: .strict))
                created = true
                logger.info(
                    "shower: submitted", metadata: ["meteor": "\(options.namespace)/\(name)", "url": "\(spec.url)", "submitter": "\(submitter)"])
                return Response(status: .seeOther, headers: [.location: "/meteors/\(name)"])
            } catch let e as KubeError where e.isAlreadyExists {
                continue
            } catch let e as KubeError {
                // The API server refused it (its RBAC for this user, the CRD's admission): its words against the form.
                logger.info("shower: a submit was refused", metadata: ["submitter": "\(submitter)", "error": "\(e)"])
                return home(
                    request, context, form: echo, formError: "The cluster refused this Meteor: \(e.status?.message ?? "\(e)")",
                    status: Self.refusalStatus(e))
            }
        }
        return home(
            request, context, form: echo, formError: "Could not find a free name for \(base); delete old Meteors and try again.", status: .conflict)
    }

    func delete(_ request: Request, _ context: ShowerContext, name: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 16 * 1024)
        let form = (try? URLEncodedFormDecoder().decode(SubmitForm.self, from: String(buffer: body))) ?? SubmitForm()
        let visitor = visitor(request, context)
        if let refused = guardWrite(request, visitor, form: form.csrf) ?? rateLimit(request, visitor) { return refused }
        do {
            try await writer(visitor).dynamic(Meteor.resourceType, namespace: options.namespace).delete(name)
            logger.info("shower: deleted", metadata: ["meteor": "\(options.namespace)/\(name)", "by": "\(visitor.user ?? "anonymous")"])
        } catch let e as KubeError where e.isNotFound {
        } catch let e as KubeError {
            return message(
                request, visitor, status: Self.refusalStatus(e), heading: "Not deleted",
                text: "The cluster refused to delete \(name): \(e.status?.message ?? "\(e)")")
        }
        return Response(status: .seeOther, headers: [.location: "/"])
    }

    // MARK: Live updates

    /// Server-sent events: the home page gets `reset` (names present) then `row`/`gone`; a detail page
    /// (`?meteor=NAME`) gets `detail` for that Meteor. Fed by informer events; a comment every 15 s keeps proxies
    /// from closing an idle stream.
    func events(_ request: Request) -> Response {
        let only = request.uri.queryParameters.get("meteor")
        let subscription = feed.subscribe()
        let body = ResponseBody { writer in
            defer { subscription.cancel() }
            if let only {
                if let m = self.meteors.store.get(ObjectKey(namespace: self.options.namespace, name: only)) {
                    try await writer.write(ByteBuffer(string: await self.detailEvent(m)))
                }
            } else {
                let current = MeteorViews.sorted(self.meteors.store.list(namespace: self.options.namespace))
                try await writer.write(ByteBuffer(string: Self.sse("reset", .array(current.map { .string(MeteorViews.name($0)) }))))
                for m in current.reversed() { try await writer.write(ByteBuffer(string: Self.rowEvent(m))) }
            }
            for await change in subscription.stream {
                let text: String
                switch change {
                case .heartbeat: text = ": keep-alive\n\n"
                case .changed(let m):
                    if let only {
                        guard MeteorViews.name(m) == only else { continue }
                        text = await self.detailEvent(m)
                    } else {
                        text = Self.rowEvent(m)
                    }
                case .deleted(let m):
                    if let only, MeteorViews.name(m) != only { continue }
                    text = Self.sse("gone", ["name": .string(MeteorViews.name(m))])
                }
                try await writer.write(ByteBuffer(string: text))
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store", HTTPField.Name("X-Accel-Buffering")!: "no"],
            body: body)
    }

    static func rowEvent(_ m: JSONValue) -> String {
        sse("row", ["name": .string(MeteorViews.name(m)), "html": .string(Templates.render("row", MeteorViews.row(m)))])
    }

    func detailEvent(_ m: JSONValue) async -> String {
        let context = MeteorViews.detail(m, events: await recentEvents(MeteorViews.name(m)))
        return Self.sse("detail", ["name": .string(MeteorViews.name(m)), "html": .string(Templates.render("detailBody", context))])
    }

    /// One SSE message; JSON keeps the data on one line.
    static func sse(_ event: String, _ data: JSONValue) -> String {
        "event: \(event)\ndata: \(data.serializedString())\n\n"
    }
}

/// The request context: Hummingbird's basics plus the peer address (the rate limit's key when no user is known).
public struct ShowerContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Headers every response carries: no framing by other sites, no sniffing, a strict content policy (every script
/// and style is served from here), and no referrer leaking repository URLs.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = ShowerContext
    func handle(_ request: Request, context: ShowerContext, next: (Request, ShowerContext) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        response.headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return response
    }
}
