import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSH

/// A repository's refs over ssh, as `git ls-remote` reads them: `git-upload-pack '<path>'` run by the server, its
/// (protocol v0) ref advertisement read up to the flush packet, then a flush sent back ("nothing wanted"). With a
/// `kubernetes.io/ssh-auth` Secret's key (ed25519 or ECDSA, in OpenSSH's format) and only the host keys its
/// `known_hosts` lists: no git or ssh binary (the operator's image has neither).
public struct GitSSHRemote: Sendable {
    /// An ssh repository address: `ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`.
    public struct Address: Sendable, Equatable {
        public var user: String
        public var host: String
        public var port: Int
        public var path: String

        public init?(_ url: String) {
            if url.hasPrefix("ssh://") {
                guard let c = URLComponents(string: url), let host = c.host, !host.isEmpty, c.password == nil, !c.path.isEmpty else { return nil }
                self.init(user: c.user ?? "git", host: host, port: c.port ?? 22, path: c.percentEncodedPath.removingPercentEncoding ?? c.path)
            } else {
                // user@host:path, as git reads it: no scheme, a colon before any slash.
                guard !url.contains("://"), let colon = url.firstIndex(of: ":"), !url[..<colon].contains("/") else { return nil }
                let authority = url[..<colon], path = String(url[url.index(after: colon)...])
                let at = authority.lastIndex(of: "@")
                let host = String(at.map { authority[authority.index(after: $0)...] } ?? authority)
                guard !host.isEmpty, !path.isEmpty else { return nil }
                self.init(user: at.map { String(authority[..<$0]) } ?? "git", host: host, port: 22, path: path)
            }
            guard !host.hasPrefix("-"), !user.hasPrefix("-"), !user.isEmpty else { return nil }
        }

        public init(user: String, host: String, port: Int, path: String) {
            self.user = user
            self.host = host
            self.port = port
            self.path = path
        }

        /// The name known_hosts gives the host: `host`, or `[host]:port` off port 22.
        public var knownHostsName: String { port == 22 ? host.lowercased() : "[\(host.lowercased())]:\(port)" }
    }

    /// A `kubernetes.io/ssh-auth` Secret's `ssh-privatekey` and `known_hosts`.
    public struct Credentials: Sendable {
        public var privateKey: String
        public var knownHosts: String
        public init(privateKey: String, knownHosts: String) {
            self.privateKey = privateKey
            self.knownHosts = knownHosts
        }
    }

    public let address: Address
    let credentials: Credentials
    let timeout: TimeAmount
    let egress: EgressPolicy

    /// `egress` decides where the listing may connect (the address is a Meteor's: by default nowhere inside the
    /// cluster); the connection goes to the address it checked.
    public init(address: Address, credentials: Credentials, timeout: TimeAmount = .seconds(15), egress: EgressPolicy = EgressPolicy()) {
        self.address = address
        self.credentials = credentials
        self.timeout = timeout
        self.egress = egress
    }

    /// Every ref the remote advertises, annotated tags peeled to their commits.
    public func refs() async throws -> [GitRemote.Ref] {
        let key: NIOSSHPrivateKey
        do { key = try OpenSSHKeys.privateKey(credentials.privateKey) } catch let e as GitRemote.Failure {
            throw GitRemote.Failure(message: "spec.gitSecretRef's ssh-privatekey: \(e.message)")
        }
        let trusted = OpenSSHKeys.knownHostKeys(credentials.knownHosts, for: address.knownHostsName)
        guard !trusted.isEmpty else {
            throw GitRemote.Failure(
                message:
                    "spec.gitSecretRef's known_hosts has no key for \(address.knownHostsName): add the host's key (ssh-keyscan \(address.port == 22 ? "" : "-p \(address.port) ")\(address.host))"
            )
        }
        let hostKeys = HostKeyCheck(trusted: trusted, host: address.knownHostsName)
        let user = UserKeyAuthentication(user: address.user, key: key)
        let advertisement: EventLoopPromise<[UInt8]> = MultiThreadedEventLoopGroup.singleton.any().makePromise()
        let command = "git-upload-pack '\(address.path.replacingOccurrences(of: "'", with: "'\\''"))'"

        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = NIOSSHHandler(
                        role: .client(.init(userAuthDelegate: user, serverAuthDelegate: hostKeys)), allocator: channel.allocator,
                        inboundChildChannelInitializer: nil)
                    try channel.pipeline.syncOperations.addHandlers([handler, FailOnError(advertisement)])
                }
            }
        let checked: String?
        do { checked = try await egress.admit(host: address.host, port: address.port) } catch let refused as EgressPolicy.Refused {
            throw GitRemote.Failure(message: "will not list the refs of \(address.host): \(refused.message)")
        }
        let connection: Channel
        do {
            connection = try await bootstrap.connect(host: checked ?? address.host, port: address.port).get()
        } catch {
            throw GitRemote.Failure(message: "cannot reach \(address.host):\(address.port): \(error)")
        }
        let deadline = connection.eventLoop.scheduleTask(in: timeout) {
            advertisement.fail(
                GitRemote.Failure(message: "\(address.host):\(address.port) did not list its refs within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        defer {
            deadline.cancel()
            connection.close(promise: nil)
        }
        connection.eventLoop.execute {
            do {
                let ssh = try connection.pipeline.syncOperations.handler(type: NIOSSHHandler.self)
                let child: EventLoopPromise<Channel> = connection.eventLoop.makePromise()
                child.futureResult.whenFailure { advertisement.fail($0) }
                ssh.createChannel(child, channelType: .session) { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UploadPackReader(command: command, done: advertisement))
                    }
                }
            } catch {
                advertisement.fail(error)
            }
        }
        let bytes: [UInt8]
        do {
            bytes = try await advertisement.futureResult.get()
        } catch let failure as GitRemote.Failure {
            throw failure
        } catch {
            if let refusal = hostKeys.refusal { throw GitRemote.Failure(message: refusal) }
            if user.refused {
                throw GitRemote.Failure(message: "\(address.knownHostsName) refused the key in spec.gitSecretRef for user \(address.user)")
            }
            throw GitRemote.Failure(message: "ssh to \(address.knownHostsName): \(error)")
        }
        return try GitRemote.parseAdvertisement(bytes)
    }
}

/// Trusts exactly the host keys known_hosts lists for the host; says which key it refused.
final class HostKeyCheck: NIOSSHClientServerAuthenticationDelegate, @unchecked Sendable {
    let trusted: [NIOSSHPublicKey]
    let host: String
    // Written and read on the connection's event loop.
    var refusal: String?

    init(trusted: [NIOSSHPublicKey], host: String) {
        self.trusted = trusted
        self.host = host
    }

    func validateHostKey(hostKey: NIOSSHPublicKey, validationCompletePromise: EventLoopPromise<Void>) {
        if trusted.contains(hostKey) {
            validationCompletePromise.succeed(())
        } else {
            refusal =
                "the host key \(host) presented is not the one spec.gitSecretRef's known_hosts lists for it (\(String(openSSHPublicKey: hostKey).split(separator: " ").first ?? "")): refused"
            validationCompletePromise.fail(GitRemote.Failure(message: refusal!))
        }
    }
}

/// Offers the one key, once.
final class UserKeyAuthentication: NIOSSHClientUserAuthenticationDelegate, @unchecked Sendable {
    let user: String
    let key: NIOSSHPrivateKey
    // Written and read on the connection's event loop.
    var offered = false
    var refused = false

    init(user: String, key: NIOSSHPrivateKey) {
        self.user = user
        self.key = key
    }

    func nextAuthenticationType(
        availableMethods: NIOSSHAvailableUserAuthenticationMethods, nextChallengePromise: EventLoopPromise<NIOSSHUserAuthenticationOffer?>
    ) {
        guard availableMethods.contains(.publicKey), !offered else {
            // No other offer: failing the promise ends the connection (succeeding it with nil would wait).
            refused = true
            nextChallengePromise.fail(GitRemote.Failure(message: "the server refused the key in spec.gitSecretRef for user \(user)"))
            return
        }
        offered = true
        nextChallengePromise.succeed(NIOSSHUserAuthenticationOffer(username: user, serviceName: "", offer: .privateKey(.init(privateKey: key))))
    }
}

/// Fails the listing when the connection errs or closes first.
final class FailOnError: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = Any
    let done: EventLoopPromise<[UInt8]>
    init(_ done: EventLoopPromise<[UInt8]>) { self.done = done }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
        done.fail(GitRemote.Failure(message: "the ssh connection closed before the refs were listed"))
    }
}

/// Runs `git-upload-pack` on the session channel, reads its advertisement up to the flush packet, answers
/// with a flush (no wants) and succeeds with the bytes.
final class UploadPackReader: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = SSHChannelData
    typealias OutboundIn = SSHChannelData
    typealias OutboundOut = SSHChannelData
    let command: String
    let done: EventLoopPromise<[UInt8]>
    var received: [UInt8] = []
    var errors = ""

    init(command: String, done: EventLoopPromise<[UInt8]>) {
        self.command = command
        self.done = done
    }

    func handlerAdded(context: ChannelHandlerContext) {
        _ = context.channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.triggerUserOutboundEvent(SSHChannelRequestEvent.ExecRequest(command: command, wantReply: true), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard case .byteBuffer(let buffer) = message.data else { return }
        switch message.type {
        case .channel:
            received += buffer.readableBytesView
            if let end = Self.advertisementEnd(received) {
                let bytes = Array(received[..<end])
                var flush = context.channel.allocator.buffer(capacity: 4)
                flush.writeString("0000")
                context.writeAndFlush(wrapOutboundOut(SSHChannelData(type: .channel, data: .byteBuffer(flush))), promise: nil)
                done.succeed(bytes)
                context.close(promise: nil)
            }
        case .stdErr:
            errors += String(buffer: buffer)
        default:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let status = event as? SSHChannelRequestEvent.ExitStatus, status.exitStatus != 0 {
            let said = errors.trimmingCharacters(in: .whitespacesAndNewlines)
            done.fail(GitRemote.Failure(message: "git-upload-pack exited \(status.exitStatus)\(said.isEmpty ? "" : ": \(said)")"))
        } else if event is ChannelFailureEvent {
            done.fail(GitRemote.Failure(message: "the server refused to run git-upload-pack"))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let said = errors.trimmingCharacters(in: .whitespacesAndNewlines)
        done.fail(GitRemote.Failure(message: "git-upload-pack ended before listing the refs\(said.isEmpty ? "" : ": \(said)")"))
        context.fireChannelInactive()
    }

    /// Where the advertisement's flush packet ends, if it has arrived: pkt-lines are 4 hex digits of length
    /// (themselves included), `0000` a flush.
    static func advertisementEnd(_ bytes: [UInt8]) -> Int? {
        var i = 0
        while i + 4 <= bytes.count {
            guard let length = Int(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
            if length == 0 { return i + 4 }
            guard length >= 4 else { return nil }
            i += length
        }
        return nil
    }
}

/// OpenSSH's key formats: `-----BEGIN OPENSSH PRIVATE KEY-----` (openssh-key-v1, unencrypted) and known_hosts.
public enum OpenSSHKeys {
    /// An ed25519 or ECDSA (P-256, P-384, P-521) private key; a passphrase-protected or RSA key is refused by
    /// name.
    public static func privateKey(_ text: String) throws -> NIOSSHPrivateKey {
        let begin = "-----BEGIN OPENSSH PRIVATE KEY-----", end = "-----END OPENSSH PRIVATE KEY-----"
        guard let b = text.range(of: begin), let e = text.range(of: end), b.upperBound < e.lowerBound,
            let blob = Data(base64Encoded: text[b.upperBound..<e.lowerBound].filter { !$0.isWhitespace })
        else {
            throw GitRemote.Failure(
                message: text.contains("BEGIN RSA PRIVATE KEY") || text.contains("BEGIN PRIVATE KEY")
                    ? "not in OpenSSH's format (ssh-keygen -p -f KEY converts it)" : "not an OpenSSH private key")
        }
        var reader = Reader(Array(blob))
        guard reader.take(15) == Array("openssh-key-v1\0".utf8) else { throw GitRemote.Failure(message: "not an openssh-key-v1 key") }
        let cipher = try reader.string(), _ = try reader.bytes(), _ = try reader.bytes()
        guard cipher == "none" else { throw GitRemote.Failure(message: "protected by a passphrase (\(cipher)); give the operator a key without one") }
        guard try reader.uint32() == 1 else { throw GitRemote.Failure(message: "holds more than one key") }
        _ = try reader.bytes()
        var secret = Reader(try reader.bytes())
        guard try secret.uint32() == (try secret.uint32()) else { throw GitRemote.Failure(message: "corrupt (its check numbers differ)") }
        let type = try secret.string()
        do {
            switch type {
            case "ssh-ed25519":
                _ = try secret.bytes()
                let both = try secret.bytes()
                guard both.count == 64 else { throw GitRemote.Failure(message: "an ed25519 key of \(both.count) bytes") }
                return NIOSSHPrivateKey(ed25519Key: try Curve25519.Signing.PrivateKey(rawRepresentation: both.prefix(32)))
            case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
                _ = try secret.string()
                _ = try secret.bytes()
                var scalar = try secret.bytes()
                let size = type.hasSuffix("256") ? 32 : type.hasSuffix("384") ? 48 : 66
                while scalar.count > size, scalar.first == 0 { scalar.removeFirst() }
                scalar = Array(repeating: 0, count: max(0, size - scalar.count)) + scalar
                switch size {
                case 32: return NIOSSHPrivateKey(p256Key: try P256.Signing.PrivateKey(rawRepresentation: scalar))
                case 48: return NIOSSHPrivateKey(p384Key: try P384.Signing.PrivateKey(rawRepresentation: scalar))
                default: return NIOSSHPrivateKey(p521Key: try P521.Signing.PrivateKey(rawRepresentation: scalar))
                }
            default:
                throw GitRemote.Failure(
                    message: "a \(type) key, which the operator cannot use to list tags (the clone can); give it an ed25519 or ECDSA key")
            }
        } catch let failure as GitRemote.Failure {
            throw failure
        } catch {
            throw GitRemote.Failure(message: "unreadable \(type) key: \(error)")
        }
    }

    /// The keys known_hosts lists for `host` (`host` or `[host]:port`): plain and hashed (`|1|salt|hash`) names,
    /// `*`/`?` patterns, `!` negations; `@revoked` keys are never trusted and `@cert-authority` lines are
    /// skipped (certificates are not checked).
    public static func knownHostKeys(_ text: String, for host: String) -> [NIOSSHPublicKey] {
        var keys: [NIOSSHPublicKey] = []
        var revoked: [NIOSSHPublicKey] = []
        for raw in text.split(whereSeparator: \.isNewline) {
            var fields = raw.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            var marker: String?
            if first.hasPrefix("@") { marker = first; fields.removeFirst() }
            guard fields.count >= 3, matches(fields[0], host: host), let key = try? NIOSSHPublicKey(openSSHPublicKey: fields[1] + " " + fields[2])
            else { continue }
            switch marker {
            case nil: keys.append(key)
            case "@revoked"?: revoked.append(key)
            default: continue
            }
        }
        return keys.filter { !revoked.contains($0) }
    }

    /// Whether a known_hosts line's host field (comma-separated patterns, or one hashed name) names `host`.
    public static func matches(_ patterns: String, host: String) -> Bool {
        if patterns.hasPrefix("|1|") {
            let parts = patterns.split(separator: "|")
            guard parts.count == 3, let salt = Data(base64Encoded: String(parts[1])), let hash = Data(base64Encoded: String(parts[2])) else {
                return false
            }
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(host.utf8), using: SymmetricKey(data: salt))
            return Data(mac) == hash
        }
        var matched = false
        for pattern in patterns.lowercased().split(separator: ",") {
            if pattern.hasPrefix("!") {
                if wildcard(Array(pattern.dropFirst()), Array(host)) { return false }
            } else if wildcard(Array(pattern), Array(host)) {
                matched = true
            }
        }
        return matched
    }

    /// OpenSSH's `match_pattern`: `*` any run, `?` any one character, everything else (`[` included) literal.
    static func wildcard(_ pattern: [Character], _ text: [Character]) -> Bool {
        var p = 0, t = 0, star: Int?, resume = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == "?" || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == "*" {
                star = p
                resume = t
                p += 1
            } else if let s = star {
                p = s + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }

    /// SSH wire encoding: big-endian uint32, and strings as a uint32 length and bytes.
    struct Reader {
        let data: [UInt8]
        var at = 0
        init(_ data: [UInt8]) { self.data = data }
        mutating func take(_ n: Int) -> [UInt8]? {
            guard n >= 0, at + n <= data.count else { return nil }
            defer { at += n }
            return Array(data[at..<at + n])
        }
        mutating func uint32() throws -> UInt32 {
            guard let b = take(4) else { throw GitRemote.Failure(message: "truncated") }
            return b.reduce(0) { $0 << 8 | UInt32($1) }
        }
        mutating func bytes() throws -> [UInt8] {
            let n = Int(try uint32())
            guard let b = take(n) else { throw GitRemote.Failure(message: "truncated") }
            return b
        }
        mutating func string() throws -> String { String(decoding: try bytes(), as: UTF8.self) }
    }
}
