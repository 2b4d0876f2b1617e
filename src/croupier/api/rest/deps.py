"""Request dependencies: the container and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from croupier.bootstrap import Container
from croupier.domain.tenants import Principal


def container(request: Request) -> Container:
    c: Container = request.app.state.container
    return c


async def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    raw = key.strip() if scheme.lower() == "bearer" else None
    return await container(request).tenants.authenticate(raw)


ContainerDep = Annotated[Container, Depends(container)]
PrincipalDep = Annotated[Principal, Depends(principal)]
