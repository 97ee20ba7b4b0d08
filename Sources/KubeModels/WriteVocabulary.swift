/// How the API server treats fields a write's schema does not know (`?fieldValidation=`). The same words on both
/// sides of the wire: the client sends them, the embedded server parses them.
public enum FieldValidation: String, Sendable, CaseIterable {
    /// Refuse the write (400) naming each unknown field.
    case strict = "Strict"
    /// Drop unknown fields and say so in a `Warning` header (kube-apiserver's default).
    case warn = "Warn"
    /// Drop unknown fields silently.
    case ignore = "Ignore"
}

/// What happens to an object's dependents when it is deleted (`DeleteOptions.propagationPolicy`).
public enum DeletionPropagation: String, Sendable, CaseIterable {
    /// Delete now; the garbage collector removes dependents afterwards.
    case background = "Background"
    /// Dependents first (the `foregroundDeletion` finalizer), then the owner.
    case foreground = "Foreground"
    /// Leave dependents, without this owner (the `orphan` finalizer).
    case orphan = "Orphan"

    /// `"Foreground", "Background", "Orphan"`, as kube-apiserver lists them in its refusal.
    public static var supportedValues: String { [foreground, background, orphan].map { "\"\($0.rawValue)\"" }.joined(separator: ", ") }
}
