import Synchronization
import Foundation
import Hummingbird
import HTTPTypes
import KubeModels
import NIOCore

/// The end of kube-apiserver's handler chain (`APIServerResponder` runs the request log, errors, authentication
/// and faults before it): routing, authorization, content negotiation (JSON, YAML bodies, Table output), watch
/// streaming, onto `APIServerCore`.
struct APIRequestHandler: HTTPResponder {
    typealias Context = APIRequestContext

    let core: APIServerCore
    let faults: FaultInjector
    /// Who a bearer token stands for, and what they may do.
    let authentication: Authentication
    let serverAddress: @Sendable () -> String
    let bookmarkInterval: Duration
    let defaultWatchTimeout: Duration
    static let maxBodyBytes = 3 * 1024 * 1024

    /// The end of the chain (`APIServerResponder`): the request parsed, its caller authenticated, its faults
    /// injected.
    func respond(to request: Request, context: Context) async throws -> Response {
        let caller = context.caller.value.withLock { $0 } ?? Caller(userAgent: request.headers[.userAgent] ?? "", requester: .admin)
        return try await route(request, context.info, query: context.query, caller: caller)
    }

    static func isPublic(_ path: String) -> Bool {
        ["/healthz", "/readyz", "/livez", "/version"].contains(path)
    }

    static func parseQuery(_ q: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in q.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)
            }
            out[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return out
    }

    static func isTrue(_ v: String?) -> Bool { v == "true" || v == "1" }

    // MARK: Routing

    func route(_ request: Request, _ info: RequestInfo, query: [String: String], caller: Caller) async throws -> Response {
        if let target = info.resource { return try await resource(request, target, verb: info.verb, query: query, caller: caller) }
        let segments = info.segments
        switch segments.first {
        case nil:
            return Self.json(["paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]])
        case "healthz", "readyz", "livez":
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "ok")))
        case "version":
            return Self.json([
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-meteor-embedded", "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
            ])
        case "openapi":
            if segments.count == 2, segments[1] == "v2" { return Self.openAPIV2(accept: request.headers[.accept] ?? "") }
            return try openAPI(segments)
        case "api":
            if segments.count == 1 { return Self.json(Discovery.apiVersions(serverAddress: serverAddress())) }
            if segments.count == 2 {
                guard let list = Discovery.resourceList(core.registry, group: "", version: segments[1]) else { throw APIError.pathNotFound() }
                return Self.json(list)
            }
            throw APIError.pathNotFound()
        case "apis":
            if segments.count == 1 { return Self.json(Discovery.groupList(core.registry)) }
            if segments.count == 2 {
                guard let g = core.registry.groups().first(where: { $0.0 == segments[1] }) else { throw APIError.pathNotFound() }
                return Self.json(Discovery.group(g.0, versions: g.1))
            }
            if segments.count == 3 {
                guard let list = Discovery.resourceList(core.registry, group: segments[1], version: segments[2]) else {
                    throw APIError.pathNotFound()
                }
                return Self.json(list)
            }
            throw APIError.pathNotFound()
        default:
            throw APIError.pathNotFound()
        }
    }

    /// kubectl 1.27 and 1.28 read `/openapi/v2` as protobuf before applying. Schemas are served through v3; here
    /// an empty document (zero protobuf bytes) says "no v2 schemas", and kubectl falls back to its own scheme.
    static func openAPIV2(accept: String) -> Response {
        if accept.contains("protobuf") {
            return Response(status: .ok, headers: [.contentType: "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"], body: .init())
        }
        return json(["swagger": "2.0", "info": ["title": "Kubernetes", "version": "v1.33.0"], "paths": [:], "definitions": [:]])
    }

    func openAPI(_ segments: [String]) throws -> Response {
        guard segments.count >= 2, segments[1] == "v3" else { throw APIError.pathNotFound() }
        if segments.count == 2 { return Self.json(Discovery.openAPIRoot(core.registry)) }
        let rest = Array(segments.dropFirst(2))
        let doc: JSONValue?
        if rest.first == "api", rest.count == 2 {
            doc = Discovery.openAPIGroupVersion(core.registry, group: "", version: rest[1])
        } else if rest.first == "apis", rest.count == 3 {
            doc = Discovery.openAPIGroupVersion(core.registry, group: rest[1], version: rest[2])
        } else {
            doc = nil
        }
        guard let doc else { throw APIError.pathNotFound() }
        return Self.json(doc)
    }

    func resource(
        _ request: Request, _ target: RequestInfo.Resource, verb: RequestInfo.Verb, query: [String: String], caller: Caller
    ) async throws -> Response {
        let userAgent = caller.userAgent
        let (group, version, namespace) = (target.group, target.version, target.namespace)
        guard let plural = target.plural, target.parts.count <= 3 else { throw APIError.pathNotFound() }
        guard let served = core.registry.lookup(group: group, version: version, plural: plural) else { throw APIError.pathNotFound() }
        if namespace != nil && !served.namespaced { throw APIError.pathNotFound() }
        let name = target.name
        var subresource = target.subresource
        if subresource == "finalize" && served.key == APIServerCore.namespacesKey { subresource = nil }
        if let subresource, subresource != "status" || !served.hasStatus { throw APIError.pathNotFound() }
        if served.namespaced, namespace == nil, name != nil { throw APIError.pathNotFound() }
        let scope = RequestScope(resource: served, version: version, namespace: namespace, name: name, subresource: subresource)
        var attributes = AuthorizationAttributes(
            user: caller.requester, verb: verb.description, apiGroup: group, resource: plural, subresource: subresource, namespace: namespace,
            name: name)
        if let impersonation = caller.impersonation {
            attributes.user = try authentication.impersonate(caller.requester, impersonation, for: attributes)
        }
        if !authentication.authorize(attributes) { throw Authentication.forbidden(attributes) }
        let accept = request.headers[.accept] ?? ""
        let wantsTable = accept.contains("as=Table")

        switch verb {
        case .get:
            let obj = try core.get(scope)
            if wantsTable {
                return Self.json(
                    TableConvertor.table(
                        [obj], resource: served, version: version, listMeta: ["resourceVersion": obj[path: "metadata", "resourceVersion"] ?? ""],
                        includeObject: query["includeObject"] ?? "PartialObjectMetadata"))
            }
            return Self.json(obj)
        case .list:
            return try list(scope, query: query, wantsTable: wantsTable)
        case .watch:
            return try watch(scope, query: query, wantsTable: wantsTable)
        case .create:
            if served.namespaced && namespace == nil { throw APIError.pathNotFound() }
            if name != nil { throw APIError.methodNotAllowed() }
            let body = try await readBody(request)
            if Authentication.reviewKeys.contains(served.key) { return Self.json(try authentication.review(served.key, body), status: .created) }
            let result = try core.create(scope, body: body, options: writeOptions(query, userAgent: userAgent))
            return Self.json(result.value, status: .init(code: result.code), warnings: result.warnings)
        case .update:
            guard name != nil else { throw APIError.methodNotAllowed() }
            let body = try await readBody(request)
            let result = try core.update(scope, body: body, options: writeOptions(query, userAgent: userAgent))
            return Self.json(result.value, status: .init(code: result.code), warnings: result.warnings)
        case .patch:
            guard name != nil else { throw APIError.methodNotAllowed() }
            let contentType = (request.headers[.contentType] ?? "").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard let type = PatchType(rawValue: contentType) else {
                throw APIError(
                    code: 415, reason: StatusReason.unsupportedMediaType,
                    message:
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                )
            }
            let body = try await readBody(request, yaml: type == .apply)
            let result = try core.patch(scope, type: type, patch: body, options: writeOptions(query, userAgent: userAgent))
            return Self.json(result.value, status: .init(code: result.code), warnings: result.warnings)
        case .delete:
            let body = try await readBody(request, allowEmpty: true)
            var options = APIServerCore.DeleteOptions()
            options.propagationPolicy = try Self.propagation(
                body["orphanDependents"]?.boolValue == true
                    ? DeletionPropagation.orphan.rawValue : query["propagationPolicy"] ?? body["propagationPolicy"]?.stringValue)
            options.preconditionUID = body[path: "preconditions", "uid"]?.stringValue
            options.preconditionRV = body[path: "preconditions", "resourceVersion"]?.stringValue
            options.dryRun = query["dryRun"] == "All" || (body["dryRun"]?.arrayValue?.isEmpty == false)
            let result = try core.delete(scope, options: options)
            return Self.json(result.value, status: .init(code: result.code))
        case .deletecollection:
            let selector = try LabelSelector.parseOrBadRequest(query["labelSelector"] ?? "")
            let listed = try core.list(
                scope, labelSelector: selector,
                fieldSelector: try FieldSelector.parseOrBadRequest(query["fieldSelector"], resourceKey: scope.resource.key), limit: nil,
                continueToken: nil)
            let propagation = try Self.propagation(query["propagationPolicy"])
            var deleted: [JSONValue] = []
            for o in listed.items {
                let s = RequestScope(resource: served, version: version, namespace: served.namespaced ? o.namespace : nil, name: o.name)
                if (try? core.delete(s, options: .init(propagationPolicy: propagation))) != nil { deleted.append(o.value) }
            }
            return Self.json(["kind": .string(served.listKind), "apiVersion": .string(scope.apiVersion), "metadata": [:], "items": .array(deleted)])
        default:
            throw APIError.methodNotAllowed()
        }
    }

    func writeOptions(_ query: [String: String], userAgent: String) throws -> WriteOptions {
        var o = WriteOptions()
        o.dryRun = query["dryRun"] == "All"
        if let d = query["dryRun"], !d.isEmpty, d != "All" {
            throw APIError.invalid(
                kind: "CreateOptions", group: "meta.k8s.io", name: "", field: "dryRun", reason: "FieldValueNotSupported",
                message: "Unsupported value: \"\(d)\": supported values: \"All\"")
        }
        o.fieldManager = query["fieldManager"]
        if let asked = query["fieldValidation"] {
            guard let validation = FieldValidation(rawValue: asked) else {
                let known = FieldValidation.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
                throw APIError.badRequest("fieldValidation must be one of \(known); got \(asked)")
            }
            o.fieldValidation = validation
        }
        o.force = Self.isTrue(query["force"])
        o.userAgent = userAgent
        return o
    }

    /// A delete's propagation policy; an unknown one is refused as kube-apiserver refuses it.
    static func propagation(_ asked: String?) throws -> DeletionPropagation? {
        guard let asked else { return nil }
        guard let policy = DeletionPropagation(rawValue: asked) else {
            throw APIError.invalid(
                kind: "DeleteOptions", group: "meta.k8s.io", name: "", field: "propagationPolicy", reason: "FieldValueNotSupported",
                message: "Unsupported value: \"\(asked)\": supported values: \(DeletionPropagation.supportedValues)")
        }
        return policy
    }

    func readBody(_ request: Request, yaml: Bool = false, allowEmpty: Bool = false) async throws -> JSONValue {
        // Read the whole body even past the limit (up to a hard cap), so the client gets a clean 413 rather than
        // a connection cut mid-upload.
        var buffer = ByteBuffer()
        var total = 0
        for try await chunk in request.body {
            total += chunk.readableBytes
            if total <= Self.maxBodyBytes {
                var c = chunk
                buffer.writeBuffer(&c)
            } else if total > 16 * Self.maxBodyBytes {
                break
            }
        }
        if total > Self.maxBodyBytes {
            throw APIError(code: 413, reason: StatusReason.requestEntityTooLarge, message: "Request entity too large: limit is \(Self.maxBodyBytes)")
        }
        let bytes = buffer.readableBytesView
        if bytes.isEmpty {
            if allowEmpty { return .object([:]) }
            throw APIError.badRequest("the body of the request was empty")
        }
        let contentType = request.headers[.contentType] ?? ""
        if contentType.contains("protobuf") {
            // Protobuf is not served; client-go falls back to JSON on 415.
            throw APIError(
                code: 415, reason: StatusReason.unsupportedMediaType,
                message: "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml")
        }
        if yaml || contentType.contains("yaml") {
            let text = String(decoding: bytes, as: UTF8.self)
            return try YAML.parse(text)
        }
        do {
            return try JSONValue.parse(bytes)
        } catch let e as JSONParseError {
            throw APIError.badRequest("the server rejected our request due to an error in our request: \(e)")
        }
    }

    // MARK: List and watch

    func list(_ scope: RequestScope, query: [String: String], wantsTable: Bool) throws -> Response {
        let selector = try LabelSelector.parseOrBadRequest(query["labelSelector"] ?? "")
        let fields = try FieldSelector.parseOrBadRequest(query["fieldSelector"], resourceKey: scope.resource.key)
        let limit = query["limit"].flatMap(Int.init)
        let result = try core.list(scope, labelSelector: selector, fieldSelector: fields, limit: limit, continueToken: query["continue"])
        var listMeta: JSONObject = ["resourceVersion": .string(String(result.rv))]
        if let c = result.continueToken { listMeta["continue"] = .string(c) }
        if let r = result.remaining { listMeta["remainingItemCount"] = .int(r) }
        let r = scope.resource
        if wantsTable {
            let objects = result.items.map { core.present($0.value, version: scope.version, resource: r) }
            return Self.json(
                TableConvertor.table(
                    objects, resource: r, version: scope.version, listMeta: .object(listMeta),
                    includeObject: query["includeObject"] ?? "PartialObjectMetadata"))
        }
        // Splice the stored bytes into the list rather than re-serialising every object.
        var out: [UInt8] = []
        out.reserveCapacity(result.items.reduce(128) { $0 + $1.bytes.count + 1 })
        out += Array("{\"kind\":\"\(r.listKind)\",\"apiVersion\":\"\(scope.apiVersion)\",\"metadata\":".utf8)
        JSONValue.object(listMeta).write(to: &out)
        out += Array(",\"items\":[".utf8)
        for (i, o) in result.items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            if scope.version == r.storageVersion {
                out += o.bytes
            } else {
                core.present(o.value, version: scope.version, resource: r).write(to: &out)
            }
        }
        out += Array("]}".utf8)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: out)))
    }

    func watch(_ scope: RequestScope, query: [String: String], wantsTable: Bool) throws -> Response {
        let selector = try LabelSelector.parseOrBadRequest(query["labelSelector"] ?? "")
        let fields = try FieldSelector.parseOrBadRequest(query["fieldSelector"], resourceKey: scope.resource.key)
        let rvParam = query["resourceVersion"] ?? ""
        let from: UInt64?
        if rvParam.isEmpty || rvParam == "0" {
            from = nil
        } else {
            guard let v = UInt64(rvParam) else { throw APIError.badRequest("invalid resource version: \(rvParam)") }
            from = v
        }
        let bookmarks = Self.isTrue(query["allowWatchBookmarks"])
        let streamingList = try Self.streamingList(query)
        let timeout = query["timeoutSeconds"].flatMap(Int.init).map { Duration.seconds($0) } ?? defaultWatchTimeout
        let filter = WatchFilter(resourceKey: scope.resource.key, namespace: scope.namespace, labelSelector: selector, fieldSelector: fields)
        let store = core.store
        // A custom resource's watch cache begins with its CRD's storage: versions before that are too old, as on
        // kube-apiserver (HTTP 200, then an ERROR event with 410 Expired). Streaming lists send the current state.
        var tooOld: String?
        if let from, streamingList != true, scope.resource.isCustom,
            let crd = scope.resource.crdName.flatMap({ self.core.store.get(APIServerCore.crdKey, "/" + $0) }), from < crd.rv
        {
            tooOld = "too old resource version: \(from) (\(crd.rv))"
        }
        let (stream, id): (AsyncStream<WatchFrame>, id: Int)
        if let tooOld {
            (stream, id) = Self.goneStream(message: tooOld)
        } else {
            (stream, id) = store.watch(
                filter, from: from, sendInitialState: streamingList ?? (from == nil), markInitialEventsEnd: streamingList == true && bookmarks)
        }
        let r = scope.resource
        let version = scope.version
        let core = self.core
        let bookmarkInterval = self.bookmarkInterval
        let body = ResponseBody { writer in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Task.sleep(for: timeout)
                    store.stopWatch(id)
                }
                if bookmarks {
                    group.addTask {
                        while true {
                            try await Task.sleep(for: bookmarkInterval)
                            store.bookmark(id)
                        }
                    }
                }
                var first = true
                defer { store.stopWatch(id) }
                for await frame in stream {
                    var line: [UInt8] = []
                    switch frame {
                    case .event(let type, let o):
                        line += Array("{\"type\":\"\(type.rawValue)\",\"object\":".utf8)
                        if wantsTable {
                            let value = core.present(o.value, version: version, resource: r)
                            TableConvertor.table(
                                [value], resource: r, version: version, listMeta: ["resourceVersion": .string(String(o.rv))],
                                includeObject: query["includeObject"] ?? "PartialObjectMetadata", withColumns: first
                            ).write(to: &line)
                            first = false
                        } else if version == r.storageVersion {
                            line += o.bytes
                        } else {
                            core.present(o.value, version: version, resource: r).write(to: &line)
                        }
                        line += Array("}\n".utf8)
                    case .bookmark(let rv):
                        guard bookmarks else { continue }
                        let obj: JSONValue = [
                            "kind": .string(r.kind), "apiVersion": .string(r.apiVersion(version)),
                            "metadata": ["resourceVersion": .string(String(rv))],
                        ]
                        line = JSONValue.object(["type": "BOOKMARK", "object": obj]).serialized() + [0x0A]
                    case .initialEventsEnd(let rv):
                        let obj: JSONValue = [
                            "kind": .string(r.kind), "apiVersion": .string(r.apiVersion(version)),
                            "metadata": ["resourceVersion": .string(String(rv)), "annotations": ["k8s.io/initial-events-end": "true"]],
                        ]
                        line = JSONValue.object(["type": "BOOKMARK", "object": obj]).serialized() + [0x0A]
                    case .error(let status):
                        line = Self.errorFrame(status)
                    }
                    try await writer.write(ByteBuffer(bytes: line))
                }
                group.cancelAll()
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
    }

    /// `sendInitialEvents` of a watch (nil when absent), checked as kube-apiserver's ListOptions validation does:
    /// it needs `resourceVersionMatch=NotOlderThan`, and `resourceVersionMatch` needs it.
    static func streamingList(_ query: [String: String]) throws -> Bool? {
        let match = query["resourceVersionMatch"] ?? ""
        guard let send = query["sendInitialEvents"] else {
            if !match.isEmpty { throw listOptionsForbidden("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided") }
            return nil
        }
        if match != "NotOlderThan" { throw listOptionsForbidden("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan") }
        return isTrue(send)
    }

    static func listOptionsForbidden(_ message: String) -> APIError {
        APIError.invalid(
            kind: "ListOptions", group: "meta.k8s.io", name: "", field: "resourceVersionMatch", reason: "FieldValueForbidden",
            message: "Forbidden: \(message)")
    }

    /// A watch's ERROR event line carrying `status`.
    static func errorFrame(_ status: Status) -> [UInt8] {
        JSONValue.object(["type": "ERROR", "object": (try? JSONValue(encoding: status)) ?? .null]).serialized() + [0x0A]
    }

    static func goneStream(message: String) -> (AsyncStream<WatchFrame>, id: Int) {
        let (s, c) = AsyncStream<WatchFrame>.makeStream()
        c.yield(.error(Status(message: message, reason: StatusReason.expired, code: 410)))
        c.finish()
        return (s, -1)
    }

    // MARK: Responses

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, warnings: [String] = []) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        for w in warnings {
            headers.append(HTTPField(name: HTTPField.Name("Warning")!, value: "299 - \(JSONValue.string(w).serializedString())"))
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.serialized())))
    }

    static func statusResponse(_ e: APIError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let ra = e.retryAfter { headers[.retryAfter] = String(ra) }
        let body = (try? JSONValue(encoding: e.status)) ?? .null
        return Response(status: .init(code: e.code), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.serialized())))
    }
}

extension LabelSelector {
    static func parseOrBadRequest(_ text: String) throws -> LabelSelector {
        do { return try parse(text) } catch { throw APIError.badRequest("unable to parse requirement: \(error)") }
    }
}

extension FieldSelector {
    static func parseOrBadRequest(_ text: String?, resourceKey: String) throws -> FieldSelector? {
        guard let text, !text.isEmpty else { return nil }
        let s: FieldSelector
        do { s = try parse(text) } catch { throw APIError.badRequest("\(error)") }
        let allowed = StoredObject.selectableFields[resourceKey, default: []].union(["metadata.name", "metadata.namespace"])
        for r in s.requirements where !allowed.contains(r.field) {
            throw APIError.badRequest("field label not supported: \(r.field)")
        }
        return s
    }
}

/// The bearer tokens a server accepts now (a token rotated, a ServiceAccount re-created).
/// Who sent a request, as far as the handler chain needs it.
struct Caller: Sendable {
    var userAgent: String
    /// The authenticated user.
    var requester: UserInfo
    /// Whom the request asks to act as (checked against the resource it names).
    var impersonation: ImpersonationRequest?

    /// The user the request acts as, for the record.
    var user: UserInfo { impersonation.map { UserInfo(name: $0.user, groups: $0.groups) } ?? requester }
}
