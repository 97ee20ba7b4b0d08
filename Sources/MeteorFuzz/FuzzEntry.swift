import Foundation
import MeteorFuzzTargets

/// `meteor-fuzz FILE...` replays inputs (how a crasher is checked); `meteor-fuzz --fuzz SECONDS CORPUS_DIR` is a
/// mutation fuzzer over the corpus (bit flips, byte and block insertions, truncations, splices of two inputs),
/// writing each input to `.fuzz/last-input` before running it so a crash leaves its input behind.
///
/// Not coverage-guided: linking libFuzzer's driver into a SwiftPM executable failed here (SwiftPM renames the
/// entry point to `MeteorFuzz_main`, and gold then aborts on the duplicate `main`); see RELIABILITY.md.
@main
struct FuzzEntry {
    static func main() throws {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--fuzz", args.count >= 3, let seconds = Double(args[1]) {
            try fuzz(seconds: seconds, corpus: URL(fileURLWithPath: args[2]))
            return
        }
        for path in args {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("meteor-fuzz: cannot read \(path)\n".utf8))
                exit(1)
            }
            FuzzTargets.run(Array(data))
        }
        print("replayed \(args.count) input(s)")
    }

    static func fuzz(seconds: Double, corpus: URL) throws {
        let seeds = try FileManager.default.contentsOfDirectory(at: corpus, includingPropertiesForKeys: nil).compactMap { try? Array(Data(contentsOf: $0)) }
        guard !seeds.isEmpty else { throw CocoaError(.fileReadNoSuchFile) }
        try FileManager.default.createDirectory(atPath: ".fuzz", withIntermediateDirectories: true)
        let last = URL(fileURLWithPath: ".fuzz/last-input")
        var rng = SystemRandomNumberGenerator()
        let deadline = Date().addingTimeInterval(seconds)
        var runs = 0
        while Date() < deadline {
            var input = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...8, using: &rng) { mutate(&input, seeds: seeds, rng: &rng) }
            try Data(input).write(to: last)
            FuzzTargets.run(input)
            runs += 1
        }
        print("fuzzed \(runs) inputs in \(Int(seconds)) s from \(seeds.count) seeds: no crash")
    }

    static func mutate(_ b: inout [UInt8], seeds: [[UInt8]], rng: inout SystemRandomNumberGenerator) {
        let interesting: [UInt8] = [0, 0x0a, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0x30, 0x66, 0x7f, 0x80, 0xff]
        switch Int.random(in: 0..<6, using: &rng) {
        case 0 where !b.isEmpty: b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
        case 1: b.insert(interesting.randomElement(using: &rng)!, at: Int.random(in: 0...b.count, using: &rng))
        case 2 where !b.isEmpty: b.removeLast(Int.random(in: 1...b.count, using: &rng))
        case 3 where !b.isEmpty: b.remove(at: Int.random(in: 0..<b.count, using: &rng))
        case 4:
            let other = seeds.randomElement(using: &rng)!
            if !other.isEmpty { b.insert(contentsOf: other[Int.random(in: 0..<other.count, using: &rng)...], at: Int.random(in: 0...b.count, using: &rng)) }
        default:
            if b.count > 1 {
                let i = Int.random(in: 0..<b.count, using: &rng), j = Int.random(in: i..<b.count, using: &rng)
                b.insert(contentsOf: b[i...j], at: Int.random(in: 0...b.count, using: &rng))
            }
        }
        if b.count > 8192 { b.removeLast(b.count - 8192) }
    }
}
