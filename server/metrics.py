"""The gateway's Prometheus metrics and their ``/metrics`` endpoint (``metrics_address``).

RPC counts and latency histograms by method and status code, bytes in/out and open streams
(recorded by the call observer, server/observability.py); gauges read from the gateway's state
at each scrape (loaded documents, open subscriptions, sessions and memberships, feed head,
subscriber lag); the store's commit hook: commit (fsync) latency and batch size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .addresses import split_address

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["Metrics"]

#: RPC duration buckets (seconds), from sub-millisecond unary calls to hour-long streams.
#: fmt: skip keeps the numbers a two-line table instead of eighteen lines of one number each.
RPC_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                       1, 2.5, 5, 10, 30, 60, 300, 3600)  # fmt: skip


class _GatewayCollector(Collector):
    """Gauges read from the gateway's state at scrape time."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        hosts = list(gw.documents.hosts.values()) if gw.documents is not None else []
        yield GaugeMetricFamily(
            "virtualdom_documents_loaded", "Documents loaded in memory.", value=len(hosts)
        )
        members = sum(len(h.members) for h in hosts)
        yield GaugeMetricFamily(
            "virtualdom_session_members", "Session memberships (joined documents).", members
        )
        subs = gw.service.subscribers if gw.service is not None else 0
        yield GaugeMetricFamily(
            "virtualdom_subscriptions_open", "Open SubscribeChanges streams.", value=subs
        )
        sessions = gw.sessions.sessions if gw.sessions is not None else 0
        yield GaugeMetricFamily(
            "virtualdom_sessions_open", "Open CollaborativeSession streams.", value=sessions
        )
        feed = gw.feed
        head = feed.head
        yield GaugeMetricFamily(
            "virtualdom_feed_head_seq", "Position of the last committed change.", value=head
        )
        followers = feed.followers()
        lags = [max(0, head - f.position) for f in followers]
        yield GaugeMetricFamily(
            "virtualdom_followers",
            "Change-feed followers (subscriptions and session memberships).",
            value=len(followers),
        )
        yield GaugeMetricFamily(
            "virtualdom_subscriber_lag_max",
            "Largest subscriber lag: feed head seq minus the follower's position (changes).",
            value=max(lags, default=0),
        )
        yield GaugeMetricFamily(
            "virtualdom_subscriber_lag_sum", "Sum of all followers' lags (changes).", sum(lags)
        )
        yield GaugeMetricFamily(
            "virtualdom_subscribers_lagging",
            "Followers behind the feed head.",
            value=sum(1 for lag in lags if lag > 0),
        )


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own (one per gateway)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter(
            "virtualdom_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "virtualdom_rpc_duration_seconds",
            "RPC duration (a stream's whole life), by method and status code.",
            ["method", "code"],
            registry=r,
            buckets=RPC_SECONDS_BUCKETS,
        )
        self.received = Counter(
            "virtualdom_rpc_received_bytes",
            "Request message bytes received, by method.",
            ["method"],
            registry=r,
        )
        self.sent = Counter(
            "virtualdom_rpc_sent_bytes",
            "Response message bytes sent, by method.",
            ["method"],
            registry=r,
        )
        self.open_streams = Gauge(
            "virtualdom_open_streams",
            "Streaming RPCs in progress, by method.",
            ["method"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "virtualdom_store_commit_seconds",
            "Store commit (fsync) latency.",
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )
        self.commit_changes = Histogram(
            "virtualdom_store_commit_changes",
            "Changes per store commit (group commit size).",
            registry=r,
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._collector: _GatewayCollector | None = None

    def on_commit(self, seconds: float, changes: int) -> None:
        """The store's commit hook (called from its writer thread)."""
        self.commit_seconds.observe(seconds)
        self.commit_changes.observe(changes)

    def watch(self, gateway: Gateway) -> None:
        if self._collector is None:
            self._collector = _GatewayCollector(gateway)
            self.registry.register(self._collector)

    def serve(self, address: str) -> int:
        """Serve ``/metrics`` over HTTP on ``address`` (port 0: any); returns the bound port.
        prometheus_client's server: a daemon thread, a thread per scrape, IPv6 hosts, gzip."""
        host, port = split_address(address)
        self._http, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()  # returns once serve_forever noticed (its 0.5 s poll)
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
