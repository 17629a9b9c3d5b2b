"""The HTTP front: the listening sockets, the HTTP/1.1 protocol and server, the store API (answered
without ASGI) and the Starlette app for status, metrics, health and the internal endpoints."""
