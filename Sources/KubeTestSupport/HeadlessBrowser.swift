import Foundation
import KubeClient
import KubeModels
import Synchronization

/// Headless Chromium driven over the Chrome DevTools Protocol, for tests of web pages in a real browser.
/// `--remote-debugging-pipe` speaks CDP as NUL-terminated JSON on file descriptors 3 (commands) and 4 (replies
/// and events); a shell `exec` maps them onto the child's stdin and stdout, so no WebSocket is needed.
public final class HeadlessBrowser: Sendable {
    /// The Chromium binary (Debian's `chromium` package), or nil when it is not installed.
    public static let executable: String? = ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    let process: Process
    let commands: FileHandle
    let profile: URL
    let nextID = Mutex(0)
    final class Pending: Sendable {
        let waiters = Mutex<[Int: CheckedContinuation<JSONValue, any Error>]>([:])
    }
    let pending = Pending()
    /// Every event so far, in order (tests wait on it).
    let events = Observed<[JSONValue]>([])

    public init(windowSize: (width: Int, height: Int) = (1280, 900)) throws {
        guard let executable = Self.executable else { throw Failure("chromium is not installed (apt-get install chromium)") }
        profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: profile, withIntermediateDirectories: true)
        let flags = [
            "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
            "--hide-scrollbars", "--window-size=\(windowSize.width),\(windowSize.height)", "--user-data-dir=\(profile.path)", "about:blank",
        ]
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null", executable] + flags
        let toBrowser = Pipe(), fromBrowser = Pipe()
        process.standardInput = toBrowser
        process.standardOutput = fromBrowser
        process.standardError = FileHandle.nullDevice
        try process.run()
        commands = toBrowser.fileHandleForWriting
        let reader = fromBrowser.fileHandleForReading
        let pending = self.pending, events = self.events
        // Replies and events, read on a GCD thread (never block the cooperative pool).
        DispatchQueue.global().async {
            var buffer = Data()
            while true {
                let chunk = PipeReader.readChunk(reader.fileDescriptor)
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let end = buffer.firstIndex(of: 0) {
                    let message = buffer[buffer.startIndex..<end]
                    buffer = Data(buffer[buffer.index(after: end)...])
                    guard let json = try? JSONValue.parse(Data(message)) else { continue }
                    if let id = json["id"]?.intValue {
                        guard let waiter = pending.waiters.withLock({ $0.removeValue(forKey: Int(id)) }) else { continue }
                        if let error = json["error"] {
                            waiter.resume(throwing: Failure("CDP error: \(error["message"]?.stringValue ?? error.serializedString())"))
                        } else {
                            waiter.resume(returning: json["result"] ?? [:])
                        }
                    } else {
                        events.update { $0.append(json) }
                    }
                }
            }
            for w in pending.waiters.withLock({ p in
                defer { p = [:] }; return Array(p.values)
            }) { w.resume(throwing: Failure("chromium exited")) }
        }
    }

    /// Sends one CDP command (to a page when `session` is given) and returns its result.
    public func send(_ method: String, _ params: JSONObject = [:], session: String? = nil) async throws -> JSONValue {
        let id = nextID.withLock {
            $0 += 1; return $0
        }
        var message: JSONObject = ["id": .int(Int64(id)), "method": .string(method), "params": .object(params)]
        if let session { message["sessionId"] = .string(session) }
        let bytes = Data(JSONValue.object(message).serializedString().utf8) + Data([0])
        return try await withCheckedThrowingContinuation { c in
            pending.waiters.withLock { $0[id] = c }
            do {
                try commands.write(contentsOf: bytes)
            } catch {
                pending.waiters.withLock { $0.removeValue(forKey: id) }?.resume(throwing: Failure("cannot write to chromium: \(error)"))
            }
        }
    }

    /// A new tab.
    public func newPage() async throws -> BrowserPage {
        let target = try await send("Target.createTarget", ["url": "about:blank"])
        guard let targetID = target["targetId"]?.stringValue else { throw Failure("no targetId in \(target.serializedString())") }
        let attached = try await send("Target.attachToTarget", ["targetId": .string(targetID), "flatten": true])
        guard let session = attached["sessionId"]?.stringValue else { throw Failure("no sessionId in \(attached.serializedString())") }
        let page = BrowserPage(browser: self, session: session)
        _ = try await page.send("Page.enable")
        _ = try await page.send("Runtime.enable")
        return page
    }

    public func close() async {
        _ = try? await within(.seconds(10), "chromium to close") { try await self.send("Browser.close") }
        if process.isRunning { process.terminate() }
        try? commands.close()
        let profile = self.profile
        DispatchQueue.global().async { try? FileManager.default.removeItem(at: profile) }
    }
}

/// One tab of a `HeadlessBrowser`.
public struct BrowserPage: Sendable {
    let browser: HeadlessBrowser
    let session: String

    @discardableResult
    public func send(_ method: String, _ params: JSONObject = [:]) async throws -> JSONValue {
        try await browser.send(method, params, session: session)
    }

    /// How many events this browser has seen; pass it to `waitForLoad(after:)` before an action that navigates.
    public var mark: Int { browser.events.value.count }

    /// Waits for this page's load event after `mark` (a navigation, a form post and its redirect, a reload).
    public func waitForLoad(after mark: Int, sourceLocation: String = #fileID, line: Int = #line) async throws {
        let session = self.session
        try await browser.events.wait(sourceLocation: sourceLocation, line: line) { events in
            events.dropFirst(mark).contains { $0["method"] == "Page.loadEventFired" && $0["sessionId"]?.stringValue == session }
        }
    }

    /// Opens `url` and returns once it has loaded.
    public func open(_ url: String) async throws {
        let before = mark
        let result = try await send("Page.navigate", ["url": .string(url)])
        if let error = result["errorText"]?.stringValue { throw HeadlessBrowser.Failure("cannot open \(url): \(error)") }
        try await waitForLoad(after: before)
    }

    /// Runs JavaScript in the page (promises are awaited) and returns its value; a thrown exception fails.
    @discardableResult
    public func evaluate(_ script: String) async throws -> JSONValue {
        let result = try await send("Runtime.evaluate", ["expression": .string(script), "awaitPromise": true, "returnByValue": true])
        if let exception = result["exceptionDetails"] {
            let text = exception[path: "exception", "description"]?.stringValue ?? exception["text"]?.stringValue ?? exception.serializedString()
            throw HeadlessBrowser.Failure("script failed: \(text)")
        }
        return result[path: "result", "value"] ?? .null
    }

    /// Waits, inside the page, until the JavaScript expression `condition` is true: re-checked on every DOM
    /// change (a MutationObserver), failing after `seconds`.
    public func waitFor(_ condition: String, _ what: String, seconds: Int = 60) async throws {
        let script = """
            new Promise(function (resolve, reject) {
              function check() { try { return !!(\(condition)); } catch (e) { return false; } }
              if (check()) { resolve(true); return; }
              var observer = new MutationObserver(function () { if (check()) { observer.disconnect(); clearTimeout(timer); resolve(true); } });
              observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
              var timer = setTimeout(function () { observer.disconnect(); reject(new Error('timed out after \(seconds) s waiting for ' + \(JSONValue.string(what).serializedString()))); }, \(seconds * 1000));
            })
            """
        try await evaluate(script)
    }

    /// Types text into the focused element, as a keyboard would.
    public func type(_ text: String) async throws {
        try await send("Input.insertText", ["text": .string(text)])
    }

    /// Presses and releases one key (`Tab`, `Enter`, …) on the focused element.
    public func press(_ key: String) async throws {
        let codes: [String: (Int64, String?)] = ["Tab": (9, nil), "Enter": (13, "\r"), "Escape": (27, nil), " ": (32, " ")]
        guard let (code, text) = codes[key] else { throw HeadlessBrowser.Failure("no key code for \(key)") }
        var down: JSONObject = [
            "type": text == nil ? "rawKeyDown" : "keyDown", "key": .string(key), "code": .string(key == " " ? "Space" : key),
            "windowsVirtualKeyCode": .int(code),
        ]
        if let text { down["text"] = .string(text) }
        try await send("Input.dispatchKeyEvent", down)
        try await send(
            "Input.dispatchKeyEvent",
            ["type": "keyUp", "key": .string(key), "code": .string(key == " " ? "Space" : key), "windowsVirtualKeyCode": .int(code)])
    }

    /// A PNG of the viewport (or the whole page).
    public func screenshot(fullPage: Bool = false) async throws -> Data {
        var params: JSONObject = ["format": "png"]
        if fullPage { params["captureBeyondViewport"] = true }
        let result = try await send("Page.captureScreenshot", params)
        guard let base64 = result["data"]?.stringValue, let data = Data(base64Encoded: base64) else {
            throw HeadlessBrowser.Failure("no screenshot data")
        }
        return data
    }

    /// Emulates a device width (phone layouts).
    public func setViewport(width: Int, height: Int, mobile: Bool = false) async throws {
        try await send(
            "Emulation.setDeviceMetricsOverride",
            ["width": .int(Int64(width)), "height": .int(Int64(height)), "deviceScaleFactor": 1, "mobile": .bool(mobile)])
    }
}
