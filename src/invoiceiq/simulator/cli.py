"""`invoiceiq simulator`: the provider simulator as its own server, at the same `/simulator` URLs.

Used when the app runs elsewhere (benchmarks, several app processes): point
`WHATSAPP_API_URL` at `http://HOST:PORT/simulator/whatsapp` and `MPESA_API_URL` at
`http://HOST:PORT/simulator/daraja`. Its webhook starts at `BASE_URL/whatsapp/webhook`;
`invoiceiq whatsapp register-webhook` moves it.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from invoiceiq.config import Settings, describe_settings_error
from invoiceiq.ops.logging import configure_logging
from invoiceiq.simulator.app import create_standalone_app


def simulator(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 9000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve the WhatsApp and M-PESA simulator (UI at /simulator) as its own server."""
    try:
        settings = Settings()
    except ValidationError as error:
        typer.echo(describe_settings_error(error), err=True)
        raise typer.Exit(code=2) from None
    if settings.is_production:
        typer.echo(
            "The simulator is for development and tests, not ENVIRONMENT=production.", err=True
        )
        raise typer.Exit(code=2)
    configure_logging()
    application = create_standalone_app(settings)
    typer.echo(f"simulator at http://{host}:{port}/simulator", err=True)
    config = uvicorn.Config(application, host=host, port=port, log_config=None, access_log=False)
    uvicorn.Server(config).run()
