"""The periodic rounds that serve and worker run (audience syncs, funnel counts, platform
verdicts): one loop for all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def every(
    seconds: float, round_: Callable[[], Awaitable[object]], *, log: logging.Logger, failed: str
) -> None:
    """`round_` every `seconds` until cancelled; a failing round is logged (`failed`) and the
    next one tries again (a busy or unreachable database, a platform down)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await round_()
        except Exception:
            log.warning(failed, exc_info=True)
