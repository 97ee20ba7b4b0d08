import Foundation
import KubeClient
import Synchronization

/// A long-running child process whose output is read line by line as it comes (on a GCD thread, never on the
/// cooperative pool), so a test can wait for a line, signal the process and collect its exit status.
public final class BackgroundProcess: Sendable {
    let process: Process
    final class Shared: Sendable {
        let output = Mutex<(text: String, waiters: [(String, CheckedContinuation<String, any Error>)])>(("", []))
        let exitStatus = Mutex<Int32?>(nil)
    }
    let shared = Shared()
    let exited: AsyncStream<Int32>

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: URL? = nil) throws {
        let (process, pipe) = Process.printingToOnePipe(executable, arguments, environment: environment, directory: directory)
        self.process = process
        process.standardInput = FileHandle.nullDevice
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        exited = stream
        let shared = self.shared
        process.terminationHandler = { p in
            shared.exitStatus.withLock { $0 = p.terminationStatus }
            continuation.yield(p.terminationStatus)
            continuation.finish()
        }
        try process.run()
        let handle = pipe.fileHandleForReading
        DispatchQueue.global().async {
            while true {
                let data = PipeReader.readChunk(handle.fileDescriptor)
                if data.isEmpty { break }
                let ready: [CheckedContinuation<String, any Error>] = shared.output.withLock { state in
                    state.text += String(decoding: data, as: UTF8.self)
                    var done: [CheckedContinuation<String, any Error>] = []
                    let text = state.text
                    state.waiters.removeAll { waiter in
                        guard text.split(separator: "\n").contains(where: { $0.contains(waiter.0) }) else { return false }
                        done.append(waiter.1)
                        return true
                    }
                    return done
                }
                let text = shared.output.withLock { $0.text }
                for c in ready { c.resume(returning: text) }
            }
            let rest = shared.output.withLock { state in
                let w = state.waiters
                state.waiters = []
                return w
            }
            for w in rest { w.1.resume(throwing: Failure(message: "process ended before printing \(w.0)")) }
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Everything printed so far.
    public var text: String { shared.output.withLock { $0.text } }

    /// Returns the first line containing `marker`, waiting for it to be printed.
    public func line(containing marker: String) async throws -> String {
        let all: String = try await withCheckedThrowingContinuation { c in
            let now: String? = shared.output.withLock { state in
                if state.text.split(separator: "\n").contains(where: { $0.contains(marker) }) { return state.text }
                state.waiters.append((marker, c))
                return nil
            }
            if let now { c.resume(returning: now) }
        }
        return String(all.split(separator: "\n").first { $0.contains(marker) } ?? "")
    }

    /// Whether the process has not ended yet.
    public var isRunning: Bool { process.isRunning }

    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for the process to end; returns its exit status.
    public func wait() async -> Int32 {
        for await status in exited { return status }
        return shared.exitStatus.withLock { $0 } ?? -1
    }

    /// SIGTERM, then SIGKILL if it is still running 30 s later: nothing a test started outlives it for long,
    /// even a process that does not stop on SIGTERM.
    public func terminate() {
        guard process.isRunning else { return }
        process.terminate()
        let process = self.process
        DispatchQueue.global().asyncAfter(deadline: .now() + 30) {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }
}
