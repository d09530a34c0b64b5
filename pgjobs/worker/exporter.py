"""``pgjobs worker --metrics-port``: the Prometheus text format over HTTP.

The supervisor binds the socket (so a taken port fails the start, loudly) and
forks one exporter process that answers scrapes. The supervisor itself stays
free of threads (it forks worker processes at any time) and a scrape never
delays its tick; an exporter that dies is replaced by the supervisor.

Each scrape runs the metrics queries on the exporter's own connection under a
short statement timeout. With Postgres away, a scrape answers 503 and the
next one reconnects: the exporter never takes the worker down with it.
"""

from __future__ import annotations

import os
import socketserver
from http.server import BaseHTTPRequestHandler
from typing import Any

import psycopg
import structlog

from pgjobs import monitoring, sql
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.config import WorkerConfig

logger = structlog.get_logger("pgjobs.exporter")

_PATHS = ("/metrics", "/")


class MetricsServer(socketserver.TCPServer):
    """Bound and listening in the supervisor; served in the exporter process."""

    allow_reuse_address = True

    def __init__(self, cfg: WorkerConfig) -> None:
        assert cfg.metrics_port is not None
        super().__init__((cfg.metrics_host, cfg.metrics_port), _Handler)
        self.cfg = cfg
        self.conn: psycopg.Connection[Any] | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def scrape(self) -> str:
        """The exposition text; raises psycopg.Error when Postgres does not answer."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = _connect(self.cfg)
            return monitoring.prometheus_text(monitoring.metrics(self.conn))
        except psycopg.Error:
            if self.conn is not None:
                self.conn.close()
            self.conn = None  # the next scrape starts afresh
            raise


def _connect(cfg: WorkerConfig) -> psycopg.Connection[Any]:
    timeout_ms = str(int(cfg.metrics_timeout_seconds * 1000))
    conn = psycopg.connect(
        cfg.dsn, autocommit=True, connect_timeout=max(1, int(cfg.metrics_timeout_seconds))
    )
    conn.execute(
        sql.query("session_configure"),
        {
            "statement_timeout": timeout_ms,
            "idle_timeout": timeout_ms,
            "application_name": f"pgjobs exporter {os.getpid()}",
            "synchronous_commit": None,  # it only reads
            "jit": None,
        },
    )
    return conn


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 10  # a client that stalls mid-request cannot hold the exporter

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in _PATHS:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
            return
        try:
            body = self.server.scrape().encode()
        except psycopg.Error as exc:
            logger.warning("metrics_scrape_failed", error=str(exc).strip())
            self._reply(503, "text/plain; charset=utf-8", b"# postgres unavailable\n")
            return
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        self._reply(200, CONTENT_TYPE_LATEST, body)

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise; failures are logged as events


def exporter_main(server: MetricsServer, log_json: bool | None, log_level: str) -> None:
    """Entry point of the forked exporter process; leaves by os._exit (see runner)."""
    code = 0
    try:
        become_child(log_json, log_level)
        server.serve_forever(poll_interval=0.5)
    except BaseException:
        logger.exception("metrics_exporter_failed")
        code = 1
    finally:
        leave(code)
