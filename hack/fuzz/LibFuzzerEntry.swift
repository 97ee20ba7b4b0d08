// libFuzzer's entry point for the fuzzed parsers (FuzzTargets.run). hack/fuzz.sh links this file, outside SwiftPM,
// against the MeteorFuzzTargets closure built with -sanitize=fuzzer: libFuzzer brings its own `main`, which an
// executable target cannot take (SwiftPM gives executables their own entry point).
import MeteorFuzzTargets

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.run(size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
