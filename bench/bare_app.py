"""The ingest baseline: a bare FastAPI app that reads and parses the webhook's JSON, then says 200.

It is served exactly as `invoiceiq serve` serves the app (the same `uvicorn_config`, so the
same loop, HTTP parser and logging settings): the only difference measured is what happens
inside the request. Run: `python bench/bare_app.py --port 8100`.
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from invoiceiq.cli import uvicorn_config
from invoiceiq.config import Settings


def create_bare_app() -> FastAPI:
    app = FastAPI(title="bare baseline")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/whatsapp/webhook")
    async def webhook(request: Request) -> JSONResponse:
        document = json.loads(await request.body())
        if not isinstance(document, dict):
            return JSONResponse({"status": "ignored"})
        return JSONResponse({"status": "ok"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    options = parser.parse_args()
    settings = Settings(_env_file=None)
    config = uvicorn_config(create_bare_app(), settings, host=options.host, port=options.port)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
