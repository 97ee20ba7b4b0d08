import Foundation

/// A parsed label selector (`app=web,tier!=db,env in (a,b),!legacy`), the string form used in `labelSelector`.
public struct LabelSelector: Sendable, Hashable, CustomStringConvertible {
    public enum Operator: Sendable, Hashable { case equals, notEquals, `in`, notIn, exists, doesNotExist }

    public struct Requirement: Sendable, Hashable {
        public var key: String
        public var op: Operator
        public var values: [String]

        public init(key: String, op: Operator, values: [String] = []) {
            self.key = key
            self.op = op
            self.values = values
        }

        public func matches(_ labels: [String: String]) -> Bool {
            let v = labels[key]
            switch op {
            case .equals: return v == values.first
            case .notEquals: return v != values.first
            case .in: return v.map { values.contains($0) } ?? false
            case .notIn: return v.map { !values.contains($0) } ?? true
            case .exists: return v != nil
            case .doesNotExist: return v == nil
            }
        }

        var text: String {
            switch op {
            case .equals: return "\(key)=\(values.first ?? "")"
            case .notEquals: return "\(key)!=\(values.first ?? "")"
            case .in: return "\(key) in (\(values.joined(separator: ",")))"
            case .notIn: return "\(key) notin (\(values.joined(separator: ",")))"
            case .exists: return key
            case .doesNotExist: return "!\(key)"
            }
        }
    }

    public var requirements: [Requirement]

    public init(_ requirements: [Requirement] = []) { self.requirements = requirements }

    /// Equality requirements for every pair (matchLabels).
    public init(matchLabels: [String: String]) {
        requirements = matchLabels.sorted { $0.key < $1.key }.map { Requirement(key: $0.key, op: .equals, values: [$0.value]) }
    }

    public var isEmpty: Bool { requirements.isEmpty }
    public var description: String { requirements.map(\.text).joined(separator: ",") }

    public func matches(_ labels: [String: String]?) -> Bool {
        let labels = labels ?? [:]
        return requirements.allSatisfy { $0.matches(labels) }
    }

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        public init(message: String) { self.message = message }
    }

    /// Parses the selector grammar of k8s.io/apimachinery/pkg/labels.
    public static func parse(_ text: String) throws -> LabelSelector {
        var lexer = Lexer(Array(text.unicodeScalars))
        var reqs: [Requirement] = []
        lexer.skipSpace()
        if lexer.atEnd { return LabelSelector() }
        while true {
            lexer.skipSpace()
            var negated = false
            if lexer.peek == "!" {
                negated = true
                lexer.advance()
                lexer.skipSpace()
            }
            let key = lexer.word()
            guard !key.isEmpty else { throw ParseError(message: "unable to parse requirement: found '\(lexer.rest)', expected: identifier") }
            try validateKey(key)
            lexer.skipSpace()
            if negated {
                reqs.append(Requirement(key: key, op: .doesNotExist))
            } else if lexer.atEnd || lexer.peek == "," {
                reqs.append(Requirement(key: key, op: .exists))
            } else if lexer.consume("==") || lexer.consume("=") {
                lexer.skipSpace()
                let v = lexer.word()
                try validateValue(v)
                reqs.append(Requirement(key: key, op: .equals, values: [v]))
            } else if lexer.consume("!=") {
                lexer.skipSpace()
                let v = lexer.word()
                try validateValue(v)
                reqs.append(Requirement(key: key, op: .notEquals, values: [v]))
            } else {
                let opWord = lexer.word()
                let op: Operator
                switch opWord {
                case "in": op = .in
                case "notin": op = .notIn
                default: throw ParseError(message: "unable to parse requirement: found '\(opWord)', expected: in, notin, =, ==, !=")
                }
                lexer.skipSpace()
                guard lexer.consume("(") else { throw ParseError(message: "unable to parse requirement: found '\(lexer.rest)', expected: '('") }
                var values: [String] = []
                while true {
                    lexer.skipSpace()
                    let v = lexer.word()
                    try validateValue(v)
                    values.append(v)
                    lexer.skipSpace()
                    if lexer.consume(",") { continue }
                    if lexer.consume(")") { break }
                    throw ParseError(message: "unable to parse requirement: found '\(lexer.rest)', expected: ',', ')'")
                }
                reqs.append(Requirement(key: key, op: op, values: values.sorted()))
            }
            lexer.skipSpace()
            if lexer.atEnd { break }
            guard lexer.consume(",") else { throw ParseError(message: "found '\(lexer.rest)', expected: ',' or end of string") }
        }
        return LabelSelector(reqs)
    }

    public static func validateKey(_ key: String) throws {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.last, isQualifiedName(name), name.count <= 63 else {
            throw ParseError(
                message:
                    "invalid label key \"\(key)\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )
        }
        if parts.count == 2, parts[0].isEmpty || parts[0].count > 253 {
            throw ParseError(message: "invalid label key \"\(key)\": prefix part must be a DNS subdomain")
        }
    }

    public static func validateValue(_ v: String) throws {
        guard v.isEmpty || (v.count <= 63 && isQualifiedName(Substring(v))) else {
            throw ParseError(
                message:
                    "invalid label value: \"\(v)\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            )
        }
    }

    static func isQualifiedName(_ s: Substring) -> Bool {
        guard let f = s.unicodeScalars.first, let l = s.unicodeScalars.last else { return false }
        func alnum(_ c: Unicode.Scalar) -> Bool { c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c)) }
        return alnum(f) && alnum(l) && s.unicodeScalars.allSatisfy { alnum($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    struct Lexer {
        let s: [Unicode.Scalar]
        var i = 0
        init(_ s: [Unicode.Scalar]) { self.s = s }
        var atEnd: Bool { i >= s.count }
        var peek: Unicode.Scalar? { atEnd ? nil : s[i] }
        var rest: String { String(String.UnicodeScalarView(s[min(i, s.count)...])) }
        mutating func advance() { i += 1 }
        mutating func skipSpace() { while let c = peek, c == " " || c == "\t" { i += 1 } }
        mutating func consume(_ token: String) -> Bool {
            let t = Array(token.unicodeScalars)
            guard i + t.count <= s.count, Array(s[i..<i + t.count]) == t else { return false }
            i += t.count
            return true
        }
        mutating func word() -> String {
            let start = i
            while let c = peek, !" \t,=!()".unicodeScalars.contains(c) { i += 1 }
            return String(String.UnicodeScalarView(s[start..<i]))
        }
    }
}

/// A field selector (`metadata.name=foo,metadata.namespace!=bar`): only equality and inequality exist.
public struct FieldSelector: Sendable, Hashable {
    public struct Requirement: Sendable, Hashable {
        public var field: String
        public var value: String
        public var negated: Bool
    }

    public var requirements: [Requirement]

    public static func parse(_ text: String) throws -> FieldSelector {
        var reqs: [Requirement] = []
        for part in text.split(separator: ",") {
            let p = part.trimmingCharacters(in: .whitespaces)
            if p.isEmpty { continue }
            if let r = p.range(of: "!=") {
                reqs.append(Requirement(field: String(p[..<r.lowerBound]), value: String(p[r.upperBound...]), negated: true))
            } else if let r = p.range(of: "==") {
                reqs.append(Requirement(field: String(p[..<r.lowerBound]), value: String(p[r.upperBound...]), negated: false))
            } else if let r = p.range(of: "=") {
                reqs.append(Requirement(field: String(p[..<r.lowerBound]), value: String(p[r.upperBound...]), negated: false))
            } else {
                throw LabelSelector.ParseError(message: "invalid selector: '\(text)'; can't understand '\(p)'")
            }
        }
        return FieldSelector(requirements: reqs)
    }

    public func matches(_ fields: [String: String]) -> Bool {
        requirements.allSatisfy { r in
            let v = fields[r.field] ?? ""
            return r.negated ? v != r.value : v == r.value
        }
    }
}
