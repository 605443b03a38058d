"""The worker the kill -9 benchmark SIGKILLs: `siyu serve` with a delivery lease of a few seconds.

    python -m bench.kill9_worker CONFIG SCRIPTS LEASE_SECONDS

Everything is the real thing (App, adapters, scheduler loop, Dispatcher); only the lease is short,
so that the claims of a killed worker expire in seconds and the benchmark does not wait 30 s per kill.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta
from pathlib import Path

from bot.app import App, serve
from bot.config_loader import load_config


def main(argv: list[str]) -> None:
    config, scripts, lease = Path(argv[0]), Path(argv[1]), float(argv[2])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_config(config)
    app = App(settings, scripts)
    app.dispatcher.lease = timedelta(seconds=lease)

    async def run() -> None:
        await app.start()
        try:
            await serve(app, settings.server.host, settings.server.port)
        finally:
            await app.close()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
