import AsyncHTTPClient
import Crypto
import Foundation
import KubeClient
import KubeModels
import KubeRuntime
import KubeTestSupport
import Logging
import MeteorCore
import MeteorShower
import MeteorTestSupport
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// Which commit a ref names, and when it is read again.
@Suite struct FollowedRefsTests {
    static let c1 = String(repeating: "1", count: 40)
    static let c2 = String(repeating: "2", count: 40)

    struct Unreachable: Error {}

    /// A remote whose refs the test sets, counting its reads.
    final class Remote: Sendable {
        let refs = Mutex<[GitRemote.Ref]>([])
        let reads = Mutex(0)
        let failing = Mutex(false)
        func list() throws -> [GitRemote.Ref] {
            reads.withLock { $0 += 1 }
            if failing.withLock({ $0 }) { throw Unreachable() }
            return refs.withLock { $0 }
        }
    }

    @Test func aBranchIsReadAgainAfterTheIntervalATagOnceACommitNever() async throws {
        let refs = FollowedRefs(interval: .seconds(60))
        let remote = Remote()
        remote.refs.withLock { $0 = [.init(name: "refs/heads/main", commit: Self.c1), .init(name: "refs/tags/v1", commit: Self.c1)] }
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        let url = "https://git.example/o/r.git"
        #expect(try await refs.resolve(url: url, ref: "main", previous: nil, now: t0) { try remote.list() } == .init(commit: Self.c1, followed: true))
        #expect(try await refs.resolve(url: url, ref: "v1", previous: nil, now: t0) { try remote.list() } == .init(commit: Self.c1, followed: false))
        #expect(remote.reads.withLock { $0 } == 2)
        remote.refs.withLock { $0 = [.init(name: "refs/heads/main", commit: Self.c2), .init(name: "refs/tags/v1", commit: Self.c2)] }
        // Within the interval: what was read.
        #expect(try await refs.resolve(url: url, ref: "main", previous: Self.c1, now: t0 + 59) { try remote.list() }.commit == Self.c1)
        #expect(remote.reads.withLock { $0 } == 2)
        // After it: the branch moved; the tag stays what it was (never read again).
        #expect(try await refs.resolve(url: url, ref: "main", previous: Self.c1, now: t0 + 61) { try remote.list() }.commit == Self.c2)
        #expect(try await refs.resolve(url: url, ref: "v1", previous: Self.c1, now: t0 + 3600) { try remote.list() }.commit == Self.c1)
        #expect(remote.reads.withLock { $0 } == 3)
        // A tag after a restart (nothing remembered) keeps the commit its status recorded.
        let restarted = FollowedRefs(interval: .seconds(60))
        #expect(try await restarted.resolve(url: url, ref: "v1", previous: Self.c1, now: t0) { try remote.list() }.commit == Self.c1)
        // A full commit is its own answer, without a read.
        let reads = remote.reads.withLock { $0 }
        #expect(
            try await refs.resolve(url: url, ref: Self.c2, previous: nil, now: t0) { try remote.list() } == .init(commit: Self.c2, followed: false))
        #expect(remote.reads.withLock { $0 } == reads)
    }

    @Test func aPushMarksTheRepositoryMovedUnderAnyOfItsNames() async throws {
        let refs = FollowedRefs(interval: .seconds(3600))
        let remote = Remote()
        remote.refs.withLock { $0 = [.init(name: "refs/heads/main", commit: Self.c1)] }
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        let url = "https://github.com/Org/Repo"
        _ = try await refs.resolve(url: url, ref: "main", previous: nil, now: t0) { try remote.list() }
        remote.refs.withLock { $0 = [.init(name: "refs/heads/main", commit: Self.c2)] }
        #expect(try await refs.resolve(url: url, ref: "main", previous: nil, now: t0 + 1) { try remote.list() }.commit == Self.c1)
        // The webhook names it as its clone URL: the same repository.
        refs.repositoryMoved("https://GitHub.com/Org/Repo.git")
        #expect(try await refs.resolve(url: url, ref: "main", previous: nil, now: t0 + 2) { try remote.list() }.commit == Self.c2)
        for same in [
            "git@github.com:Org/Repo.git", "ssh://git@github.com/Org/Repo", "https://user@github.com/Org/Repo/", "http://github.com/Org/Repo.git",
        ] {
            #expect(FollowedRefs.repositoryKey(same) == FollowedRefs.repositoryKey(url), "\(same)")
        }
        #expect(FollowedRefs.repositoryKey("https://github.com/Org/Other") != FollowedRefs.repositoryKey(url))
        #expect(FollowedRefs.repositoryKey("https://github.com/org/repo") != FollowedRefs.repositoryKey(url), "paths keep their case")
        #expect(FollowedRefs.repositoryKey("ssh://git@host:2222/o/r.git") == "host:2222/o/r")
    }

    @Test func anUnknownRefIsNamedAndAnUnreadableRemoteKeepsTheLastCommit() async throws {
        let refs = FollowedRefs(interval: .seconds(1))
        let remote = Remote()
        remote.refs.withLock { $0 = [.init(name: "refs/heads/main", commit: Self.c1)] }
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        await #expect {
            _ = try await refs.resolve(url: "https://g/r", ref: "nope", previous: nil, now: t0) { try remote.list() }
        } throws: { ($0 as? FollowedRefs.RefNotFound)?.description == "https://g/r has no branch, tag or commit named nope" }
        _ = try await refs.resolve(url: "https://g/r", ref: "main", previous: nil, now: t0) { try remote.list() }
        remote.failing.withLock { $0 = true }
        #expect(try await refs.resolve(url: "https://g/r", ref: "main", previous: nil, now: t0 + 5) { try remote.list() }.commit == Self.c1)
        await #expect(throws: Unreachable.self) {
            _ = try await refs.resolve(url: "https://g/other", ref: "main", previous: nil, now: t0) { try remote.list() }
        }
    }
}

/// The push webhook: who may trigger a check, and what a check does.
@Suite struct GitPushHookTests {
    static let secret = Array("s3cret-shared".utf8)
    static let payload = Array(
        #"{"ref":"refs/heads/main","after":"deadbeef","repository":{"clone_url":"https://github.com/o/r.git","html_url":"https://github.com/o/r","ssh_url":"git@github.com:o/r.git"}}"#
            .utf8)

    static func signature(_ body: [UInt8], _ secret: [UInt8]) -> String {
        "sha256=" + HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: secret)).map { String(format: "%02x", $0) }.joined()
    }

    @Test func gitHubAndGitLabPushesAreReadOnlyWithTheSharedSecret() throws {
        let github = ["x-github-event": "push", "x-hub-signature-256": Self.signature(Self.payload, Self.secret)]
        #expect(
            try GitPushHook.read(headers: github, body: Self.payload, secret: Self.secret)
                == .push(["https://github.com/o/r.git", "https://github.com/o/r", "git@github.com:o/r.git"]))
        let refused: [([String: String], [UInt8], String)] = [
            (["x-github-event": "push", "x-hub-signature-256": Self.signature(Self.payload, Array("other".utf8))], Self.payload, "does not match"),
            (github, Self.payload + [0x20], "does not match"),
            (["x-github-event": "push", "x-hub-signature-256": "sha1=abc"], Self.payload, "does not match"),
            (["x-github-event": "push"], Self.payload, "no X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header"),
            (["x-gitlab-event": "Push Hook", "x-gitlab-token": "s3cret-share"], Self.payload, "is not the shared secret"),
        ]
        for (headers, body, message) in refused {
            #expect(throws: GitPushHook.Refusal.self) { try GitPushHook.read(headers: headers, body: body, secret: Self.secret) }
            do {
                _ = try GitPushHook.read(headers: headers, body: body, secret: Self.secret)
            } catch let r as GitPushHook.Refusal {
                #expect(r.status == 401 && r.message.contains(message), "\(headers): \(r)")
            }
        }
        let gitlab = Array(
            #"{"object_kind":"push","project":{"git_http_url":"https://gitlab.com/o/r.git","git_ssh_url":"git@gitlab.com:o/r.git"}}"#.utf8)
        #expect(
            try GitPushHook.read(headers: ["x-gitlab-event": "Push Hook", "x-gitlab-token": "s3cret-shared"], body: gitlab, secret: Self.secret)
                == .push(["https://gitlab.com/o/r.git", "git@gitlab.com:o/r.git"]))
        let ping = Array(#"{"zen":"Keep it simple."}"#.utf8)
        #expect(
            try GitPushHook.read(
                headers: ["x-github-event": "ping", "x-hub-signature-256": Self.signature(ping, Self.secret)], body: ping, secret: Self.secret)
                == .ignored("ping event"))
        let empty = Array("{}".utf8)
        #expect(throws: GitPushHook.Refusal(status: 400, message: "the push payload names no repository (repository or project URLs)")) {
            try GitPushHook.read(headers: ["x-hub-signature-256": Self.signature(empty, Self.secret)], body: empty, secret: Self.secret)
        }
    }

    /// A branch followed hourly: a signed push to the webhook the operator serves makes it build the new commit at
    /// once; a push signed with another secret is refused and changes nothing.
    @Test(arguments: Backend.testable) func aSignedPushBuildsTheNewCommitWithoutWaitingForThePoll(_ backend: Backend) async throws {
        let git = try await GitHTTPServer.start()
        defer { Task { await git.stop() } }
        let first = try await git.createRepository("pushed", files: ["requirements.txt": "six==1.16.0\n"])
        try await MeteorEnvironment.with(
            on: backend, tekton: true,
            configure: {
                $0.followRefs = .seconds(3600)
                $0.egress = .loopbackFixtures
            }
        ) { env in
            let refs = try #require(env.reconciler.refs)
            let repository: @Sendable (JSONValue) -> String? = { $0[path: "spec", "url"]?.stringValue }
            let hook = GitWebhook(
                options: .init(bindAddress: "127.0.0.1:0", secret: Self.secret),
                onPush: GitPushHook.trigger(
                    refs: refs, watched: [(env.reconciler.meteors, repository, env.controller.queue)]),
                logger: Logger(label: "webhook"))
            let group = ServiceGroup(configuration: .init(services: [hook], logger: Logger(label: "webhook")))
            let running = Task { try await group.run() }
            defer { Task { await group.triggerGracefulShutdown() } }
            let port = try #require(await hook.waitUntilListening())
            var m = sampleMeteor("pushed", pipelines: ["jupyterhub"])
            m[path: "spec", "url"] = .string(git.url("pushed"))
            _ = try await env.cluster.meteors.create(m)
            _ = try await env.cluster.waitFor(env.cluster.meteors, "pushed", timeout: .seconds(90)) {
                $0?[path: "status", "commit"] == .string(first) && $0?[path: "status", "phase"] == "Ready"
            }
            let second = try await git.commit("pushed", files: ["README.md": "moved\n"], message: "move")
            // GitHub's payload names the repository by its clone URL (here the fixture's).
            let body = Array(#"{"ref":"refs/heads/main","repository":{"clone_url":"\#(git.url("pushed"))"}}"#.utf8)
            func post(_ signature: String) async throws -> (Int, String) {
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(GitWebhook.path)")
                request.method = .POST
                request.headers.add(name: "X-GitHub-Event", value: "push")
                request.headers.add(name: "X-Hub-Signature-256", value: signature)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 65536)))
            }
            let forged = try await post(Self.signature(body, Array("guessed".utf8)))
            #expect(forged.0 == 401 && forged.1.contains("does not match"), "\(forged)")
            let accepted = try await post(Self.signature(body, Self.secret))
            #expect(accepted.0 == 202 && accepted.1.contains("\"queued\":1"), "\(accepted)")
            let rebuilt = try #require(
                try await env.cluster.waitFor(env.cluster.meteors, "pushed", timeout: .seconds(90)) {
                    $0?[path: "status", "commit"] == .string(second) && $0?[path: "status", "phase"] == "Ready"
                })
            #expect(rebuilt[path: "status", "pipelines"]?.arrayValue?.first?["commit"] == .string(second))
            #expect(try await env.cluster.runs.list().items.count == 2, "one build per commit")
            await group.triggerGracefulShutdown()
            _ = try? await running.value
        }
    }
}
