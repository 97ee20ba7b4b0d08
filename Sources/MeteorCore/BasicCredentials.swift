import Foundation

/// A username and password (or access token) sent as HTTP basic authentication: to a registry, or to a git host
/// for a private repository.
public struct BasicCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// The `Authorization` header's value.
    public var authorization: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}
