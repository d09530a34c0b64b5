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

import multiprocessing.context
import socketserver
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import psycopg
import structlog

from pgjobs import monitoring
from pgjobs.worker.child import become_child, leave
from pgjobs.worker.config import WorkerConfig
from pgjobs.worker.session import connect

logger = structlog.get_logger("pgjobs.exporter")

_PATHS = ("/metrics", "/")
_RESPAWN_SECONDS = 1.0  # an exporter that keeps dying is replaced at most this often


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
                self.conn = connect(
                    self.cfg,
                    "exporter",
                    bookkeeping=False,  # it only reads
                    timeout_seconds=self.cfg.metrics_timeout_seconds,
                )
            return monitoring.prometheus_text(monitoring.metrics(self.conn))
        except psycopg.Error:
            if self.conn is not None:
                self.conn.close()
            self.conn = None  # the next scrape starts afresh
            raise


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


class Exporter:
    """The supervisor's side: binds the port (a taken one fails the start) and
    keeps one exporter process alive."""

    def __init__(
        self, cfg: WorkerConfig, mp: Any, log: Any, log_json: bool | None, log_level: str
    ) -> None:
        self.mp = mp
        self.log = log
        self.args = (log_json, log_level)
        self.proc: multiprocessing.context.ForkProcess | None = None
        self.next_spawn = 0.0
        try:
            self.server = MetricsServer(cfg)
        except OSError as exc:
            where = f"{cfg.metrics_host}:{cfg.metrics_port}"
            raise ValueError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from exc
        self._spawn()
        log.info("metrics_serving", host=cfg.metrics_host, port=self.server.port)

    def _spawn(self) -> None:
        self.proc = self.mp.Process(
            target=exporter_main,
            args=(self.server, *self.args),
            name="pgjobs-exporter",
            daemon=False,
        )
        self.proc.start()
        self.next_spawn = time.monotonic() + _RESPAWN_SECONDS

    def keep(self) -> None:
        if self.proc is not None and not self.proc.is_alive():
            self.proc.join(0)
            self.log.warning("metrics_exporter_died", exitcode=self.proc.exitcode)
            self.proc = None
        if self.proc is None and time.monotonic() >= self.next_spawn:
            self._spawn()

    def close(self) -> None:
        self.server.server_close()
