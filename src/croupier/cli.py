"""The ``croupier`` command: serve, migrate, keys, secrets, replay, listen, wallet, demo."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from croupier import __version__
from croupier.config import Settings
from croupier.domain.errors import CroupierError
from croupier.runtime import settle_heap

T = TypeVar("T")

app = typer.Typer(
    name="croupier",
    help="Self-hostable event and money gateway for iGaming.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
secrets_app = typer.Typer(help="The key that seals endpoint secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
wallet_app = typer.Typer(help="The wallet's ledger.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")
console = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="CROUPIER_DATABASE_URL", help="sqlite:/// or postgresql://"
    ),
]


def main() -> None:
    app()


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(f"croupier {__version__}")
        raise typer.Exit()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    database_url: DatabaseUrl = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error")] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Local development: endpoints may be on this machine (loopback addresses).",
        ),
    ] = False,
) -> None:
    """Run everything in one process: the REST API, the wallet's gRPC API and the dispatcher."""
    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        log_level=log_level,
        allow_loopback=True if dev else None,
    )
    _run(_serve(settings))


async def _serve(settings: Settings) -> None:
    import uvicorn

    from croupier.api.rest.app import create_app
    from croupier.bootstrap import build
    from croupier.logs import configure_logging

    configure_logging(settings.log_level)
    container = await build(settings)
    boot = container.bootstrap
    url = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold]croupier {__version__}[/] listening on [cyan]{url}[/]")
    console.print(f"database: {_redacted(settings.database_url)}")
    if settings.allow_loopback:
        console.print(
            "[yellow]development mode:[/] endpoints may be on this machine (loopback); "
            "other internal addresses still need CROUPIER_ALLOW_NETWORKS"
        )
    if boot is not None and boot.generated_admin_key is not None:
        console.print("admin API key (shown once, keep it):")
        console.print(boot.generated_admin_key, highlight=False, soft_wrap=True)
    elif settings.admin_key is None:
        console.print(
            "admin API key: made at first start and not shown again; "
            "`croupier keys create --tenant default --admin` makes another"
        )
    if not settings.grpc_enabled:
        console.print("gRPC: off (CROUPIER_GRPC_ENABLED=false)")

    def grpc_listening(address: str) -> None:
        console.print(f"gRPC listening on {address}", highlight=False, soft_wrap=True)

    config = uvicorn.Config(
        create_app(container, serve_grpc=settings.grpc_enabled, on_grpc_listening=grpc_listening),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
    )
    # The server turns SIGTERM into a graceful stop (drain, record, release); afterwards it
    # re-raises the signal against the handler that was there before. A no-op handler
    # makes that a clean exit with status 0, as process supervisors expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    settle_heap()
    server = uvicorn.Server(config)
    await server.serve()
    if not server.started:
        # The start-up failed (the gRPC port taken, say); the server has logged why.
        raise typer.Exit(3)


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply the database migrations (PostgreSQL needs this before `serve`)."""
    settings = _settings(database_url=database_url)

    async def run() -> None:
        from croupier.bootstrap import build

        # Migrates, and seals endpoint secrets written before they were sealed.
        c = await build(
            settings.model_copy(update={"dispatcher_enabled": False}),
            auto_migrate=True,
            own_store=False,
            generate_admin_key=False,
        )
        await c.close()

    _run(run())
    console.print(f"migrated {_redacted(settings.database_url)} to the newest schema")


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Print a new key for CROUPIER_SECRET_KEY."""
    from croupier.store.secretbox import SecretBox

    console.print(SecretBox.new_key(), highlight=False)


@secrets_app.command("reseal")
def secrets_reseal(database_url: DatabaseUrl = None) -> None:
    """Seal every endpoint secret with the first key of CROUPIER_SECRET_KEY.

    To replace the key: set CROUPIER_SECRET_KEY to "NEW,OLD", run this, then drop OLD.
    """
    settings = _settings(database_url=database_url)

    async def run() -> int:
        from croupier.bootstrap import seal_secrets

        async with _container(settings) as c:
            # On SQLite, starting up may have sealed them already.
            count: int = c.sealed_at_start + await seal_secrets(c.store)
            return count

    count = _run(run())
    console.print(f"{count} endpoints had secrets sealed again")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id or name.")] = "default",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    admin: Annotated[bool, typer.Option(help="May create tenants and keys.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key for a tenant and print it once."""
    settings = _settings(database_url=database_url)

    async def run() -> str:
        async with _container(settings) as c:
            issued = await c.tenants.create_key(None, tenant, name=name, admin=admin)
            secret: str = issued.secret
            return secret

    secret = _run(run())
    err.print(f"new {'admin ' if admin else ''}key for tenant {tenant!r} (shown once):")
    console.print(secret, highlight=False)


@app.command()
def replay(
    endpoint: Annotated[str, typer.Option(help="Endpoint id.")],
    since: Annotated[str | None, typer.Option(help="ISO 8601, e.g. 2026-01-02T00:00:00Z")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601, exclusive")] = None,
    status: Annotated[str, typer.Option(help="dead, failed or all")] = "dead",
    database_url: DatabaseUrl = None,
) -> None:
    """Send an endpoint's dead (or failed, or all) deliveries again, with a progress bar."""
    from croupier.api.rest.routes._params import parse_time
    from croupier.services.deliveries import ReplayScope

    settings = _settings(database_url=database_url)
    try:
        scope = ReplayScope(status)
    except ValueError:
        err.print("[red]--status must be dead, failed or all[/]")
        raise typer.Exit(2) from None

    async def run() -> int:
        async with _container(settings) as c:
            tenant_id = await c.endpoints.tenant_of(endpoint)
            with Progress(
                TextColumn("replaying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
            ) as bar:
                task = bar.add_task("replay", total=None)

                def step(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                count: int = await c.deliveries.replay(
                    tenant_id,
                    endpoint,
                    scope=scope,
                    since_ms=parse_time(since, "since"),
                    until_ms=parse_time(until, "until"),
                    progress=step,
                )
                return count

    count = _run(run())
    console.print(f"{count} deliveries of {endpoint} are due again")


@app.command()
def listen(
    secret: Annotated[
        list[str],
        typer.Option(
            "--secret",
            envvar="CROUPIER_WEBHOOK_SECRET",
            show_default=False,
            help=(
                "The endpoint's secret: whsec_... (standard), the whpk_ public key (ed25519), "
                "the shared string (hmac-hex) or the API key (bearer). Repeat it to accept "
                "the old and the new one of a rotation."
            ),
        ),
    ],
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 9000,
    dialect: Annotated[
        str, typer.Option(help="The endpoint's dialect: standard, ed25519, hmac-hex or bearer.")
    ] = "standard",
    header_prefix: Annotated[
        str, typer.Option(help="hmac-hex only: the {Prefix} of X-{Prefix}-Signature.")
    ] = "Croupier",
    status: Annotated[
        int, typer.Option(help="Status to answer verified deliveries with, e.g. 503.")
    ] = 200,
    fail_first: Annotated[
        int,
        typer.Option(help="Answer 500 to the first N deliveries of each event, then --status."),
    ] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    tolerance: Annotated[
        int, typer.Option(help="Seconds a signed timestamp may be away from now.")
    ] = 300,
) -> None:
    """Receive webhooks locally: verify, spot duplicates, and print each delivery."""
    from croupier.listen import run_listener, serve_listener

    try:
        listener = serve_listener(
            secret,
            dialect=dialect,
            host=host,
            port=port,
            header_prefix=header_prefix,
            status=status,
            fail_first=fail_first,
            tolerance_s=tolerance,
            console=console,
        )
    except (ValueError, TypeError, ImportError) as exc:
        # The verifier's messages name the faulty option or key, never the key itself.
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/] cannot listen on {escape(host)}:{port}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    run_listener(listener)


@app.command()
def demo(
    seconds: Annotated[
        float, typer.Option(min=1, max=3600, help="How long the game server plays.")
    ] = 20.0,
    players: Annotated[int, typer.Option(min=1, max=1000, help="Players to register.")] = 20,
    tables: Annotated[
        int, typer.Option(min=1, max=64, help="Rounds played at once (half REST, half gRPC).")
    ] = 8,
    seed: Annotated[int | None, typer.Option(help="Seed of the game's randomness.")] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary database and log.")
    ] = False,
) -> None:
    """See croupier work: a game server plays rounds over REST and gRPC against a fresh
    croupier, a local receiver verifies every webhook, and the ledger is checked at the end."""
    from croupier.demo import Options, run_demo

    status = run_demo(
        Options(seconds=seconds, players=players, tables=tables, keep=keep, seed=seed), console
    )
    raise typer.Exit(status)


@wallet_app.command("check")
def wallet_check(
    database_url: DatabaseUrl = None,
    examples: Annotated[
        int, typer.Option(min=1, max=1000, help="Violations shown per kind, at most.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify the ledger's invariants over every tenant; exit 1 on any violation.

    Each transaction's postings sum to zero per currency; so does each currency overall;
    no balance is negative; each player's balances equal the sums of their postings; held
    money equals the player's open bets; each hold is authorized once and resolved at most
    once.
    """
    import orjson

    settings = _settings(database_url=database_url)

    async def run() -> Any:
        async with _container(settings) as c:
            with err.status("checking the ledger"):
                return await c.wallet.check(limit=examples)

    report = _run(run())
    if as_json:
        console.print_json(
            orjson.dumps(
                {
                    "ok": not report.violations,
                    "counts": report.counts,
                    "tenant_accounts": [
                        {"tenant_id": t, "account": a, "currency": cur, "balance": bal}
                        for t, a, cur, bal in report.tenant_accounts
                    ],
                    "violations": report.violations,
                }
            ).decode()
        )
    else:
        _print_report(report)
    if report.violations:
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    from rich.table import Table

    counts = ", ".join(f"{n:,} {what}" for what, n in report.counts.items())
    console.print(f"ledger: {counts}")
    if report.tenant_accounts:
        table = Table("tenant", "account", "currency", "balance (minor units)")
        for tenant_id, account, currency, balance in report.tenant_accounts:
            table.add_row(tenant_id, account, currency, f"{balance:,}")
        console.print(table)
    if not report.violations:
        console.print("[green]OK[/]: every invariant holds")
        return
    total = sum(len(v) for v in report.violations.values())
    console.print(f"[red]FAILED[/]: {len(report.violations)} kind(s) of violation ({total} shown)")
    for kind, found in report.violations.items():
        console.print(f"[red]{kind}[/]")
        for line in found:
            console.print(f"  {escape(line)}", highlight=False)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        err.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from None


class _container:
    """The wired services, for one CLI command (no dispatcher, no claim on the file)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"dispatcher_enabled": False})

    async def __aenter__(self) -> Any:
        from croupier.bootstrap import build

        self.c = await build(self.settings, own_store=False, generate_admin_key=False)
        return self.c

    async def __aexit__(self, *exc: object) -> None:
        await self.c.close()


def _run(coro: Awaitable[T]) -> T:
    """Run on uvloop where present; print croupier's errors plainly and exit non-zero."""
    try:
        import uvloop

        runner: Callable[[Any], T] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(coro)
    except CroupierError as exc:
        err.print(f"[red]{exc.code}[/]: {escape(exc.message)}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        err.print(f"[red]error:[/] {escape(message)}")
        raise typer.Exit(1) from None


def _known_failure(exc: Exception) -> str | None:
    """A plain sentence for failures an operator can fix; None for real bugs."""
    from sqlalchemy.exc import DBAPIError

    from croupier.bootstrap import SchemaOutOfDate
    from croupier.store.lock import StoreLocked
    from croupier.store.secretbox import SecretKeyError

    if isinstance(exc, SchemaOutOfDate | StoreLocked | SecretKeyError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name == "asyncpg":
        return "PostgreSQL needs the driver: pip install 'croupier[postgres]'"
    if isinstance(exc, DBAPIError):
        return f"the database refused: {str(exc.orig).strip() or type(exc.orig).__name__}"
    if isinstance(exc, OSError):
        return f"cannot reach the database: {exc}"
    return None


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


if __name__ == "__main__":
    main()
