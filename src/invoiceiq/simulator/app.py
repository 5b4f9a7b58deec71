"""The simulator as one sub-application: both provider fakes, the control API and the phones UI.

Mounted at `/simulator` in the app (`mount_simulator`) or served alone by `invoiceiq simulator`
(`create_standalone_app`); the URLs are the same either way (DESIGN §8). The simulator talks to
the app only over HTTP, like 360dialog and Daraja do, and keeps its state in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from invoiceiq.config import Settings
from invoiceiq.kit.http import make_http_client
from invoiceiq.mpesa.simulator import DarajaFake
from invoiceiq.simulator.config import SimulatorConfig, SimulatorSettings
from invoiceiq.simulator.control import build_control_router
from invoiceiq.simulator.ui import STATIC_DIR, build_ui_router
from invoiceiq.whatsapp.simulator import WhatsAppFake
from invoiceiq.whatsapp.templates import load_templates

MOUNT_PATH = "/simulator"
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 - a header name, not a secret


class Simulator:
    """The two fakes, their shared config and HTTP client, and the ASGI app that serves them."""

    def __init__(
        self,
        *,
        settings: SimulatorSettings,
        whatsapp: WhatsAppFake,
        daraja: DarajaFake,
        http: httpx.AsyncClient,
        business_shortcode: str,
    ) -> None:
        self.settings = settings
        self.whatsapp = whatsapp
        self.daraja = daraja
        self.http = http
        # Shown on the PIN prompt, as a phone shows whom it is paying.
        self.business_shortcode = business_shortcode
        self._initial_config = settings.config
        self.app = self._build_app()

    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title="InvoiceIQ simulator",
            summary="Offline fakes of 360dialog and Daraja, with a control API and a phones UI.",
            version="0.1.0",
        )
        app.include_router(self.whatsapp.router, prefix="/whatsapp")
        app.include_router(self.daraja.router, prefix="/daraja")
        app.include_router(build_control_router(self))
        app.include_router(build_ui_router(self))
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        return app

    def configure(self, body: SimulatorConfig) -> None:
        """Replace the config. Top-level fields the body leaves out keep the values this
        simulator started with, not the class defaults: those match its app's settings
        (CUSTOMER_WINDOW), and a test that sets faults must not quietly undo that."""
        given = body.model_dump(exclude_unset=True)
        merged = {**self._initial_config.model_dump(), **given}
        self.settings.update(SimulatorConfig.model_validate(merged))

    def reset(self) -> None:
        """Forget every message, prompt and token, and go back to the config it started with.

        The registered webhook stays (the WhatsApp fake keeps it, as a channel keeps its
        configuration): a reset clears test state, it does not disconnect the app.
        """
        self.whatsapp.reset()
        self.daraja.reset()
        self.settings.update(self._initial_config)

    async def aclose(self) -> None:
        try:
            await self.whatsapp.aclose()
            await self.daraja.aclose()
        finally:
            await self.http.aclose()


def create_simulator(settings: Settings) -> Simulator:
    """A simulator whose provider accounts hold the same credentials as the app's settings."""
    sim_settings = SimulatorSettings(SimulatorConfig(customer_window_s=settings.customer_window))
    http = make_http_client()
    whatsapp = WhatsAppFake(
        sim_settings,
        load_templates(),
        api_key=settings.whatsapp_api_key.get_secret_value(),
        http=http,
    )
    daraja = DarajaFake(
        sim_settings,
        consumer_key=settings.mpesa_consumer_key.get_secret_value(),
        consumer_secret=settings.mpesa_consumer_secret.get_secret_value(),
        shortcode=settings.mpesa_shortcode,
        passkey=settings.mpesa_passkey.get_secret_value(),
        http=http,
        party_b=settings.party_b,
    )
    return Simulator(
        settings=sim_settings,
        whatsapp=whatsapp,
        daraja=daraja,
        http=http,
        business_shortcode=settings.party_b,
    )


def mount_simulator(app: FastAPI, simulator: Simulator) -> None:
    """Serve `simulator` under `/simulator` of `app`; the caller closes it (`aclose`)."""

    # A mount only matches `/simulator/…`; send the bare path to the UI with a relative
    # Location, so it works behind any host name or proxy.
    async def simulator_root() -> RedirectResponse:
        return RedirectResponse(f"{MOUNT_PATH}/", status_code=307)

    app.add_api_route(MOUNT_PATH, simulator_root, methods=["GET"], include_in_schema=False)
    # `make run` prints the app's address: with the simulator on, its root is the simulator
    # (there is no other page there; without the simulator it stays a 404).
    app.add_api_route("/", simulator_root, methods=["GET"], include_in_schema=False)
    app.mount(MOUNT_PATH, simulator.app, name="simulator")


def register_app_webhook(simulator: Simulator, *, local_origin: str, secret: str) -> None:
    """Point the fake 360dialog account at the app's webhook, as `whatsapp register-webhook`
    does with the real one."""
    simulator.whatsapp.register_webhook(
        f"{local_origin.rstrip('/')}/whatsapp/webhook", {WEBHOOK_SECRET_HEADER: secret}
    )


def create_standalone_app(settings: Settings) -> FastAPI:
    """The simulator as its own server (`invoiceiq simulator`), at the same `/simulator` URLs.

    Its webhook starts at `BASE_URL/whatsapp/webhook` (where the app is expected to listen);
    `invoiceiq whatsapp register-webhook` moves it, as with 360dialog.
    """
    simulator = create_simulator(settings)
    register_app_webhook(
        simulator,
        local_origin=settings.base_url,
        secret=settings.whatsapp_webhook_secret.get_secret_value(),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await simulator.aclose()

    app = FastAPI(title="InvoiceIQ simulator", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.simulator = simulator
    mount_simulator(app, simulator)
    return app
