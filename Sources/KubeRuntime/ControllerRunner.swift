import Foundation
import Logging

/// Running a controller: waiting for its caches, then workers that take keys from its queue, reconcile them and
/// say what next (done, requeue with backoff, requeue after a delay, or a terminal error that is not retried).
/// kube-rs keeps this apart from the controller's wiring too (`runner.rs`).
extension Controller {
    /// Stops handing out work; `run` returns once in-flight reconciles have finished.
    public func shutDown() async {
        stopping.continuation.yield()
        await queue.shutDown()
    }

    /// Waits for every informer's first list, then runs the workers until `shutDown` or cancellation.
    public func run() async {
        // Caches first; a shutdown that comes before they sync ends the wait.
        let informers = [primary] + secondaries.withLock { $0 }
        let synced = await unlessStopped(by: stopping.stream) { () -> Bool? in
            for i in informers { await i.waitForSync() }
            return !Task.isCancelled
        }
        guard synced == true, await !queue.isShuttingDown else { return }
        metrics?.maxConcurrent.record(options.workers)
        logger.info("starting workers", metadata: ["workers": "\(options.workers)"])
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<options.workers {
                    group.addTask { await self.worker() }
                }
            }
        } onCancel: {
            Task { await self.queue.shutDown() }
        }
    }

    func worker() async {
        while let key = await queue.get() {
            let n = active.withLock {
                $0 += 1; return $0
            }
            metrics?.activeWorkers.record(n)
            let started = ContinuousClock.now
            var log = logger
            log[metadataKey: "object"] = "\(key)"
            var succeeded = true
            do {
                let action = try await reconcile(key)
                switch action {
                case .done:
                    await queue.forget(key)
                    metrics?.result("success")
                case .requeue:
                    await queue.addRateLimited(key)
                    metrics?.result("requeue")
                case .requeueAfter(let d):
                    await queue.forget(key)
                    await queue.addAfter(key, d)
                    metrics?.result("requeue_after")
                }
                log.debug("reconciled", metadata: ["action": "\(action)"])
            } catch let terminal as TerminalError {
                succeeded = false
                await queue.forget(key)
                metrics?.result("error")
                metrics?.errors.increment()
                metrics?.terminalErrors.increment()
                log.error("reconcile failed, not retried", metadata: ["error": "\(terminal)"])
            } catch {
                succeeded = false
                await queue.addRateLimited(key)
                metrics?.result("error")
                metrics?.errors.increment()
                log.error("reconcile failed", metadata: ["error": "\(error)"])
            }
            metrics?.time.recordInterval(ContinuousClock.now - started)
            options.onReconciled?(key, succeeded)
            let left = active.withLock {
                $0 -= 1; return $0
            }
            metrics?.activeWorkers.record(left)
            await queue.done(key)
        }
    }
}
