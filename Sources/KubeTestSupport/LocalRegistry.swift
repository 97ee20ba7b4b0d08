import AsyncHTTPClient
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Debian's `docker-registry` (Docker Distribution) on loopback, for tests that need a real OCI registry.
public final class LocalRegistry: Sendable {
    public let address: String
    let process: Process
    let directory: URL

    public static let binary = "/usr/bin/docker-registry"
    public static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    /// Starts the registry at `127.0.0.1:port` (a free port when nil) with storage in a fresh directory; returns
    /// once `/v2/` answers.
    public init(port: Int? = 5000) async throws {
        let port = try port ?? Self.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("registry-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        address = "127.0.0.1:\(port)"
        let config = directory.appendingPathComponent("config.yml")
        try """
        version: 0.1
        log:
          level: error
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(directory.appendingPathComponent("data").path)
          delete:
            enabled: true
        http:
          addr: \(address)
        """.write(to: config, atomically: true, encoding: .utf8)
        // Someone else's registry on the port would answer our readiness check and serve stale content.
        if let r = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "http://\(address)/v2/"), timeout: .seconds(1)), r.status.code > 0 {
            throw Failure(message: "\(address) is already in use (a registry left over from an earlier run?)")
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["serve", config.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The registry is another process with no readiness signal: poll /v2/ briefly.
        for _ in 0..<100 {
            if !process.isRunning { throw Failure(message: "docker-registry exited at start (is \(address) already in use?)") }
            if let r = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "http://\(address)/v2/"), timeout: .seconds(1)),
                r.status.code == 200
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.terminate()
        throw Failure(message: "docker-registry did not answer on \(address)")
    }

    /// A loopback port nobody listens on now (the kernel's choice for an ephemeral bind).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Failure(message: "bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Stops the registry. Never blocks the caller (a cooperative thread): the wait for exit and the clean-up of
    /// its storage happen on a GCD thread.
    public func stop() {
        let process = self.process, directory = self.directory
        if process.isRunning { process.terminate() }
        DispatchQueue.global().async {
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: directory)
        }
    }
}
