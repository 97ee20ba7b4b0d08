import Crypto
import Foundation
import KubeModels
import KubeRuntime

/// A push webhook's request from GitHub or GitLab: authenticated with the shared secret, then read for the
/// repositories it names. Nothing else in it is believed (not the commit it claims): it only makes the operator read
/// those repositories' refs again (`FollowedRefs`), at once instead of at the next poll.
public enum GitPushHook {
    public enum Outcome: Equatable, Sendable {
        /// A push to the repository these URLs name (its clone, web and ssh URLs).
        case push([String])
        /// An authenticated event that is not a push (GitHub's ping, an issue…): nothing to do.
        case ignored(String)
    }

    /// Why a request was refused: 401 when it is not from a webhook that knows the secret, 400 when it cannot be read.
    public struct Refusal: Error, Equatable, CustomStringConvertible, Sendable {
        public var status: Int
        public var message: String
        public var description: String { message }
        public init(status: Int, message: String) {
            self.status = status
            self.message = message
        }
    }

    /// Reads a request (`headers` by lower-cased name) against the shared `secret`: GitHub's (and Gitea's, Forgejo's)
    /// `X-Hub-Signature-256`, an HMAC-SHA256 of the body; GitLab's `X-Gitlab-Token`, the secret itself. Both compared
    /// in constant time.
    public static func read(headers: [String: String], body: [UInt8], secret: [UInt8]) throws -> Outcome {
        let key = SymmetricKey(data: secret)
        if let signature = headers["x-hub-signature-256"] {
            guard signature.hasPrefix("sha256="), let mac = hexBytes(signature.dropFirst(7)), mac.count == SHA256.byteCount,
                HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key)
            else {
                throw Refusal(status: 401, message: "the X-Hub-Signature-256 signature does not match the body and the shared secret")
            }
            let event = headers["x-github-event"] ?? headers["x-gitea-event"] ?? "push"
            guard event == "push" else { return .ignored("\(event) event") }
        } else if let token = headers["x-gitlab-token"] {
            // Equal lengths compared by HMAC, so the comparison takes the same time wherever they differ.
            guard
                HMAC<SHA256>.isValidAuthenticationCode(
                    HMAC<SHA256>.authenticationCode(for: secret, using: key), authenticating: Array(token.utf8), using: key)
            else { throw Refusal(status: 401, message: "the X-Gitlab-Token is not the shared secret") }
            let event = headers["x-gitlab-event"] ?? ""
            guard event == "Push Hook" || event == "Tag Push Hook" else { return .ignored("\(event.isEmpty ? "unnamed" : event) event") }
        } else {
            throw Refusal(
                status: 401, message: "no X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header: not a request from a configured webhook")
        }
        guard let payload = try? JSONValue.parse(body) else { throw Refusal(status: 400, message: "the push payload is not JSON") }
        var urls: [String] = []
        for (object, fields) in [
            ("repository", ["clone_url", "html_url", "ssh_url", "git_url", "url", "git_http_url", "git_ssh_url"]),
            ("project", ["git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url"]),
        ] {
            for field in fields {
                if let url = payload[path: object, field]?.stringValue, !url.isEmpty, !urls.contains(url) { urls.append(url) }
            }
        }
        guard !urls.isEmpty else { throw Refusal(status: 400, message: "the push payload names no repository (repository or project URLs)") }
        return .push(urls)
    }

    /// What an authenticated push does: `refs` reads those repositories again at their next resolve, and every
    /// object of each watched informer whose repository (read by `repository`) is one of them is queued. Returns how
    /// many were queued.
    public static func trigger(
        refs: FollowedRefs, watched: [(informer: DynamicInformer, repository: @Sendable (JSONValue) -> String?, queue: WorkQueue<ObjectKey>)]
    ) -> @Sendable ([String]) async -> Int {
        { urls in
            let moved = Set(urls.map { refs.repositoryMoved($0) })
            var queued = 0
            for w in watched {
                for object in w.informer.store.list() {
                    guard let url = w.repository(object), moved.contains(FollowedRefs.repositoryKey(url)) else { continue }
                    await w.queue.add(ObjectKey(object))
                    queued += 1
                }
            }
            return queued
        }
    }

    static func hexBytes<S: StringProtocol>(_ hex: S) -> [UInt8]? {
        var out: [UInt8] = []
        var high: UInt8?
        for c in hex.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        return high == nil ? out : nil
    }
}
