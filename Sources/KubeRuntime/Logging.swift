import Foundation
import KubeModels
import Logging
import Synchronization

/// Log output formats: JSON lines (the default in a cluster, for log collectors) or human-readable text.
public enum LogFormat: String, Sendable, CaseIterable {
    case json, text

    /// JSON when running in a pod, text on a terminal.
    public static var automatic: LogFormat {
        ProcessInfo.processInfo.environment["KUBERNETES_SERVICE_HOST"] != nil ? .json : .text
    }

    /// Bootstraps swift-log once for the process.
    public func bootstrap(level: Logger.Level = .info) {
        switch self {
        case .json:
            LoggingSystem.bootstrap { label in
                var h = JSONLogHandler(label: label, sink: .standardError)
                h.logLevel = level
                return h
            }
        case .text:
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
        }
    }
}

/// One JSON object per line: `ts`, `level`, `logger`, `msg`, then the metadata (`controller`, `object`, …).
public struct JSONLogHandler: LogHandler {
    public enum Sink: Sendable {
        case standardError
        case capture(LogCapture)
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let sink: Sink

    public init(label: String, sink: Sink) {
        self.label = label
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String, function: String, line: UInt
    ) {
        var object: JSONObject = [
            "ts": .string(KubeTime.formatMicro(Date())), "level": .string(level.rawValue), "logger": .string(label),
            "msg": .string(message.description),
        ]
        var all = self.metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let explicit { all.merge(explicit) { $1 } }
        for (k, v) in all where object[k] == nil { object[k] = Self.json(v) }
        let line = JSONValue.object(object).serializedString() + "\n"
        switch sink {
        case .standardError: FileHandle.standardError.write(Data(line.utf8))
        case .capture(let c): c.append(line)
        }
    }

    static func json(_ v: Logger.Metadata.Value) -> JSONValue {
        switch v {
        case .string(let s): return .string(s)
        case .stringConvertible(let c): return .string(c.description)
        case .array(let a): return .array(a.map(json))
        case .dictionary(let d): return .object(d.mapValues(json))
        }
    }
}

/// Collects log lines in memory (tests check what was and was not logged).
public final class LogCapture: Sendable {
    let lines = Mutex<[String]>([])
    public init() {}
    public func append(_ line: String) { lines.withLock { $0.append(line) } }
    public var text: String { lines.withLock { $0.joined() } }

    public func logger(_ label: String, level: Logger.Level = .trace) -> Logger {
        Logger(label: label) { label in
            var h = JSONLogHandler(label: label, sink: .capture(self))
            h.logLevel = level
            return h
        }
    }
}
