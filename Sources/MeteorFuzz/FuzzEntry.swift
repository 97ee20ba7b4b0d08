import Foundation
import MeteorFuzzTargets

// Two builds of one target:
// - hack/fuzz.sh builds it with -sanitize=fuzzer -D FUZZING -parse-as-library: there is no Swift main, libFuzzer
//   supplies one and calls LLVMFuzzerTestOneInput below.
// - a normal build replays files: `meteor-fuzz FILE...` (how a crasher is checked).
// (Swift parses inactive #if branches too, so neither branch may hold top-level statements.)
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzTargets.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#else
@main
struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("meteor-fuzz: cannot read \(path)\n".utf8))
                exit(1)
            }
            FuzzTargets.run(Array(data))
        }
        print("replayed \(CommandLine.arguments.count - 1) input(s)")
    }
}
#endif
