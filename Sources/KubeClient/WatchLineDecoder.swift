import KubeModels

/// Splits a watch response body into events as chunks arrive. Only the unfinished line is buffered, and a
/// line longer than `maxLineBytes` is an error, so memory stays bounded however long the stream runs.
public struct WatchLineDecoder: Sendable {
    public let maxLineBytes: Int
    private var pending: [UInt8] = []

    public init(maxLineBytes: Int = 16 * 1024 * 1024) { self.maxLineBytes = maxLineBytes }

    public struct LineTooLong: Error, Sendable {}

    /// Feeds a chunk and returns the complete JSON documents it finished.
    public mutating func feed<Bytes: Collection>(_ chunk: Bytes) throws -> [JSONValue] where Bytes.Element == UInt8 {
        var out: [JSONValue] = []
        for b in chunk {
            if b == 0x0A {
                if let v = try flush() { out.append(v) }
            } else {
                pending.append(b)
                if pending.count > maxLineBytes { throw LineTooLong() }
            }
        }
        return out
    }

    /// Whatever is left when the stream ends (a final event without its newline).
    public mutating func finish() throws -> JSONValue? { try flush() }

    private mutating func flush() throws -> JSONValue? {
        defer { pending.removeAll(keepingCapacity: pending.count < 64 * 1024) }
        if pending.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { return nil }
        return try JSONValue.parse(pending)
    }

    public var bufferedBytes: Int { pending.count }
}
