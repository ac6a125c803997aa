"""Command line: ``rationad run | check-config | replay | tail | schema | version``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rationad import __version__
from rationad.config import ConfigError, Settings, load_settings

DEFAULT_CONFIG = "config.toml"


def _settings(path: str | None, **overrides) -> Settings:
    cfg = path if path is not None else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    return load_settings(cfg, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from rationad.daemon import Daemon
    from rationad.logs import configure

    settings = _settings(args.config)
    configure(settings.log.level, settings.log.format)
    return asyncio.run(Daemon(settings).run())


async def _check(settings: Settings) -> list[str]:
    """Reach the broker and the model; return the problems found."""
    problems: list[str] = []
    from aiokafka.admin import AIOKafkaAdminClient

    from rationad.kafka import common_kwargs
    from rationad.topics import TopicCheckError, require_topics

    admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **common_kwargs(settings.kafka))
    reached = False
    try:
        await asyncio.wait_for(admin.start(), 15)
        topics = set(await admin.list_topics())
        reached = True
        missing = [t for t in settings.input.topics if t not in topics]
        if missing:
            problems.append(f"input.topics: topic(s) not found on the broker: {', '.join(missing)}")
    except Exception as exc:
        problems.append(f"kafka.bootstrap_servers: cannot reach {settings.kafka.bootstrap_servers}: {exc!r}")
    finally:
        try:
            await admin.close()
        except Exception:
            pass
    if reached:
        # The daemon writes here: a missing topic on a broker that does not auto-create topics stalls every send.
        try:
            await require_topics(settings.kafka, {"output.topic": settings.output.topic,
                                                  "output.dlq_topic": settings.output.dlq_topic})
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
        except TopicCheckError as exc:
            problems.append(f"kafka.bootstrap_servers: {exc}")
    m = settings.model
    if m.backend == "vllm-server":
        from rationad.model.base import ModelError, make_client
        from rationad.config import redact_url

        url = redact_url(m.server_url or "")
        client = make_client(m)
        try:
            if not await asyncio.wait_for(client.check_health(), m.health_timeout_secs + 5):
                problems.append(f"model.server_url: {url} is not healthy")
            else:
                # /health needs no credentials and names no model: ask for the model list with ours.
                await asyncio.wait_for(client.verify(), m.health_timeout_secs + 25)
        except ModelError as exc:
            problems.append(str(exc) if exc.kind == "config" else f"model.server_url: {exc}")
        except Exception as exc:
            detail = str(exc).replace(m.server_url or url, url)
            problems.append(f"model.server_url: cannot reach {url}: {type(exc).__name__} {detail}".rstrip())
        finally:
            await client.aclose()
    else:
        # Starting the in-process engine takes a minute: check that the folder is a servable model instead.
        if m.path is None or not (Path(m.path) / "config.json").is_file():
            problems.append(f"model.path: {m.path} is not a model folder (no config.json); run scripts/setup.sh")
        if m.adapter is not None and not (Path(m.adapter) / "adapter_config.json").is_file():
            problems.append(f"model.adapter: {m.adapter} is not a LoRA adapter folder (no adapter_config.json)")
    return problems


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    print(json.dumps(settings.redacted(), indent=2))
    internal = settings.repartition_topic()
    if internal is None:
        print(f"repartition: off (input.repartition = {settings.input.repartition!r}): input partitions are windowed "
              "as they are; producers must key records by session key", file=sys.stderr)
    else:
        r = settings.repartition
        print(f"repartition: on (input.repartition = {settings.input.repartition!r}): internal topic {internal!r} "
              f"({r.partitions or 'as many partitions as the largest input topic'}"
              f"{' partitions' if r.partitions else ''}, replication {r.replication_factor}, "
              f"retention {r.retention_ms} ms), created at start if missing", file=sys.stderr)
    if args.offline:
        print("configuration is valid (offline: broker and model not checked)", file=sys.stderr)
        return 0
    problems = asyncio.run(_check(settings))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    print("configuration is valid; broker and model reachable", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rationad import replay

    overrides: dict = {}
    sessions: dict = {}
    for name in ("mode", "gap_secs", "max_lines", "max_span_secs", "window_lines", "window_secs"):
        value = getattr(args, name)
        if value is not None:
            sessions[name] = value
    if sessions.get("window_lines") or sessions.get("window_secs"):
        sessions.setdefault("mode", "fixed")
    if sessions:
        overrides["sessions"] = sessions
    raw_dialect = args.dialect in ("hdfs", "bgl", "generic")
    if raw_dialect:
        inp = {"dialect": args.dialect, "format": "text", "max_record_bytes": 1 << 20}
        if args.key_regex:
            inp["key_regex"] = args.key_regex
        overrides["input"] = inp
    if args.model_path:
        overrides["model"] = {"path": args.model_path}
    settings = _settings(args.config, **overrides)
    path = Path(args.path)
    if not path.is_file():
        raise ConfigError(f"replay: no such file: {path}")
    if raw_dialect:  # fail on the input settings now, not after the model engine has started (tens of seconds)
        from rationad.dialects import make_parser
        from rationad.windows import resolve_spec

        make_parser(settings.input)
        try:
            resolve_spec(settings.sessions, args.dialect)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    skipped = replay.Skipped()
    if raw_dialect:
        labels = replay.read_labels(Path(args.labels)) if args.labels else None
        sessions_iter = replay.sessions_from_log(path, args.dialect, settings.sessions, settings.input, skipped, labels)
        source = args.source or args.dialect
    elif args.dialect == "hdfs-sessions":
        sessions_iter = replay.sessions_from_hdfs_jsonl(path, seed=args.seed)
        source = args.source or "hdfs"
    else:
        sessions_iter = replay.sessions_from_templates(path)
        source = args.source or ("spirit" if "spirit" in path.name.lower() else "bgl" if "bgl" in path.name.lower() else "generic")
    if args.limit:
        import itertools

        sessions_iter = itertools.islice(sessions_iter, args.limit)
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        scores, calls = asyncio.run(
            replay.judge_sessions(sessions_iter, settings.model, source, out, use_cache=not args.no_cache,
                                  progress=sys.stderr.isatty())
        )
    finally:
        if args.out:
            out.close()
    summary = scores.summary() | {"model_calls": calls}
    if skipped.count:
        summary["skipped_lines"] = skipped.count
        for ex in skipped.examples:
            print(f"skipped: {ex}", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    if scores.labelled:
        print(f"precision {summary['precision']:.4f}  recall {summary['recall']:.4f}  F1 {summary['f1']:.4f}  "
              f"({scores.labelled} labelled sessions)", file=sys.stderr)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from rationad.tail import tail

    settings = _settings(args.config)
    try:
        asyncio.run(tail(settings, verdict=args.verdict, key=args.key, from_beginning=args.from_beginning,
                         limit=args.limit, idle_exit_secs=args.idle_exit, as_json=args.json))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from rationad.events import schema

    if args.config_schema:
        print(json.dumps(Settings.model_json_schema(), indent=2))
    else:
        print(json.dumps(schema(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rationad.demo import main as demo_main

    return demo_main(args.config if args.config else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None))


def cmd_version(_args: argparse.Namespace) -> int:
    from rationad.prompt import PROMPT_VERSION

    print(f"rationad {__version__} (prompt {PROMPT_VERSION})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rationad", description="Streaming log-anomaly daemon that explains itself.")
    sub = p.add_subparsers(dest="command", required=True)

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help=f"TOML config file (default: ./{DEFAULT_CONFIG} if present)")

    sp = sub.add_parser("run", help="run the daemon")
    config_arg(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("check-config", help="validate the config and reach the broker and the model")
    config_arg(sp)
    sp.add_argument("--offline", action="store_true", help="validate only; do not contact broker or model")
    sp.set_defaults(func=cmd_check_config)

    sp = sub.add_parser("replay", help="judge a log file offline through the daemon's path (no Kafka)")
    sp.add_argument("path", help="the log file (gzip too), session JSONL (hdfs-sessions) or template CSV (templates)")
    sp.add_argument("--dialect", required=True, choices=("hdfs", "bgl", "generic", "hdfs-sessions", "templates"),
                    help="hdfs, bgl, generic: raw log lines; hdfs-sessions: datasets' session JSONL; templates: a CSV "
                         "with an EventTemplate column")
    sp.add_argument("--out", help="write JSON lines here (default: stdout)")
    config_arg(sp)
    sp.add_argument("--labels", help="CSV of session key,label (e.g. HDFS anomaly_label.csv) for scoring")
    sp.add_argument("--source", help="log source name shown to the model (default: from the dialect)")
    sp.add_argument("--key-regex", help="generic dialect: session key regex (group 1 if it has one); not needed with "
                                        "--window-lines or --window-secs (fixed windows over the file)")
    sp.add_argument("--mode", choices=("session", "fixed"),
                    help="session: close a key's window on inactivity, size or span; fixed: count or time windows "
                         "(default: the dialect's; fixed when --window-lines/--window-secs is given)")
    sp.add_argument("--gap-secs", type=float, help="session mode: seconds of event time without a line close it")
    sp.add_argument("--max-lines", type=int, help="a window this many lines long closes")
    sp.add_argument("--max-span-secs", type=float, help="session mode: seconds from a window's first to last line")
    sp.add_argument("--window-lines", type=int, help="fixed mode: lines per window (1: one verdict per line)")
    sp.add_argument("--window-secs", type=float, help="fixed mode: window length in seconds of event time")
    sp.add_argument("--model-path", help="override model.path")
    sp.add_argument("--no-cache", action="store_true", help="disable the verdict cache")
    sp.add_argument("--limit", type=int, help="judge at most this many sessions")
    sp.add_argument("--seed", type=int, default=0, help="hdfs-sessions: rendering seed")
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("tail", help="follow the verdict topic and print rationales")
    config_arg(sp)
    sp.add_argument("--verdict", choices=("normal", "anomalous"))
    sp.add_argument("--key", help="regex on the session key")
    sp.add_argument("--from-beginning", action="store_true")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--idle-exit", type=float, help="exit after this many seconds without events")
    sp.add_argument("--json", action="store_true", help="print raw JSON events")
    sp.set_defaults(func=cmd_tail)

    sp = sub.add_parser("schema", help="print the verdict event JSON Schema")
    sp.add_argument("--config-schema", action="store_true", help="print the configuration's JSON Schema instead")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser("demo", help="local broker + bundled HDFS sample + daemon: shows anomaly events")
    config_arg(sp)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("version", help="print the version")
    sp.set_defaults(func=cmd_version)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
