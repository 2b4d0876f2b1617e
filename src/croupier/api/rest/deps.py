"""Request dependencies: the container and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from croupier.bootstrap import Container
from croupier.domain.tenants import Principal


async def container(request: Request) -> Container:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
    # thread hop on every request for what is an attribute read.
    return _container(request)


async def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    raw = key.strip() if scheme.lower() == "bearer" else None
    return await _container(request).tenants.authenticate(raw)


def _container(request: Request) -> Container:
    c: Container = request.app.state.container
    return c


ContainerDep = Annotated[Container, Depends(container)]
PrincipalDep = Annotated[Principal, Depends(principal)]
