import KubeModels

/// Everything a call to the API server can fail with. API errors keep the server's metav1.Status, and the
/// reasons callers branch on have their own cases.
public enum KubeError: Error, CustomStringConvertible, Sendable {
    case notFound(Status)
    case alreadyExists(Status)
    /// 409 Conflict: stale resourceVersion on update, failed precondition, or a server-side apply conflict.
    case conflict(Status)
    /// 410 Gone / Expired: a watch or list continuation from a resourceVersion the server no longer has. Re-list.
    case gone(Status)
    case invalid(Status)
    case api(Status)
    case transport(String)
    /// A watch that delivered no event, bookmarks included, within its idle deadline: presumed dead. Resume it.
    case watchIdle(path: String, after: Duration)
    case decoding(String)
    case configuration(String)
    /// A write refused before it was sent, by the task's `WriteFence` (a leader whose lease may have passed on).
    case fenced(String)

    public var status: Status? {
        switch self {
        case .notFound(let s), .alreadyExists(let s), .conflict(let s), .gone(let s), .invalid(let s), .api(let s): return s
        default: return nil
        }
    }

    public var code: Int? { status?.code }

    public var description: String {
        switch self {
        case .transport(let m): return "transport error: \(m)"
        case .watchIdle(let path, let after): return "watch \(path) delivered nothing, not even a bookmark, for \(after); presumed dead"
        case .decoding(let m): return "decoding error: \(m)"
        case .configuration(let m): return m
        case .fenced(let m): return "write not sent: \(m)"
        default:
            let s = status!
            return "\(s.code.map(String.init) ?? "?") \(s.reason ?? ""): \(s.message ?? "")"
        }
    }

    public var isNotFound: Bool { if case .notFound = self { return true }; return false }
    public var isConflict: Bool { if case .conflict = self { return true }; return false }
    public var isAlreadyExists: Bool { if case .alreadyExists = self { return true }; return false }
    public var isGone: Bool { if case .gone = self { return true }; return false }
    public var isWatchIdle: Bool { if case .watchIdle = self { return true }; return false }
    public var isInvalid: Bool { if case .invalid = self { return true }; return false }
    public var isFenced: Bool { if case .fenced = self { return true }; return false }

    /// Classifies a Status the server sent.
    public static func from(_ status: Status, httpCode: Int) -> KubeError {
        var s = status
        if s.code == nil || s.code == 0 { s.code = httpCode }
        switch (s.code ?? httpCode, s.reason ?? "") {
        case (404, _): return .notFound(s)
        case (409, StatusReason.alreadyExists): return .alreadyExists(s)
        case (409, _): return .conflict(s)
        case (410, _), (_, StatusReason.expired), (_, StatusReason.gone): return .gone(s)
        case (422, _): return .invalid(s)
        default: return .api(s)
        }
    }
}

/// `body`'s value, or nil when the API server answered 404: a read of something that may be gone, a delete of
/// something already deleted (controller-runtime's `client.IgnoreNotFound`).
public func ignoreNotFound<T>(_ body: () async throws -> T) async throws -> T? {
    do { return try await body() } catch let e as KubeError where e.isNotFound { return nil }
}

/// `body`'s value, or nil when the API server answered 409 AlreadyExists: a create an earlier attempt (or another
/// process) already made.
public func ignoreAlreadyExists<T>(_ body: () async throws -> T) async throws -> T? {
    do { return try await body() } catch let e as KubeError where e.isAlreadyExists { return nil }
}
