import Foundation
import KubeModels

/// Metadata rules kube-apiserver applies to every object (names, labels, annotations, finalizers).
enum ObjectValidation {
    static let dns1123SubdomainMessage =
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    static let dns1123LabelMessage =
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"

    static func isDNS1123Label(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard !b.isEmpty, b.count <= 63 else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        return alnum(b.first!) && alnum(b.last!) && b.allSatisfy { alnum($0) || $0 == 45 }
    }

    static func isDNS1123Subdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNS1123Label(String($0)) }
    }

    static func nameCauses(_ name: String, labelOnly: Bool) -> [StatusCause] {
        if labelOnly {
            if !isDNS1123Label(name) {
                let detail = name.utf8.count > 63 ? "must be no more than 63 characters" : dns1123LabelMessage
                return [StatusCause(reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": \(detail)", field: "metadata.name")]
            }
        } else if !isDNS1123Subdomain(name) {
            let detail = name.utf8.count > 253 ? "must be no more than 253 characters" : dns1123SubdomainMessage
            return [StatusCause(reason: "FieldValueInvalid", message: "Invalid value: \"\(name)\": \(detail)", field: "metadata.name")]
        }
        return []
    }

    static let totalAnnotationSizeLimit = 256 * 1024

    static func metadataCauses(_ meta: JSONValue) -> [StatusCause] {
        var causes: [StatusCause] = []
        if let labels = meta["labels"] {
            guard case .object(let o) = labels else {
                return [
                    StatusCause(
                        reason: "FieldValueTypeInvalid", message: "Invalid value: \"\(labels.typeName)\": must be a map of strings",
                        field: "metadata.labels")
                ]
            }
            for (k, v) in o.sorted(by: { $0.key < $1.key }) {
                do { try LabelSelector.validateKey(k) } catch {
                    causes.append(
                        StatusCause(
                            reason: "FieldValueInvalid",
                            message:
                                "Invalid value: \"\(k)\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                            field: "metadata.labels"))
                }
                guard let s = v.stringValue else {
                    causes.append(
                        StatusCause(
                            reason: "FieldValueTypeInvalid", message: "Invalid value: \(v.serializedString()): must be a string",
                            field: "metadata.labels"))
                    continue
                }
                do { try LabelSelector.validateValue(s) } catch {
                    causes.append(
                        StatusCause(
                            reason: "FieldValueInvalid",
                            message:
                                "Invalid value: \"\(s)\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                            field: "metadata.labels"))
                }
            }
        }
        if let annotations = meta["annotations"] {
            guard case .object(let o) = annotations else {
                return causes + [
                    StatusCause(
                        reason: "FieldValueTypeInvalid", message: "Invalid value: \"\(annotations.typeName)\": must be a map of strings",
                        field: "metadata.annotations")
                ]
            }
            var total = 0
            for (k, v) in o {
                total += k.utf8.count + (v.stringValue?.utf8.count ?? 0)
                if v.stringValue == nil {
                    causes.append(
                        StatusCause(
                            reason: "FieldValueTypeInvalid", message: "Invalid value: \(v.serializedString()): must be a string",
                            field: "metadata.annotations"))
                }
            }
            if total > totalAnnotationSizeLimit {
                causes.append(
                    StatusCause(
                        reason: "FieldValueTooLong", message: "Too long: must have at most \(totalAnnotationSizeLimit) bytes",
                        field: "metadata.annotations"))
            }
        }
        if let finalizers = meta["finalizers"] {
            for (i, f) in (finalizers.arrayValue ?? []).enumerated() where (f.stringValue ?? "").isEmpty {
                causes.append(
                    StatusCause(
                        reason: "FieldValueInvalid", message: "Invalid value: \(f.serializedString()): must be a qualified name",
                        field: "metadata.finalizers[\(i)]"))
            }
        }
        for (i, ref) in (meta["ownerReferences"]?.arrayValue ?? []).enumerated() {
            for field in ["apiVersion", "kind", "name", "uid"] where (ref[field]?.stringValue ?? "").isEmpty {
                causes.append(StatusCause(reason: "FieldValueRequired", message: "Required value", field: "metadata.ownerReferences[\(i)].\(field)"))
            }
        }
        if (meta["ownerReferences"]?.arrayValue ?? []).filter({ $0["controller"]?.boolValue == true }).count > 1 {
            causes.append(
                StatusCause(
                    reason: "FieldValueInvalid", message: "Invalid value: \"[]\": Only one reference can have Controller set to true",
                    field: "metadata.ownerReferences"))
        }
        return causes
    }
}
