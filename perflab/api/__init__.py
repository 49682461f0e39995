"""Talking to Polygon: the client and its typed errors."""

from perflab.api.client import ClientStats, FetchResult, PolygonClient, RetryPolicy

__all__ = ["ClientStats", "FetchResult", "PolygonClient", "RetryPolicy"]
