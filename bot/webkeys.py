"""Keys under which the hub's aiohttp application keeps its shared objects."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.app import App
from bot.hub import Hub

APP: web.AppKey[App] = web.AppKey("app", App)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
OUTBOX: web.AppKey[Any] = web.AppKey("outbox", object)  # bot.outbox.Outbox
SCHEDULER: web.AppKey[Any] = web.AppKey("scheduler", object)
BUS: web.AppKey[Any] = web.AppKey("bus", object)  # bot.console_bus.ConsoleBus
CHATS: web.AppKey[Any] = web.AppKey("chats", object)  # bot.web.WebChats: open web-chat sockets
