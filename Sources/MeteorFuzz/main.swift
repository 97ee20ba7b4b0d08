import Foundation
import MeteorFuzzTargets

// Two builds of one target:
// - hack/fuzz.sh builds it with -sanitize=fuzzer -D FUZZING -parse-as-library: libFuzzer supplies main() and
//   calls LLVMFuzzerTestOneInput below.
// - a normal build replays files: `meteor-fuzz FILE...` (what a crasher is checked with).
#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzTargets.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#else
for path in CommandLine.arguments.dropFirst() {
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("meteor-fuzz: cannot read \(path)\n".utf8))
        exit(1)
    }
    FuzzTargets.run(Array(data))
}
print("replayed \(CommandLine.arguments.count - 1) input(s)")
#endif
