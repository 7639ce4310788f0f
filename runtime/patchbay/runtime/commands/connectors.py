"""``patchbay connectors list|run|check``: installed connector plugins, and dry runs.

``run`` and ``check`` call the real API but not the queue nor the database: records and
state stay in memory and are printed. Secret values come from a JSON file mapping
references to values (``{"secret://local/contacts/token": "..."}``), never from argv, and
are scrubbed from everything the command prints (errors and logs alike).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from patchbay.connectors import (
    CheckContext,
    Connector,
    ConnectorError,
    HttpClient,
    JobType,
    RateLimited,
    SdkError,
    discover,
    load_connector,
    run_local,
    secret_fields,
)
from patchbay.secrets import Redactor, install_log_redaction

from .common import CommandError, print_json, print_table

_LOCAL = "local"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``connectors`` and its sub-commands."""
    group = sub.add_parser(
        "connectors", help="list installed connector plugins; dry-run a job or a check"
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list", help="installed connectors: version, job types, config schema"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    run = actions.add_parser(
        "run",
        help="run one job locally against the real API, without the queue (a dry run)",
        description="Run one job of a connector locally, against the real API but without "
        "the queue or the database, and print its records and the new state. A backfill "
        "runs every window of [--since, --until) in order.",
    )
    _connector_arguments(run)
    run.add_argument("job_type", metavar="JOB_TYPE")
    run.add_argument("--state", type=Path, help="JSON file of the state to start from")
    run.add_argument(
        "--state-out", type=Path, help="write the new state to this JSON file (may be --state)"
    )
    run.add_argument("--since", help="a backfill's range start (ISO 8601; naive = UTC)")
    run.add_argument("--until", help="a backfill's range end, exclusive (ISO 8601)")
    run.add_argument("--tenant", default=_LOCAL, help="tenant id the job runs for")
    run.add_argument("--integration", default=_LOCAL, help="integration id the job runs for")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(handler=_run)

    check = actions.add_parser(
        "check", help="validate a config and its credentials against the real API"
    )
    _connector_arguments(check)
    check.add_argument("--tenant", default=_LOCAL, help="tenant id the check runs for")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check)


def _connector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "connector", metavar="CONNECTOR", help="an installed connector's name, or module:Class"
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="JSON file of the connector's config"
    )
    parser.add_argument(
        "--secrets",
        type=Path,
        help="JSON file mapping secret references to their values (never pass values as arguments)",
    )


# -- list -------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    installed = discover()
    described = []
    for name in sorted(installed):
        cls = installed[name]
        info = cls().describe()
        info["class"] = f"{cls.__module__}:{cls.__qualname__}"
        described.append(info)
    if args.json:
        print_json(described)
        return 0
    if not described:
        print("no connector plugins installed (entry-point group 'patchbay.connectors')")
        return 0
    for index, info in enumerate(described):
        if index:
            print()
        print(f"{info['name']} {info['version']}  ({info['class']})")
        cls = installed[info["name"]]
        print_table(
            ["JOB TYPE", "KIND", "SCHEDULE", "WINDOW", "PRIORITY"],
            [_job_row(job) for job in cls.job_types().values()],
        )
        print()
        print_table(["CONFIG FIELD", "TYPE", "REQUIRED", "DESCRIPTION"], _config_rows(info))
    return 0


def _job_row(job: JobType) -> list[Any]:
    window = None
    if job.window is not None:
        seconds = job.window.total_seconds()
        window = _duration(seconds)
    return [job.name, job.kind, job.every, window, job.priority]


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _config_rows(info: dict[str, Any]) -> list[list[Any]]:
    schema = info["config_schema"]
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("format") or prop.get("type") or "any"
        needed = "yes" if name in required else f"no (default {json.dumps(prop.get('default'))})"
        rows.append([name, kind, needed, prop.get("description", "")])
    return rows


# -- run and check ----------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} file {str(path)!r} is not valid JSON: {exc}") from exc


def _read_object(path: Path, what: str) -> dict[str, Any]:
    value = _read_json(path, what)
    if not isinstance(value, dict):
        raise CommandError(f"{what} file {str(path)!r} must hold a JSON object")
    return value


def _read_secrets(path: Path | None, redactor: Redactor) -> dict[str, str]:
    if path is None:
        return {}
    found = _read_object(path, "secrets")
    for ref, value in found.items():
        if not isinstance(value, str) or not value:
            # The message names the reference, never the value.
            raise CommandError(f"secrets file: the value of {ref!r} must be a non-empty string")
        redactor.register(value)
    return found


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"{option} must be an ISO 8601 date or time, got {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _prepare(
    args: argparse.Namespace, job_type: str | None = None
) -> tuple[Connector[Any], dict[str, Any], dict[str, str]]:
    """The connector, the config and the secrets of a run (of ``job_type``) or a check;
    registers the secret values for redaction, from log handlers too."""
    redactor: Redactor = args.redactor
    install_log_redaction(redactor)
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    connector = load_connector(args.connector)()
    if job_type is not None:
        connector.job_type(job_type)  # JobTypeNotFound names the ones it has
    config = _read_object(args.config, "config")
    try:
        connector.config_model.model_validate(config)
    except ValidationError as exc:
        # Field and reason only: pydantic's own text repeats the input, which may be a
        # token pasted where its reference belongs.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(config)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise CommandError(f"invalid config for {connector.name}: {problems}") from None
    secrets = _read_secrets(args.secrets, redactor)
    missing = _missing_secrets(connector, config, secrets)
    if missing:
        raise CommandError(
            f"no value for {', '.join(missing)}: add it to the --secrets file, a JSON object "
            '{"<reference>": "<value>"}'
        )
    return connector, config, secrets


def _missing_secrets(
    connector: Connector[Any], config: Mapping[str, Any], secrets: Mapping[str, str]
) -> list[str]:
    refs = [config.get(name) for name in secret_fields(connector.config_model)]
    return [ref for ref in refs if isinstance(ref, str) and ref not in secrets]


def _guarded(args: argparse.Namespace, body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``body()`` (a coroutine factory); connector failures become a one-line error,
    and anything unexpected a traceback, all with secret values scrubbed."""
    redactor: Redactor = args.redactor
    try:
        result: int = asyncio.run(body())
        return result
    except CommandError as exc:
        raise CommandError(redactor(str(exc))) from None
    except RateLimited as exc:
        raise CommandError(
            f"rate limited by the provider: {redactor(str(exc))} (a queued job would wait "
            f"{exc.retry_after:g}s without spending an attempt)"
        ) from None
    except (ConnectorError, SdkError) as exc:
        raise CommandError(f"{type(exc).__name__}: {redactor(str(exc))}") from None
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redactor(text))
        raise CommandError(
            f"the connector raised {type(exc).__name__}: {redactor(str(exc))}"
        ) from None


def _run(args: argparse.Namespace) -> int:
    args.redactor = Redactor()
    connector, config, secrets = _prepare(args, args.job_type)
    kind = connector.job_type(args.job_type)
    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if kind.kind == "backfill":
        if since is None or until is None:
            raise CommandError(f"{args.job_type} is a backfill: give --since and --until")
        if not since < until:
            raise CommandError("--since must be before --until")
    elif since is not None or until is not None:
        raise CommandError(f"{args.job_type} is a {kind.kind}: only backfills take --since/--until")
    state = _read_object(args.state, "state") if args.state else None

    async def body() -> int:
        result = await run_local(
            connector,
            args.job_type,
            config,
            state=state,
            secrets=secrets,
            tenant=args.tenant,
            integration=args.integration,
            since=since,
            until=until,
        )
        redactor: Redactor = args.redactor
        records = redactor.redact_data(result.records)
        new_state = redactor.redact_data(result.state)
        if args.state_out is not None:
            args.state_out.write_text(json.dumps(new_state, indent=2) + "\n", "utf-8")
        if args.json:
            print_json(
                {
                    "connector": connector.name,
                    "job_type": args.job_type,
                    "records": records,
                    "state": new_state,
                    "stats": result.stats.to_json(),
                }
            )
            return 0
        for stream, items in records.items():
            for record in items:
                print(f"{stream}\t{json.dumps(record, default=str)}")
        stats = result.stats
        per_stream = ", ".join(f"{s}: {n}" for s, n in sorted(stats.records.items()))
        print(
            f"{sum(stats.records.values())} record(s)"
            + (f" ({per_stream})" if per_stream else "")
            + f", {stats.checkpoints} checkpoint(s), {stats.http_requests} HTTP request(s)"
        )
        print(f"state: {json.dumps(new_state, default=str)}")
        return 0

    return _guarded(args, body)


def _check(args: argparse.Namespace) -> int:
    args.redactor = Redactor()
    connector, config, secrets = _prepare(args)

    async def resolve(ref: str) -> str:
        return secrets[ref]

    async def body() -> int:
        model = connector.config_model.model_validate(config)  # checked in _prepare
        http = HttpClient()
        logger = logging.LoggerAdapter(
            logging.getLogger(f"patchbay.connectors.{connector.name}"), {"tenant": args.tenant}
        )
        try:
            await connector.check(
                CheckContext(
                    tenant=args.tenant,
                    integration=_LOCAL,
                    config=model,
                    http=http,
                    resolve=resolve,
                    log=logger,
                )
            )
        finally:
            await http.aclose()
        if args.json:
            print_json({"connector": connector.name, "ok": True, "http_requests": http.requests})
        else:
            print(f"ok: {connector.name} accepted the config and its credentials")
        return 0

    return _guarded(args, body)
