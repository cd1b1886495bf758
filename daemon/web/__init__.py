"""The HTTP API and the agents' console: one ASGI app (Starlette) served by uvicorn
inside the daemon's event loop, on a listener of its own (`web.listen`)."""
