import Crypto
import Foundation
import KubeModels
import Synchronization

/// Cross-site request forgery protection: tokens the server mints and signs, HMAC-SHA256 with its session key
/// over a random nonce and the visitor's identity (`nonce.mac`). The token rides in a `SameSite=Strict` cookie and
/// every form posts it back (double submit); a write passes only when both are the same token, signed by this
/// server's key, for the identity making the write. A value the client made up, or one minted for someone else,
/// does not verify. A browser's `Sec-Fetch-Site: cross-site` is refused outright.
struct CSRFTokens: Sendable {
    static let cookie = "meteor_shower_csrf"
    let key: SymmetricKey

    /// A key of at least 32 bytes (a Secret's, so replicas accept each other's tokens), or a random one.
    init(key: SymmetricKey = SymmetricKey(size: .bits256)) {
        self.key = key
    }

    func mint(for identity: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Self.hex(nonce) + "." + Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Self.message(nonce, identity), using: key)))
    }

    /// Whether `token` was minted by this key for `identity` (constant time in the MAC).
    func verifies(_ token: String, for identity: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let nonce = Self.bytes(hex: parts[0]), nonce.count == 16, let mac = Self.bytes(hex: parts[1]), mac.count == 32 else {
            return false
        }
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Self.message(nonce, identity), using: key)
    }

    /// The cookie's token and the form's are one token, and it verifies for `identity`.
    func accepts(cookie: String?, form: String?, identity: String) -> Bool {
        guard let cookie, let form, verifies(form, for: identity) else { return false }
        // Both came back; the form's verified, and the cookie must be that same token (compared in constant time).
        let a = Array(SHA256.hash(data: Data(cookie.utf8))), b = Array(SHA256.hash(data: Data(form.utf8)))
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    static func message(_ nonce: [UInt8], _ identity: String) -> Data {
        Data("meteor-shower-csrf\u{0}".utf8) + Data(nonce) + Data("\u{0}\(identity)".utf8)
    }

    static func cookieValue(in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces)
            if kv.hasPrefix(cookie + "=") { return String(kv.dropFirst(cookie.count + 1)) }
        }
        return nil
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func bytes(hex: Substring) -> [UInt8]? {
        guard hex.count % 2 == 0, hex.allSatisfy(\.isHexDigit) else { return nil }
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            guard let b = UInt8(hex[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        return out
    }
}

/// Token buckets for writes, one per key (the signed-in user, else the peer address): `burst` at once, refilled
/// at `perMinute`. The table holds at most `capacity` keys: when full, keys whose bucket has refilled are
/// forgotten first (they are as a new key would be), then the least recently seen, so a flood of new keys cannot
/// grow it without bound, and the key being served is never the one dropped.
final class SubmitRateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var at: ContinuousClock.Instant
    }

    let perMinute: Double
    let burst: Double
    let capacity: Int
    let buckets = Mutex<[String: Bucket]>([:])

    init(perMinute: Int, burst: Int, capacity: Int = 4096) {
        self.perMinute = Double(perMinute)
        self.burst = Double(burst)
        self.capacity = max(1, capacity)
    }

    var count: Int { buckets.withLock { $0.count } }

    /// Takes a token for `key`; nil when allowed, else how long until the next one.
    func take(_ key: String, now: ContinuousClock.Instant = .now) -> Duration? {
        buckets.withLock { all in
            var bucket = all[key].map { refilled($0, now) } ?? Bucket(tokens: burst, at: now)
            bucket.at = now
            let wait: Duration?
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                wait = nil
            } else {
                wait = .seconds((1 - bucket.tokens) * 60 / perMinute)
            }
            all[key] = bucket
            if all.count > capacity { evict(&all, now: now, keeping: key) }
            return wait
        }
    }

    func refilled(_ b: Bucket, _ now: ContinuousClock.Instant) -> Bucket {
        let elapsed = now - b.at
        return Bucket(tokens: min(burst, b.tokens + elapsed.seconds * perMinute / 60), at: b.at)
    }

    /// Down to three quarters of the capacity: full buckets first, then the least recently seen.
    func evict(_ all: inout [String: Bucket], now: ContinuousClock.Instant, keeping key: String) {
        all = all.filter { $0.key == key || refilled($0.value, now).tokens < burst }
        let target = capacity * 3 / 4
        guard all.count > target else { return }
        let oldest = all.filter { $0.key != key }.sorted { $0.value.at < $1.value.at }.prefix(all.count - target)
        for (k, _) in oldest { all.removeValue(forKey: k) }
    }
}
