import Foundation
import KubeModels

/// Supplies the `Authorization` header, refreshing rotating credentials: token files are re-read when older
/// than `tokenFileMaxAge` (client-go re-reads once a minute) or after a 401, exec plugins are re-run when their
/// credential expires or after a 401.
actor CredentialProvider {
    let credentials: ClusterConfiguration.Credentials
    let tokenFileMaxAge: TimeInterval
    private var cached: String?
    private var cachedAt: Date = .distantPast
    private var expiry: Date?

    init(_ credentials: ClusterConfiguration.Credentials, tokenFileMaxAge: TimeInterval = 60) {
        self.credentials = credentials
        self.tokenFileMaxAge = tokenFileMaxAge
    }

    /// The bearer token to send, if any.
    func token(forceRefresh: Bool = false) async throws -> String? {
        switch credentials {
        case .none, .clientCertificate: return nil
        case .token(let t): return t
        case .tokenFile(let path):
            if !forceRefresh, let cached, Date().timeIntervalSince(cachedAt) < tokenFileMaxAge { return cached }
            do {
                let t = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                cached = t
                cachedAt = Date()
                return t
            } catch {
                if let cached { return cached }
                throw KubeError.configuration("cannot read token file \(path): \(error.localizedDescription)")
            }
        case .exec(let exec):
            if !forceRefresh, let cached, expiry.map({ $0 > Date().addingTimeInterval(10) }) ?? true { return cached }
            let (token, exp) = try await Self.runExec(exec)
            cached = token
            expiry = exp
            return token
        }
    }

    /// Runs an exec credential plugin and reads its ExecCredential.
    static func runExec(_ exec: ExecConfig) async throws -> (String, Date?) {
        let process = Process()
        let command = exec.command
        if command.contains("/") {
            let path = command.hasPrefix("/") ? command : (exec.workingDirectory.map { $0 + "/" + command } ?? command)
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = exec.args
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [command] + exec.args
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in exec.env { env[k] = v }
        let info: JSONValue = ["apiVersion": .string(exec.apiVersion), "kind": "ExecCredential", "spec": ["interactive": false]]
        env["KUBERNETES_EXEC_INFO"] = info.serializedString()
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let exited = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { p in
            exited.continuation.yield(p.terminationStatus)
            exited.continuation.finish()
        }
        do { try process.run() } catch {
            throw KubeError.configuration("exec credential plugin \(command): cannot start: \(error.localizedDescription)")
        }
        async let outRead = readToEnd(out.fileHandleForReading)
        async let errRead = readToEnd(err.fileHandleForReading)
        let (outData, errData) = await (outRead, errRead)
        var status: Int32 = -1
        for await s in exited.stream { status = s }
        guard status == 0 else {
            let msg = String(decoding: errData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw KubeError.configuration("exec credential plugin \(command) exited with \(status): \(msg)")
        }
        guard let cred = try? JSONValue.parse(outData), cred["kind"]?.stringValue == "ExecCredential" else {
            throw KubeError.configuration("exec credential plugin \(command): output is not an ExecCredential")
        }
        guard let token = cred[path: "status", "token"]?.stringValue, !token.isEmpty else {
            throw KubeError.configuration("exec credential plugin \(command): ExecCredential status.token is missing")
        }
        let exp = cred[path: "status", "expirationTimestamp"]?.stringValue.flatMap(KubeTime.parse)
        return (token, exp)
    }
}

/// Reads a pipe to its end on a GCD thread: a blocking read on Swift's small cooperative pool can starve every
/// other task in the process (the API server's included, when it runs in the same process).
func readToEnd(_ handle: FileHandle) async -> Data {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: PipeReader.readToEnd(handle.fileDescriptor)) }
    }
}

/// Blocking reads of a pipe that survive signals. Foundation's `FileHandle.readDataToEndOfFile()` and
/// `availableData` trap on EINTR (a SIGCHLD from any child process can interrupt them); these retry instead.
public enum PipeReader {
    /// The next chunk, empty at end of file.
    public static func readChunk(_ fd: Int32, max: Int = 65536) -> Data {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, max) }
            if n >= 0 { return Data(buffer[0..<n]) }
            if errno != EINTR { return Data() }
        }
    }

    public static func readToEnd(_ fd: Int32) -> Data {
        var out = Data()
        while true {
            let chunk = readChunk(fd)
            if chunk.isEmpty { return out }
            out.append(chunk)
        }
    }
}
