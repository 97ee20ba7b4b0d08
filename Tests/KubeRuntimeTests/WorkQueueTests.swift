import Foundation
import KubeRuntime
import KubeTestSupport
import Testing

@Suite struct WorkQueueTests {
    @Test func deduplicatesAndNeverHandsOutAKeyTwiceAtOnce() async throws {
        let q = WorkQueue<String>()
        await q.add("a")
        await q.add("a")
        await q.add("b")
        #expect(await q.count == 2)
        let first = await q.get()
        #expect(first == "a")
        // Added again while being processed: not handed out until done.
        await q.add("a")
        #expect(await q.get() == "b")
        #expect(await q.count == 0)
        await q.done("a")
        #expect(await q.count == 1)
        #expect(await q.get() == "a")
        await q.done("a")
        await q.done("b")
        #expect(await q.count == 0)
    }

    @Test func backoffFollowsClientGoDefaults() {
        var limiter = ExponentialFailureRateLimiter<String>()
        let now = ContinuousClock.now
        let delays = (0..<5).map { _ in limiter.when("k", now: now) }
        #expect(delays == [.milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(40), .milliseconds(80)])
        for _ in 0..<40 { _ = limiter.when("k", now: now) }
        #expect(limiter.when("k", now: now) == .seconds(1000))
        #expect(limiter.retries("k") == 46)
        limiter.forget("k")
        #expect(limiter.when("k", now: now) == .milliseconds(5))
        #expect(limiter.when("other", now: now) == .milliseconds(5))
    }

    @Test func overallBucketLimitsManyFailingKeys() {
        var limiter = MaxOfRateLimiter<String>.controllerDefault
        let now = ContinuousClock.now
        // The bucket's burst of 100 absorbs the first failures; the 101st key waits 1/10 s.
        for i in 0..<100 { #expect(limiter.when("k\(i)", now: now) == .milliseconds(5)) }
        #expect(limiter.when("k100", now: now) == .milliseconds(100))
    }

    @Test func rateLimitedAddsWaitForTheInjectedClock() async throws {
        let clock = ManualClock()
        let q = WorkQueue<String>(clock: clock)
        await q.addRateLimited("x")
        await q.addRateLimited("x")
        #expect(await q.count == 0)
        try await waitForSleepers(clock, 1)
        clock.advance(by: .milliseconds(4))
        #expect(await q.count == 0)
        clock.advance(by: .milliseconds(1))
        let got = await q.get()
        #expect(got == "x")
        await q.done("x")
        #expect(await q.retries("x") == 2)
        await q.forget("x")
        #expect(await q.retries("x") == 0)
    }

    @Test func addAfterKeepsTheEarliestDeadline() async throws {
        let clock = ManualClock()
        let q = WorkQueue<String>(clock: clock)
        await q.addAfter("t", .seconds(60))
        await q.addAfter("t", .seconds(10))
        await q.addAfter("t", .seconds(30))
        try await waitForSleepers(clock, 2)
        clock.advance(by: .seconds(10))
        #expect(await q.get() == "t")
        await q.done("t")
        clock.advance(by: .seconds(60))
        await q.shutDown()
        #expect(await q.get() == nil)
    }

    /// Waits until the queue's delay tasks are asleep on the clock (they start asynchronously).
    func waitForSleepers(_ clock: ManualClock, _ n: Int) async throws {
        for _ in 0..<1_000_000 where clock.sleeperCount < n { await Task.yield() }
        #expect(clock.sleeperCount >= n)
    }
}
