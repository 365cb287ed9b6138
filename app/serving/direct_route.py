"""A route class for the prediction hot paths.

FastAPI's request handler solves dependencies, validates parameters, extracts endpoint
context and serializes the return value on every request: a large share of a small
prediction's time on the event loop. A `DirectRoute` is documented from its
endpoint's signature and `openapi_extra` like any route, but is served by calling the
endpoint with the bare request and its path parameters; the endpoint checks the key,
validates its body and returns a ready `Response` itself. Errors still reach the app's
exception handlers.
"""

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

Endpoint = Callable[..., Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        expected = {"request", *self.param_convertors}
        if not inspect.iscoroutinefunction(endpoint) or set(
                inspect.signature(endpoint).parameters) != expected:
            raise TypeError(f"a DirectRoute endpoint is `async def (request, "
                            f"{', '.join(sorted(self.param_convertors))})`")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request=request, **request.path_params)
        return handler
