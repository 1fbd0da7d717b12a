"""Hooks of the retraining platform."""

from __future__ import annotations

from typing import Any


def connection_url(conn: Any, conn_id: str, what: str) -> str:
    """The server URL of an ``http`` connection: ``host`` with its scheme (``schema``, else http) and ``port``.

    Raises:
        ValueError: The connection has no host; the message names the connection and ``what`` it should name.
    """
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"Airflow connection {conn_id!r} has no host ({what})")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    return f"{host}:{conn.port}" if conn.port else host
