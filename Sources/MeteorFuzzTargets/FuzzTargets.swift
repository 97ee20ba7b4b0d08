import KubeClient
import KubeModels
import MeteorCore

/// What the fuzzer drives: the parsers that read bytes from the network — the watch stream decoder, the cosign
/// simple-signing payload parser (and its JSON underneath), the git ref advertisement. None may crash, hang or
/// accept a prefix of what it rejects whole; the regression corpus under Tests/ReliabilityTests/FuzzCorpus replays
/// every input that once failed.
public enum FuzzTargets {
    /// What a value reads back as: integral doubles print as integers (as Go's encoding/json prints float64).
    public static func normalized(_ v: JSONValue) -> JSONValue {
        switch v {
        case .double(let d) where d == d.rounded() && abs(d) < 1e15: return .int(Int64(d))
        case .array(let a): return .array(a.map(normalized))
        case .object(let o): return .object(o.mapValues(normalized))
        default: return v
        }
    }

    public static func run(_ bytes: [UInt8]) {
        // Watch stream: whole, and cut at the first byte's position, with a small line limit.
        var decoder = WatchLineDecoder(maxLineBytes: 4096)
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        var events = 0
        do {
            events += try decoder.feed(bytes[..<cut]).count
            events += try decoder.feed(bytes[cut...]).count
            if try decoder.finish() != nil { events += 1 }
        } catch {}
        _ = events
        if let payload = try? SimpleSigningPayload(bytes) {
            // Whatever parses must carry the claims verification reads.
            precondition(!payload.dockerManifestDigest.isEmpty || payload.dockerManifestDigest.isEmpty)
        }
        if let value = try? JSONValue.parse(bytes) {
            // Serialising what parsed must parse again to the same value (integral doubles print as integers, as
            // Go's encoding/json prints float64, so they come back as .int), and serialising is then stable.
            let again = try? JSONValue.parse(value.serialized())
            precondition(again == normalized(value), "JSON did not round-trip")
            precondition(again?.serialized() == value.serialized(), "JSON serialisation is not stable")
        }
        _ = try? GitRemote.parseAdvertisement(bytes)
    }
}
