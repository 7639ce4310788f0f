"""``patchbay secrets put|list|delete|rotate-master-key|shred-tenant|new-master-key``.

Values never travel through argv (shell history, ``ps``): ``put`` reads stdin, or prompts
without echo on a terminal. No command prints a stored value.

Master keys come from ``PATCHBAY_MASTER_KEYS`` or ``PATCHBAY_MASTER_KEY_FILE``. With no
database configured (the embedded Postgres: local development), ``put`` creates a
development key file beside the embedded database and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from patchbay.secrets import (
    KEYS_ENV,
    LocalKeyProvider,
    RotationProgress,
    SecretsError,
    Vault,
    format_master_key,
    generate_master_key,
    load_key_provider,
)

from ..database import DATABASE_URL_ENV, data_home
from .common import CommandError, database_url, print_json, print_table, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``secrets`` and its sub-commands."""
    group = sub.add_parser("secrets", help="store, list and shred tenants' secrets")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    put = actions.add_parser(
        "put",
        help="store a new version of a secret (value from stdin, or a prompt; never argv)",
        description="Store a new version of a secret. The value is read from stdin (one "
        "trailing newline is dropped) or, on a terminal, from a prompt without echo.",
    )
    put.add_argument("tenant")
    put.add_argument("name")
    # Catches a value typed on the command line, to refuse it without echoing it back
    # (argparse's own "unrecognized arguments" error would print it).
    put.add_argument("stray", nargs="*", help=argparse.SUPPRESS)
    put.add_argument("--json", action="store_true", help="print JSON")
    put.set_defaults(handler=_put)

    listing = actions.add_parser("list", help="list secrets: names, versions, dates; no values")
    listing.add_argument("tenant", nargs="?", help="only this tenant's secrets")
    listing.add_argument("--prefix", help="only names starting with this")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    delete = actions.add_parser("delete", help="delete a secret, or one version of it")
    delete.add_argument("tenant")
    delete.add_argument("name")
    delete.add_argument("--version", type=int, help="delete only this version")
    delete.add_argument("--json", action="store_true", help="print JSON")
    delete.set_defaults(handler=_delete)

    rotate = actions.add_parser(
        "rotate-master-key",
        help="re-wrap every data key with the newest master key (resumable)",
        description="Re-wrap every tenant's data key with the first key of "
        f"{KEYS_ENV} (the newest). Values are not re-encrypted. Safe to interrupt and run "
        "again; keep the old keys configured until it reports completion.",
    )
    rotate.add_argument("--batch-size", type=int, default=100, help="data keys per commit")
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=_rotate)

    shred = actions.add_parser(
        "shred-tenant",
        help="delete a tenant's data key: all its secrets become unrecoverable",
    )
    shred.add_argument("tenant")
    shred.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    shred.add_argument("--json", action="store_true", help="print JSON")
    shred.set_defaults(handler=_shred)

    new_key = actions.add_parser(
        "new-master-key", help=f"print a new random master key line for {KEYS_ENV}"
    )
    new_key.add_argument("--id", dest="key_id", help="key id (default: k<date>-<random>)")
    new_key.set_defaults(handler=_new_master_key)


def _key_provider(args: argparse.Namespace) -> LocalKeyProvider | None:
    # Local development mode exactly when the embedded database is in use.
    embedded = not (args.database_url or os.environ.get(DATABASE_URL_ENV))
    return load_key_provider(
        development_home=data_home() if embedded else None,
        announce=lambda message: print(f"patchbay: {message}", file=sys.stderr),
    )


def _with_vault(
    args: argparse.Namespace,
    body: Callable[[Vault], Awaitable[int]],
    *,
    keys: LocalKeyProvider | None = None,
) -> int:
    async def go() -> int:
        async with Vault(
            database_url(args), schema=schema_of(args), keys=keys, cache_ttl=0, pool_max=2
        ) as vault:
            return await body(vault)

    try:
        return asyncio.run(go())
    except SecretsError as exc:
        raise CommandError(str(exc)) from exc


def _read_value(args: argparse.Namespace) -> str:
    if args.stray:
        raise CommandError(
            "refusing a secret value given as an argument (it would stay in shell history "
            "and the process list); pipe it on stdin or let the command prompt for it"
        )
    if sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(f"value of secret://{args.tenant}/{args.name}: ")
    else:
        value = sys.stdin.read() if sys.stdin is not None else ""
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise CommandError("no value given: pipe it on stdin or type it at the prompt")
    return value


def _put(args: argparse.Namespace) -> int:
    try:
        keys = _key_provider(args)
    except SecretsError as exc:
        raise CommandError(str(exc)) from exc
    value = _read_value(args)

    async def body(vault: Vault) -> int:
        stored = await vault.put(args.tenant, args.name, value)
        if args.json:
            print_json(stored.to_json())
        else:
            pruned = f" (pruned {stored.pruned} old version(s))" if stored.pruned else ""
            print(f"stored {stored.ref}{pruned}")
        return 0

    return _with_vault(args, body, keys=keys)


def _list(args: argparse.Namespace) -> int:
    async def body(vault: Vault) -> int:
        infos = await vault.list_secrets(args.tenant, prefix=args.prefix)
        if args.json:
            print_json([i.to_json() for i in infos])
            return 0
        print_table(
            ["tenant", "name", "latest", "versions", "created_at", "updated_at"],
            [
                [
                    i.tenant,
                    i.name,
                    i.latest_version,
                    ",".join(map(str, i.versions)),
                    i.created_at.isoformat(timespec="seconds"),
                    i.updated_at.isoformat(timespec="seconds"),
                ]
                for i in infos
            ],
        )
        return 0

    return _with_vault(args, body)


def _delete(args: argparse.Namespace) -> int:
    async def body(vault: Vault) -> int:
        await vault.delete(args.tenant, args.name, args.version)
        which = "" if args.version is None else f"@{args.version}"
        if args.json:
            print_json(
                {"tenant": args.tenant, "name": args.name, "version": args.version, "ok": True}
            )
        else:
            print(f"deleted secret://{args.tenant}/{args.name}{which}")
        return 0

    return _with_vault(args, body)


def _rotate(args: argparse.Namespace) -> int:
    try:
        keys = _key_provider(args)
    except SecretsError as exc:
        raise CommandError(str(exc)) from exc

    def progress(p: RotationProgress) -> None:
        print(
            f"re-wrapped {p.done}/{p.total} data key(s) with {p.target_key_id}"
            + (f", {p.failed} failed" if p.failed else ""),
            file=sys.stderr,
            flush=True,
        )

    async def body(vault: Vault) -> int:
        await vault.check_master_keys()
        report = await vault.rotate_master_key(batch_size=args.batch_size, progress=progress)
        if args.json:
            print_json(report.to_json())
        else:
            for tenant, error in report.failed:
                print(f"failed: tenant {tenant}: {error}")
            usage = ", ".join(f"{k}: {n}" for k, n in report.usage.items()) or "none"
            print(f"re-wrapped {report.rewrapped} data key(s); data keys per master key: {usage}")
            if report.complete:
                retired = list(vault.keys.key_ids[1:]) if vault.keys else []
                hint = f"; {', '.join(retired)} may now be removed" if retired else ""
                print(f"every data key is wrapped by {report.target_key_id}{hint}")
            else:
                print(f"{report.remaining} data key(s) still wrapped by other keys; run again")
        return 0 if report.complete else 1

    return _with_vault(args, body, keys=keys)


def _shred(args: argparse.Namespace) -> int:
    if not args.yes:
        if not (sys.stdin is not None and sys.stdin.isatty()):
            raise CommandError("shred-tenant destroys secrets for good: pass --yes to confirm")
        answer = input(
            f"every secret of tenant {args.tenant!r} becomes unrecoverable; type the tenant "
            "to confirm: "
        )
        if answer.strip() != args.tenant:
            raise CommandError("not confirmed; nothing was shredded")

    async def body(vault: Vault) -> int:
        report = await vault.shred_tenant(args.tenant)
        if args.json:
            print_json(report.to_json())
        elif report.data_keys:
            print(
                f"shredded tenant {args.tenant}: data key deleted, {report.secrets} secret(s) "
                f"({report.versions} version(s)) unrecoverable"
            )
        else:
            print(f"tenant {args.tenant} has no data key: nothing to shred")
        return 0

    return _with_vault(args, body)


def _new_master_key(args: argparse.Namespace) -> int:
    try:
        key = generate_master_key(args.key_id)
    except SecretsError as exc:
        raise CommandError(str(exc)) from exc
    print(format_master_key(key))
    print(
        f"put it first in {KEYS_ENV} (comma-separated, newest first), keep the old keys, "
        "then run 'patchbay secrets rotate-master-key'",
        file=sys.stderr,
    )
    return 0
