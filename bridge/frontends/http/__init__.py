"""The HTTP front end (aiohttp): REST routes, the live page and its WebSocket, MJPEG, image
uploads (input, control, style), channels and recording routes, the OpenAPI document, and the
connection limits that keep slow clients from locking others out.

May import ``core``, ``client``, ``engine``, ``outputs``, ``texshare`` (Spout and Syphon inputs) and
``frontends.security``.
"""
