import Foundation
import KubeClient
import KubeModels
import KubeTestSupport
import MeteorCore
import Testing

/// The Meteor Shower in a real browser (headless Chromium) against `meteor-operator sandbox`, as a data scientist
/// uses it: rows follow the builds live, a repository submitted with the keyboard alone is followed to Ready on
/// its own page, deleted,
/// bad input is explained, a forged post is refused, and the layout holds on a phone.
/// `SHOWER_SCREENSHOT=path` also writes the home page's screenshot there (hack/screenshot.sh, for docs/).
@Suite(.serialized) struct ShowerBrowserTests {
    static let runs = HeadlessBrowser.executable != nil || ProcessInfo.processInfo.environment["CI"] != nil

    /// Records, in the page, the phases each row (or the detail view) has shown, and marks the document so a
    /// reload would be noticed.
    static let recorder = """
        window.__noReload = true; window.__phases = {};
        (function () {
          function record() {
            document.querySelectorAll('[data-phase][data-name]').forEach(function (e) {
              var list = window.__phases[e.dataset.name] = window.__phases[e.dataset.name] || [];
              if (list[list.length - 1] !== e.dataset.phase) { list.push(e.dataset.phase); }
            });
          }
          record();
          new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true });
        })();
        true
        """

    @Test(.enabled(if: runs, "chromium is not installed (.ci/run installs it)"), .timeLimit(.minutes(5)))
    func submitWatchOpenDeleteAndRefusals() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shower-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let kubeconfig = dir.appendingPathComponent("sandbox.kubeconfig").path
        let sandbox = try BackgroundProcess(
            operatorBinary,
            ["sandbox", "--no-tui", "--apply-samples", "--tekton-seconds", "3", "--argo-seconds", "0.5", "--kubeconfig-out", kubeconfig],
            directory: TestCluster.repositoryDirectory)
        defer { sandbox.terminate() }
        let announced = try await sandbox.line(containing: "Meteor Shower: http://")
        let base = String(announced.split(separator: " ").last!)
        #expect(base.hasPrefix("http://127.0.0.1:") && base.hasSuffix("/"))
        let client = try KubeClient(configuration: try KubeConfigLoader.load(.init(kubeconfigPath: kubeconfig)))
        defer { Task { try? await client.shutdown() } }
        let meteors = client.dynamic(Meteor.resourceType, namespace: "default")

        let browser = try HeadlessBrowser()
        do {
            let page = try await browser.newPage()
            try await page.open(base)
            try await page.waitFor("document.querySelectorAll('#meteors tbody tr').length >= 4", "the samples' rows")
            try await page.evaluate(Self.recorder)

            // Meteors applied with kubectl appear and follow their builds without a reload.
            _ = try await meteors.create(meteor("live-row"))
            var failing = meteor("will-fail")
            failing[path: "metadata", "annotations"] = ["sandbox.meteor.zone/fail": "jupyterbook"]
            _ = try await meteors.create(failing)
            try await page.waitFor("document.querySelector('#meteor-live-row[data-phase=Ready]')", "live-row to be Ready")
            try await page.waitFor("document.querySelector('#meteor-will-fail[data-phase=Failed]')", "will-fail to be Failed")
            let phases = try await page.evaluate("window.__phases['live-row']")
            #expect(phases.arrayValue?.compactMap(\.stringValue).contains("Building") == true, "\(phases.serializedString())")
            #expect(phases.arrayValue?.last == "Ready")
            #expect(try await page.evaluate("window.__noReload === true") == true, "the page reloaded")
            #expect(
                try await page.evaluate("document.querySelector('#meteor-will-fail .problem').textContent").stringValue?.contains("jupyterbook: ")
                    == true)
            #expect(
                try await page.evaluate("document.querySelector('#meteor-live-row a.book').href").stringValue?.hasPrefix("http://live-row-book.")
                    == true)
            #expect(
                try await page.evaluate("document.querySelector('#meteor-live-row code.image').textContent").stringValue?.contains(
                    "live-row-jupyterhub") == true)

            // The screenshot for docs/: Ready samples, a failed build and one still building.
            _ = try await meteors.create(meteor("in-progress", url: "https://github.com/thoth-station/elyra-aidevsecops-tutorial"))
            try await page.waitFor("document.querySelector('#meteor-in-progress[data-phase=Building]')", "in-progress to be Building")
            let png = try await page.screenshot(fullPage: true)
            #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
            if let path = ProcessInfo.processInfo.environment["SHOWER_SCREENSHOT"] { try png.write(to: URL(fileURLWithPath: path)) }

            // Submit a repository through the form with the keyboard alone: Tab to the URL field, type, Enter.
            var tabs = 0
            while try await page.evaluate("document.activeElement && document.activeElement.id") != "url" {
                tabs += 1
                try #require(tabs <= 10, "the URL field is not reachable with Tab")
                try await page.press("Tab")
            }
            try await page.type("https://github.com/aicoe-aiops/meteor-demo")
            var mark = page.mark
            try await page.press("Enter")
            try await page.waitForLoad(after: mark)
            #expect(try await page.evaluate("location.pathname") == "/meteors/meteor-demo")
            try await page.evaluate(Self.recorder)
            try await page.waitFor("document.querySelector('#detail[data-phase=Ready]')", "the submitted Meteor's page to show Ready")
            #expect(try await page.evaluate("window.__noReload === true") == true, "the detail page reloaded")
            let detailPhases = try await page.evaluate("window.__phases['meteor-demo']").arrayValue?.compactMap(\.stringValue) ?? []
            #expect(detailPhases.last == "Ready" && detailPhases.dropLast().allSatisfy { $0 == "Pending" || $0 == "Building" }, "\(detailPhases)")
            #expect(
                try await page.evaluate("document.querySelectorAll('#detail [data-condition]').length") == 3,
                "Ready, JupyterHub and JupyterBook conditions")
            #expect(
                try await page.evaluate("document.querySelector('#detail .events').textContent").stringValue?.contains("PipelineRunCreated") == true)
            #expect(try await meteors.get("meteor-demo")[path: "metadata", "annotations", "meteor.zone/submitted-by"] == "anonymous")

            // Delete it from its page.
            mark = page.mark
            try await page.evaluate("document.getElementById('delete').click(); true")
            try await page.waitForLoad(after: mark)
            #expect(try await page.evaluate("location.pathname") == "/")
            try await page.waitFor("!document.getElementById('meteor-meteor-demo')", "the deleted row to go")
            #expect(try await meteors.list().items.allSatisfy { $0[path: "metadata", "name"] != "meteor-demo" })

            // An invalid URL is explained next to the field, and nothing is created.
            let before = try await meteors.list().items.count
            mark = page.mark
            try await page.evaluate(
                "document.getElementById('url').value = 'not a url'; document.getElementById('submit-form').requestSubmit(); true")
            try await page.waitForLoad(after: mark)
            #expect(
                try await page.evaluate("document.getElementById('url-error').textContent").stringValue?.hasPrefix(
                    "Must be an http or https URL with a host") == true)
            #expect(try await page.evaluate("document.getElementById('url').getAttribute('aria-invalid')") == "true")
            #expect(try await page.evaluate("document.getElementById('url').value") == "not a url")
            #expect(try await meteors.list().items.count == before)

            // A forged post (no CSRF token) is refused, even from the page's own origin.
            let status = try await page.evaluate(
                """
                fetch('/meteors', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                  body: 'url=https%3A%2F%2Fgithub.com%2Fx%2Fforged&ref=main&pipelines%5B%5D=jupyterhub' }).then(function (r) { return r.status; })
                """)
            #expect(status == 403)
            #expect(try await meteors.list().items.allSatisfy { $0[path: "metadata", "name"] != "forged" })

            // Accessible and usable on a phone: every control is labelled, nothing scrolls sideways.
            #expect(
                try await page.evaluate(
                    "Array.from(document.querySelectorAll('input:not([type=hidden]), select')).every(function (e) { return e.labels && e.labels.length > 0; })"
                ) == true)
            try await page.setViewport(width: 390, height: 844, mobile: true)
            try await page.open(base)
            #expect(try await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth") == true)
            #expect(try await page.evaluate("getComputedStyle(document.querySelector('#meteors tbody tr')).display") == "block")

            // While connected the page says nothing about it; when the operator goes away it says updates paused.
            try await page.waitFor(
                "document.getElementById('connection').hidden === true && document.querySelector('#meteors tbody tr')", "the live stream")
            sandbox.signal(SIGINT)
            #expect(await sandbox.wait() == 0, "\(sandbox.text)")
            try await page.waitFor("document.getElementById('connection').hidden === false", "the paused-updates notice")
            await browser.close()
        } catch {
            await browser.close()
            throw error
        }
    }
}
