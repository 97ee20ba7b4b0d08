import Foundation
import KubeModels
import KubeRuntime

/// Why there is no release to deliver (or only the last known one).
struct ReleaseProblem: Sendable {
    var reason: String
    var message: String
}

/// Release discovery: which tag of the Meteor's repository is delivered, read from its git remote (smart HTTP or
/// ssh) once per interval, and which commit a run built.
extension MeteorReconciler {
    /// The release to deliver: re-read from the remote once per interval; the last known one when it cannot be read.
    /// The release and, when the last check of the remote found none or failed, why; `fresh` when the remote was
    /// read now (a reconcile between checks says what the last check found, not something else).
    func currentRelease(
        _ meteor: Meteor, _ release: Edge.Release, interval: Int64, previous: EdgeRelease?, now: Date
    ) async -> (EdgeRelease?, ReleaseProblem?, fresh: Bool) {
        let key = meteor.metadata.uid ?? "\(meteor.namespace ?? "")/\(meteor.name)"
        let known = previous.flatMap { ReleaseSelection.matches($0.tag, pattern: release.tagPattern) ? $0 : nil }
        if let cached = edgeMemory.releases.withLock({ $0[key] }), cached.pattern == release.tagPattern,
            now.timeIntervalSince(cached.checked) < Double(interval)
        {
            return (cached.release ?? known, cached.problem, false)
        }
        let found: EdgeRelease?
        let problem: ReleaseProblem?
        do {
            let refs = try await listRefs(meteor)
            found = ReleaseSelection.newest(refs, pattern: release.tagPattern).map { EdgeRelease(tag: $0.tag, commit: $0.commit) }
            problem =
                found == nil ? ReleaseProblem(reason: "NoMatchingTag", message: "No tag on \(meteor.spec.url) matches \(release.tagPattern)") : nil
            if let found, found != known, let raw = try? JSONValue(encoding: meteor) {
                await events.record(
                    raw, type: .normal, reason: .releaseFound,
                    message: "Delivering \(found.tag) (\(found.commit ?? "unknown commit")) from \(meteor.spec.url)")
            }
        } catch {
            found = known
            problem = ReleaseProblem(reason: "GitRemoteUnavailable", message: "Cannot list tags of \(meteor.spec.url): \(error)")
        }
        edgeMemory.releases.withLock { $0[key] = .init(checked: now, pattern: release.tagPattern, release: found, problem: problem) }
        return (found, problem, true)
    }

    /// The refs of the Meteor's repository, over ssh or http(s) as its URL says, with its credentials.
    func listRefs(_ meteor: Meteor) async throws -> [GitRemote.Ref] {
        try await listRefs(meteor.spec.url, access: try await gitCredentials(meteor))
    }

    /// The refs of the repository at `url`, read with `access`.
    func listRefs(_ url: String, access: GitAccess?) async throws -> [GitRemote.Ref] {
        switch access {
        case .ssh(let credentials)?:
            guard let address = GitSSHRemote.Address(url) else { throw GitRemote.Failure(message: "\(url) is not an ssh address") }
            return try await GitSSHRemote(address: address, credentials: credentials, egress: egress).refs()
        case .basic(let credentials)?:
            return try await gitRemote(url, credentials: credentials).refs()
        case nil:
            return try await gitRemote(url).refs()
        }
    }

    /// The remote for a repository URL, through `EdgeSettings.hostOverrides` when its host has one.
    func gitRemote(_ url: String, credentials: GitRemote.Credentials? = nil) -> GitRemote {
        guard let overrides = configuration.edge?.hostOverrides, !overrides.isEmpty, let components = URLComponents(string: url),
            let host = components.host, let origin = overrides[components.port.map { "\(host):\($0)" } ?? host] ?? overrides["*"]
        else { return GitRemote(url: url, credentials: credentials, egress: egress) }
        return GitRemote(url: origin + "/" + host + components.path, credentials: credentials, egress: egress)
    }

    /// The commit a run built: its COMMIT result, or for a release the tag's commit when the run reports none.
    static func builtCommit(_ state: PipelineRunState, build: EdgeBuild) -> String? {
        if let reported = state.results["COMMIT"], FollowedRefs.isCommit(reported) { return reported }
        if let release = build.release?.commit { return release }
        return FollowedRefs.isCommit(build.ref) ? build.ref : nil
    }

}
