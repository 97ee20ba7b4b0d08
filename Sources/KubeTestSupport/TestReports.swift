import Foundation
import KubeModels

/// What a test run reports beside its pass/fail, into files hack/test names by environment variable and sums up
/// after the run.
enum TestReportFile {
    /// Appends `line` to the file the environment variable `variable` names (nothing without it). One short
    /// O_APPEND write per line: whole lines even when tests run in parallel.
    static func append(_ line: String, toFileNamedBy variable: String) {
        guard let path = ProcessInfo.processInfo.environment[variable] else { return }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { return }
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}

/// Counts the end-to-end tests run on each backend into the file `METEOR_E2E_TALLY` names (hack/test prints the sum).
public enum E2ETally {
    public static func record(_ backend: Backend) {
        TestReportFile.append(backend.rawValue, toFileNamedBy: "METEOR_E2E_TALLY")
    }
}

/// Rows of RELIABILITY.md's fault table, as each reliability test measured them: the fault, how much of it was
/// injected, what the operator did and what was lost, all from the test's own counts. Printed, and appended as
/// tab-separated lines to the file `METEOR_RELIABILITY_REPORT` names: hack/test sets it and
/// `hack/reliability-report` renders the table from it (`--write` puts it into RELIABILITY.md).
public enum ReliabilityReport {
    /// `suite` defaults to the file's name (each suite has a file of its name, but for a few small ones).
    public static func row(
        _ fault: String, injected: String, did: String, lost: String, backend: Backend? = nil, suite: String? = nil, test: String = #function,
        file: String = #fileID
    ) {
        let suite = suite ?? file.split(separator: "/").last.map { $0.hasSuffix(".swift") ? String($0.dropLast(6)) : String($0) } ?? file
        let name = "\(suite).\(test.split(separator: "(").first ?? "")" + (backend.map { " (\($0.rawValue))" } ?? "")
        let line = [name, fault, injected, did, lost].map { $0.replacingOccurrences(of: "\t", with: " ").replacingOccurrences(of: "\n", with: " ") }
            .joined(separator: "\t")
        print("reliability row: \(line)")
        TestReportFile.append(line, toFileNamedBy: "METEOR_RELIABILITY_REPORT")
    }

    /// A duration as a row states it: seconds to one decimal ("1.4 s").
    public static func seconds(_ d: Duration) -> String {
        String(format: "%.1f s", d.seconds)
    }
}
