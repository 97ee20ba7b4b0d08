import Foundation
import KubeModels
import Synchronization

/// Which commit a git ref names, for builds that follow a branch: a branch is read from its remote again once per
/// poll interval, or at once when a push webhook says its repository moved; a tag is read once and a commit never
/// (neither ever rebuilds). Shared by Meteors and CustomRuntimeEnvironments.
public final class FollowedRefs: Sendable {
    /// What a ref resolved to.
    public struct Resolution: Sendable, Equatable {
        public var commit: String
        /// A branch: looked at again (`FollowedRefs.interval`).
        public var followed: Bool
        public init(commit: String, followed: Bool) {
            self.commit = commit
            self.followed = followed
        }
    }

    /// The ref is not on the remote: nothing can be built from it until it is pushed.
    public struct RefNotFound: Error, CustomStringConvertible, Sendable {
        public var url: String
        public var ref: String
        public var description: String { "\(url) has no branch, tag or commit named \(ref)" }
    }

    struct Entry {
        var resolution: Resolution
        var checked: Date
    }

    /// How long a branch's commit is trusted before its remote is read again.
    public let interval: Duration
    let entries = Mutex<[String: Entry]>([:])
    /// Repositories a webhook said moved (`Self.repositoryKey`), read again at their next resolve.
    let moved = Mutex<Set<String>>([])

    public init(interval: Duration) { self.interval = interval }

    /// The commit `ref` names on `url`: a full commit as it is, else from the cache or `list` (the remote's refs).
    /// `previous` is the commit an earlier resolve recorded (the object's status): a tag keeps it across restarts.
    /// When the remote cannot be read, the last known commit stands; with none, the error is thrown.
    public func resolve(
        url: String, ref: String, previous: String?, now: Date, list: () async throws -> [GitRemote.Ref]
    ) async throws -> Resolution {
        if Self.isCommit(ref) { return Resolution(commit: ref, followed: false) }
        let key = url + "\n" + ref
        let repository = Self.repositoryKey(url)
        let cached = entries.withLock { $0[key] }
        let movedNow = moved.withLock { $0.contains(repository) }
        if let cached, !cached.resolution.followed || (!movedNow && now.timeIntervalSince(cached.checked) < interval.seconds) {
            return cached.resolution
        }
        let refs: [GitRemote.Ref]
        do {
            refs = try await list()
        } catch {
            if let cached { return cached.resolution }
            throw error
        }
        moved.withLock { _ = $0.remove(repository) }
        let names = ref.hasPrefix("refs/") ? [ref] : ["refs/heads/\(ref)", "refs/tags/\(ref)"]
        guard let found = names.lazy.compactMap({ name in refs.first { $0.name == name } }).first else {
            throw RefNotFound(url: url, ref: ref)
        }
        let branch = found.name.hasPrefix("refs/heads/")
        // A tag recorded before (a restart, a re-listing) stays what was built: tags never rebuild.
        let commit = !branch ? (previous.flatMap { Self.isCommit($0) ? $0 : nil } ?? found.commit) : found.commit
        let resolution = Resolution(commit: commit, followed: branch)
        entries.withLock { $0[key] = Entry(resolution: resolution, checked: now) }
        return resolution
    }

    /// A webhook said `url` was pushed to: its branches are read again at their next resolve. Returns the key the
    /// repository is known by.
    @discardableResult
    public func repositoryMoved(_ url: String) -> String {
        let key = Self.repositoryKey(url)
        moved.withLock { _ = $0.insert(key) }
        return key
    }

    /// A repository's identity across the ways it is written: scheme, credentials, `.git`, a trailing slash and
    /// case of the host dropped (`https://GitHub.com/o/r.git` and `git@github.com:o/r` are one repository).
    public static func repositoryKey(_ url: String) -> String {
        var s = url.trimmingCharacters(in: .whitespaces)
        if let scheme = s.range(of: "://") { s = String(s[scheme.upperBound...]) }
        if let at = s.firstIndex(of: "@"), !s[..<at].contains("/") { s = String(s[s.index(after: at)...]) }
        if let colon = s.firstIndex(of: ":"), !s[..<colon].contains("/"), !s[s.index(after: colon)...].hasPrefix("/"),
            !s[s.index(after: colon)...].prefix(while: { $0 != "/" }).allSatisfy(\.isNumber)
        {
            s.replaceSubrange(colon...colon, with: "/")
        }
        while s.hasSuffix("/") { s.removeLast() }
        if s.hasSuffix(".git") { s.removeLast(4) }
        guard let slash = s.firstIndex(of: "/") else { return s.lowercased() }
        return s[..<slash].lowercased() + s[slash...]
    }

    /// A full commit name (40 hex digits, or 64 for SHA-256 repositories).
    public static func isCommit(_ s: String) -> Bool { (s.count == 40 || s.count == 64) && s.allSatisfy { $0.isHexDigit && !$0.isUppercase } }
}

extension FollowedRefs {
    /// The reason a status gives for a ref its remote does not have.
    public static let refNotFound = "RefNotFound"
    /// The reason a status gives for a remote that cannot be read (and no commit is known yet).
    public static let gitRemoteUnavailable = "GitRemoteUnavailable"
}

/// What following a ref found (`MeteorReconciler.followRef`).
enum FollowedRef {
    /// Build `commit` (nil: refs are built as named) and look at the ref again after `lookAgain` (nil: never).
    case build(commit: String?, lookAgain: Duration?)
    /// No commit: why, for the status, and when to look again.
    case unresolved(reason: String, message: String, retry: Duration)

    /// The commit to build, when there is one.
    var commit: String? {
        if case .build(let commit, _) = self { return commit }
        return nil
    }

    /// When to look at a followed branch again.
    var lookAgain: Duration? {
        if case .build(_, let again) = self { return again }
        return nil
    }

    /// A ref the remote does not have: nothing can be built until it is pushed (the phase says Failed).
    var refNotFound: Bool {
        if case .unresolved(let reason, _, _) = self { return reason == FollowedRefs.refNotFound }
        return false
    }
}

extension MeteorReconciler {
    /// The commit `ref` names on `url` when refs are followed, read with `access` (a missing git Secret is a missing
    /// prerequisite, thrown).
    func followRef(
        _ url: String, ref: String, previous: String?, now: Date, access: () async throws -> GitAccess?
    ) async throws -> FollowedRef {
        guard let refs, let interval = configuration.followRefs else { return .build(commit: nil, lookAgain: nil) }
        let credentials = try await access()
        do {
            let resolved = try await refs.resolve(url: url, ref: ref, previous: previous, now: now) { try await listRefs(url, access: credentials) }
            return .build(commit: resolved.commit, lookAgain: resolved.followed ? interval : nil)
        } catch let missing as FollowedRefs.RefNotFound {
            return .unresolved(reason: FollowedRefs.refNotFound, message: missing.description, retry: interval)
        } catch {
            return .unresolved(
                reason: FollowedRefs.gitRemoteUnavailable, message: "Cannot read the refs of \(url) to find the commit \(ref) names: \(error)",
                retry: min(interval, .seconds(30)))
        }
    }
}
