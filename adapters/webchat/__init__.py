"""Web chat: a browser page over aiohttp + WebSocket where a person can be customer, group member or guide."""
from adapters.webchat.server import WebChat

__all__ = ["WebChat"]
