import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// OpenSSH's own `sshd` on loopback, serving the bare repositories under a directory to one authorized key, for
/// tests of git over ssh (the clone Task, the operator's tag listing). It runs as the test's user, which is the
/// only one it can log in; its host key is new each start, and `knownHosts` is the line that trusts it.
public final class SSHServer: Sendable {
    public static let binary = "/usr/sbin/sshd"
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    public let port: Int
    /// The `known_hosts` line for this server (`[127.0.0.1]:PORT ssh-ed25519 AAAA…`).
    public let knownHosts: String
    let user: String
    let root: URL
    let directory: URL
    let pid: Int32

    /// A new key pair (ed25519 unless `type` says) made by ssh-keygen: the private key in OpenSSH's format and the public line.
    public static func keyPair(type: String = "ed25519", comment: String = "meteor-test") async throws -> (privateKey: String, publicKey: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sshkey-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = dir.appendingPathComponent("id").path
        let made = try await runProcess("/usr/bin/ssh-keygen", ["-q", "-t", type, "-N", "", "-C", comment, "-f", key])
        guard made.status == 0 else { throw Failure(message: "ssh-keygen: \(made.output)") }
        return (
            try String(contentsOfFile: key, encoding: .utf8),
            try String(contentsOfFile: key + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        )
    }

    /// Starts sshd on a free loopback port, serving `root`'s repositories to `authorizedKey`; returns once it
    /// says it listens.
    public static func start(root: URL, authorizedKey: String) async throws -> SSHServer {
        guard isInstalled else { throw Failure(message: "\(binary) is not installed (hack/test installs openssh-server)") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sshd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let hostKey = directory.appendingPathComponent("host_ed25519_key").path
        let made = try await runProcess("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey])
        guard made.status == 0 else { throw Failure(message: "ssh-keygen: \(made.output)") }
        try (authorizedKey + "\n").write(to: directory.appendingPathComponent("authorized_keys"), atomically: true, encoding: .utf8)
        // sshd's privilege separation wants its empty directory to exist.
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        let port = try LocalRegistry.freePort()
        let config = directory.appendingPathComponent("sshd_config")
        try """
        ListenAddress 127.0.0.1
        Port \(port)
        HostKey \(hostKey)
        AuthorizedKeysFile \(directory.appendingPathComponent("authorized_keys").path)
        PidFile \(directory.appendingPathComponent("sshd.pid").path)
        UsePAM no
        StrictModes no
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin prohibit-password
        LogLevel INFO

        """.write(to: config, atomically: true, encoding: .utf8)
        // Daemonized, not this process's child: a child of the test that outlives the steps' processes kept
        // Foundation from noticing that they ended. sshd logs to a file; it has written its pid once it listens.
        let log = directory.appendingPathComponent("sshd.log")
        let started = try await runProcess(binary, ["-f", config.path, "-E", log.path])
        guard started.status == 0 else { throw Failure(message: "sshd did not start: \(started.output)") }
        let pidFile = directory.appendingPathComponent("sshd.pid").path
        let pid: Int32 = try await within(.seconds(15), "sshd listening") {
            while true {
                if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                    let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                    (try? String(contentsOf: log, encoding: .utf8))?.contains("Server listening on 127.0.0.1 port \(port)") == true
                {
                    return pid
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let publicHostKey = try String(contentsOfFile: hostKey + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        let user = getpwuid(getuid()).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "root"
        return SSHServer(port: port, knownHosts: "[127.0.0.1]:\(port) \(publicHostKey)", user: user, root: root, directory: directory, pid: pid)
    }

    init(port: Int, knownHosts: String, user: String, root: URL, directory: URL, pid: Int32) {
        self.port = port
        self.knownHosts = knownHosts
        self.user = user
        self.root = root
        self.directory = directory
        self.pid = pid
    }

    /// The repository's ssh URL (`ssh://user@127.0.0.1:PORT/…/name.git`).
    public func url(_ repository: String) -> String { "ssh://\(user)@127.0.0.1:\(port)\(root.appendingPathComponent("\(repository).git").path)" }

    /// What sshd logged (authentication decisions included).
    public var log: String { (try? String(contentsOf: directory.appendingPathComponent("sshd.log"), encoding: .utf8)) ?? "" }

    public func stop() {
        kill(pid, SIGTERM)
        try? FileManager.default.removeItem(at: directory)
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }
}
