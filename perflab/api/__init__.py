"""Talking to Polygon: ``client`` (pagination, parsing, the fixes' client), ``errors`` (typed, with the
response), ``ratelimit`` (token bucket and pacer), ``breaker`` (circuit breaker). Nothing is imported here,
so the simulator can use the token bucket without loading the client."""
