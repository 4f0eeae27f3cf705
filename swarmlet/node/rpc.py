"""Calls between nodes: one JSON request to another node's HTTPS API."""
from __future__ import annotations

import asyncio
import logging
import ssl
import time

import aiohttp

log = logging.getLogger("swarmlet.rpc")

# What a failed call to another node can raise; callers retry another manager on these.
CALL_ERRORS = (OSError, asyncio.TimeoutError, aiohttp.ClientError)


class ApiCallError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def connector(source: str | None) -> aiohttp.TCPConnector:
    """Connections leave from ``source`` (the node's own address) when given."""
    return aiohttp.TCPConnector(local_addr=(source, 0) if source else None)


async def api_call(context: ssl.SSLContext, address: str, method: str, path: str, body: dict | None = None,
                   timeout: float = 10.0, source: str | None = None) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), connector=connector(source)) as session:
        async with session.request(method, f"https://{address}{path}", json=body, ssl=context) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = {"error": (await response.text())[:200]}
            if response.status >= 400:
                raise ApiCallError(response.status, (data or {}).get("error", f"HTTP {response.status}"))
            return data


async def bind_with_retries(start, what: str, timeout: float = 15.0) -> None:
    """A node restarted right after a crash may find its port still held for a moment;
    retry instead of dying."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await start()
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise OSError(f"cannot bind {what}: {err}") from err
            log.warning("cannot bind %s yet (%s); retrying", what, err)
            await asyncio.sleep(0.2)
