from perflab.api.ratelimit import AdaptivePacer, TokenBucket


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_bucket_try_take_refuses_when_empty_and_says_how_long():
    clock = FakeClock()
    bucket = TokenBucket(10, 2, clock)
    assert bucket.try_take() == 0.0 and bucket.try_take() == 0.0
    assert abs(bucket.try_take() - 0.1) < 1e-9
    clock.now += 0.1
    assert bucket.try_take() == 0.0


def test_reserve_spaces_requests_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(4, 1, clock)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_pacer_keeps_under_the_limit_with_headroom():
    clock = FakeClock()
    pacer = AdaptivePacer(10, headroom=0.9, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(91):
        pacer.acquire()
    assert abs(clock.now - 10.0) < 1e-6  # 90 spaced requests at 9/s after the first


def test_pacer_cuts_on_429_holds_retry_after_and_recovers():
    clock = FakeClock()
    pacer = AdaptivePacer(10, headroom=1.0, burst=1, decrease=0.5, recover=0.1, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    pacer.on_rate_limited(retry_after=2.0)
    assert pacer.rate == 5.0 and pacer.cuts == 1
    start = clock.now
    pacer.acquire()
    assert clock.now - start >= 2.0
    for _ in range(10):
        pacer.on_success()
    assert pacer.rate == 10.0


def test_pacer_without_known_limit_learns_one_from_the_first_429():
    clock = FakeClock()
    pacer = AdaptivePacer(None, decrease=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(21):
        pacer.acquire()
        clock.now += 0.05  # 20 requests/s unpaced
    assert pacer.rate is None
    pacer.on_rate_limited(None)
    assert abs(pacer.rate - 10.0) < 0.6
