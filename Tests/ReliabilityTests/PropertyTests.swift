import MeteorFuzzTargets
import Foundation
import KubeClient
import KubeModels
import MeteorCore
import PropertyBased
import KubeTestSupport
import Testing

/// Random JSON values built from a tape of random bytes (so the library's shrinking of byte arrays shrinks the
/// value): nested up to `depth`, with the awkward corners — int64 extremes, doubles, escapes, control characters,
/// non-BMP scalars.
struct JSONTape {
    var bytes: [UInt8]
    var i = 0
    static let palette: [Unicode.Scalar] = [
        "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "ß", "中", "😀", "\u{2028}", "-", ":", "#",
    ]

    mutating func next() -> UInt8 {
        defer { i += 1 }
        return i < bytes.count ? bytes[i] : 0
    }

    mutating func int64() -> Int64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(next()) }
        return Int64(bitPattern: v)
    }

    mutating func string() -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<Int(next() % 9) { s.append(Self.palette[Int(next()) % Self.palette.count]) }
        return String(s)
    }

    mutating func value(depth: Int) -> JSONValue {
        switch Int(next()) % (depth > 0 ? 7 : 5) {
        case 0: return .null
        case 1: return .bool(next() % 2 == 0)
        case 2: return .int(int64())
        case 3: return .double(Double(int64() >> 11) / Double(1 << UInt64(next() % 40)))
        case 4: return .string(string())
        case 5: return .array((0..<Int(next() % 4)).map { _ in value(depth: depth - 1) })
        default:
            var o: JSONObject = [:]
            for _ in 0..<Int(next() % 4) { o[string()] = value(depth: depth - 1) }
            return .object(o)
        }
    }

    static func build(_ bytes: [UInt8], depth: Int) -> JSONValue {
        var tape = JSONTape(bytes: bytes)
        return tape.value(depth: depth)
    }
}

let json3 = Gen.uint8(in: 0...255).array(of: 0...120).map { JSONTape.build($0, depth: 3) }
let json2 = Gen.uint8(in: 0...255).array(of: 0...120).map { JSONTape.build($0, depth: 2) }
let anyBytes = Gen.uint8(in: 0...255).array(of: 0...200)

/// What a value reads back as (the fuzz targets' rule, shared).
func normalized(_ v: JSONValue) -> JSONValue { FuzzTargets.normalized(v) }

@Suite struct PropertyTests {
    @Test func jsonRoundTripsExactly() async {
        await propertyCheck(count: Scale.of(300), input: json3) { value in
            let bytes = value.serialized()
            let parsed = try JSONValue.parse(bytes)
            #expect(parsed == normalized(value))
            #expect(parsed.serialized() == bytes, "serialising is stable")
        }
    }

    @Test func truncatedOrRandomJSONNeverCrashes() async {
        await propertyCheck(count: Scale.of(300), input: json3, Gen.int(in: 0...200)) { value, cut in
            let bytes = value.serialized()
            _ = try? JSONValue.parse(Array(bytes.prefix(cut)))
        }
        await propertyCheck(count: Scale.of(300), input: anyBytes) { bytes in
            _ = try? JSONValue.parse(bytes)
        }
    }

    @Test func yamlRendersWhatItParsesBack() async {
        await propertyCheck(count: Scale.of(200), input: json2) { value in
            // YAML has no separate integer and float of the same value in every case; objects are the unit we ship.
            let doc: JSONValue = ["value": value]
            let parsed = try YAML.parse(YAML.render(doc))
            #expect(parsed == normalized(doc), "\(YAML.render(doc))")
        }
    }

    /// However a watch stream is cut into chunks, the same events come out; garbage never crashes it.
    @Test func watchDecoderIsIndependentOfChunking() async {
        await propertyCheck(count: Scale.of(200), input: json2.array(of: 1...6), Gen.int(in: 1...40).array(of: 1...20)) { objects, cuts in
            let events = objects.map { JSONValue.object(["type": "ADDED", "object": $0]) }
            let stream = events.flatMap { $0.serialized() + [UInt8(ascii: "\n")] }
            var decoder = WatchLineDecoder()
            var out: [JSONValue] = []
            var offset = 0, i = 0
            while offset < stream.count {
                let size = cuts[i % cuts.count]
                out += try decoder.feed(stream[offset..<min(stream.count, offset + size)])
                offset += size
                i += 1
            }
            if let last = try decoder.finish() { out.append(last) }
            #expect(out == events.map(normalized))
        }
        await propertyCheck(count: Scale.of(300), input: anyBytes) { bytes in
            var decoder = WatchLineDecoder(maxLineBytes: 64)
            _ = try? decoder.feed(bytes)
            _ = try? decoder.finish()
        }
    }

    @Test func labelSelectorsParseBackFromTheirText() async {
        let requirement = Gen.uint8(in: 0...255).array(of: 4...20).map { bytes -> LabelSelector.Requirement in
            var tape = JSONTape(bytes: bytes)
            func word(_ min: Int) -> String {
                let letters = Array("abcdefghijklmnopqrstuvwxyz0123456789")
                return String((0..<(min + Int(tape.next() % 6))).map { _ in letters[Int(tape.next()) % letters.count] })
            }
            let key = word(1), values = (0..<(1 + Int(tape.next() % 3))).map { _ in word(1) }
            switch tape.next() % 6 {
            case 0: return .init(key: key, op: .equals, values: [values[0]])
            case 1: return .init(key: key, op: .notEquals, values: [values[0]])
            case 2: return .init(key: key, op: .in, values: values)
            case 3: return .init(key: key, op: .notIn, values: values)
            case 4: return .init(key: key, op: .exists, values: [])
            default: return .init(key: key, op: .doesNotExist, values: [])
            }
        }
        await propertyCheck(count: Scale.of(300), input: requirement.array(of: 1...4)) { requirements in
            let selector = LabelSelector(requirements)
            let parsed = try LabelSelector.parse(selector.description)
            // Set-based values are a set: order and duplicates do not matter, everything else must survive.
            #expect(
                parsed.requirements.map { [$0.key, "\($0.op)", Set($0.values).sorted().joined(separator: ",")] }
                    == selector.requirements.map { [$0.key, "\($0.op)", Set($0.values).sorted().joined(separator: ",")] })
        }
        await propertyCheck(count: Scale.of(500), input: Gen.ascii.string(of: 0...30)) { text in
            _ = try? LabelSelector.parse(text)
        }
    }

    @Test func signaturePayloadsAndGitAdvertisementsNeverCrashTheParsers() async {
        await propertyCheck(count: Scale.of(300), input: anyBytes) { bytes in
            _ = try? SimpleSigningPayload(bytes)
            _ = try? GitRemote.parseAdvertisement(bytes)
        }
        let digest = "sha256:" + String(repeating: "c", count: 64)
        let valid = CosignSigner.payload(digest: digest, dockerReference: "quay.io/meteor/car:v1")
        let decoded = try? SimpleSigningPayload(valid)
        #expect(decoded?.dockerManifestDigest == digest)
        await propertyCheck(count: Scale.of(300), input: Gen.int(in: 0...(valid.count - 1))) { cut in
            // Every strict prefix of a payload is refused, never half-accepted.
            #expect(throws: (any Error).self) { try SimpleSigningPayload(Array(valid.prefix(cut))) }
        }
    }
}

/// Every input in the fuzz corpus (seeds and former crashers) still passes the fuzz targets' checks.
@Suite struct FuzzCorpusTests {
    @Test func theRegressionCorpusReplays() throws {
        let dir = TestCluster.repositoryDirectory.appendingPathComponent("Tests/ReliabilityTests/FuzzCorpus")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(files.count >= 4)
        for f in files { FuzzTargets.run(Array(try Data(contentsOf: dir.appendingPathComponent(f)))) }
    }
}
