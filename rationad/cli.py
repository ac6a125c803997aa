"""Command line: ``rationad run | check-config | replay | tail | label | templates | schema | version``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import re
import sys
import time
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rationad import __version__, labels, stop_signals
from rationad.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from rationad.records import Session

DEFAULT_CONFIG = "config.toml"
T = TypeVar("T")


def _settings(path: str | None, **overrides) -> Settings:
    cfg = path if path is not None else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    return load_settings(cfg, **overrides)


EXECUTOR_PREFIX = "rationad-executor"


def cmd_run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from rationad.daemon import Daemon
    from rationad.logs import configure

    settings = _settings(args.config)
    configure(settings.log.level, settings.log.format)

    class NoWait(ThreadPoolExecutor):
        """asyncio's default executor runs the Kafka clients' DNS lookups; ``asyncio.run`` waited for them after the
        daemon had stopped, without a bound (a resolver that does not answer: 40-50 s in a pod), past the
        supervisor's grace period (review)."""

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            super().shutdown(wait=False, cancel_futures=True)

    async def main() -> int:
        asyncio.get_running_loop().set_default_executor(NoWait(thread_name_prefix=EXECUTOR_PREFIX))
        return await Daemon(settings).run()

    code = asyncio.run(main())
    import threading

    if any(t.name.startswith(EXECUTOR_PREFIX) and t.is_alive() for t in threading.enumerate()):
        # a call still running there (a lookup that hangs) would hold the interpreter's exit, which joins the
        # executor's threads: everything is stopped and committed, so leave now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def _check_state_topics(settings: Settings) -> list[str]:
    """The topics ``run`` checks at start besides its inputs and outputs (``ensure_compacted_topic`` for the template
    level's labels and catalog, ``ensure_topic`` for the repartition topic), without creating a missing one: one
    that exists but is unfit, or that the ACL hides, stops ``run`` (exit 2) after ``check-config`` said the
    configuration was valid (review, 2026-12-07)."""
    from rationad.topics import TopicCheckError, ensure_compacted_topic, ensure_topic

    checks: list[Coroutine[Any, Any, int]] = []
    if settings.judge_level() == "template":
        checks += [ensure_compacted_topic(settings.kafka, topic, key=key, timeout_secs=15, create=False,
                                          expiring=expiring)
                   for key, topic, expiring in (("judge.labels_topic", settings.judge.labels_topic, False),
                                                ("judge.templates_topic", settings.judge.templates_topic, True))]
    if (internal := settings.repartition_topic()) is not None:
        r = settings.repartition
        checks.append(ensure_topic(settings.kafka, internal, key="repartition.topic", partitions=r.partitions,
                                   like=settings.input.topics, replication_factor=r.replication_factor,
                                   retention_ms=r.retention_ms, timeout_secs=15,
                                   max_message_bytes=settings.output.max_message_bytes, create=False))
    problems = []
    for check in checks:
        try:
            await check
        except ConfigError as exc:
            problems.append(str(exc))
        except TopicCheckError as exc:
            problems.append(f"kafka.bootstrap_servers: {exc}")
    return problems


async def _check(settings: Settings, model_ok: bool = True) -> list[str]:
    """Reach the broker and the model (unless its configuration failed, ``model_ok``); return the problems found."""
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
                                                  "output.dlq_topic": settings.output.dlq_topic},
                                 max_message_bytes=settings.output.max_message_bytes, unkeyed=["output.dlq_topic"])
        except ConfigError as exc:
            problems.extend(str(exc).splitlines())
        except TopicCheckError as exc:
            problems.append(f"kafka.bootstrap_servers: {exc}")
        problems += await _check_state_topics(settings)
    m = settings.model
    if m.backend == "vllm-server" and model_ok:
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
    # (the in-process engine is not started: a minute; cmd_check_config checked its folders, as run does first)
    return problems


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    print(json.dumps(settings.redacted(), indent=2))
    level = settings.judge_level()
    if level == "template":
        j = settings.judge
        print(f"judge level: template{'' if settings.judge.level else ' (the ' + settings.input.dialect + ' default)'}"
              f": each line template judged once, windows decided from their templates; operator labels on "
              f"{j.labels_topic!r}, template catalog on {j.templates_topic!r} (compacted, created at start if missing)",
              file=sys.stderr)
    else:
        print(f"judge level: session{'' if settings.judge.level else ' (the ' + settings.input.dialect + ' default)'}"
              f": one model call per window whose prompt is new", file=sys.stderr)
    internal = settings.repartition_topic()
    if internal is None and level == "template" and settings.input.repartition == "auto":
        print("repartition: off (input.repartition = 'auto', template level): a window is a slice of a partition",
              file=sys.stderr)
    elif internal is None:
        print(f"repartition: off (input.repartition = {settings.input.repartition!r}): input partitions are windowed "
              "as they are; producers must key records by session key", file=sys.stderr)
    else:
        r = settings.repartition
        kept = ("kept until committed, then purged" if r.retention_ms == -1 else
                f"retention {r.retention_ms} ms: lines waiting longer for their verdict are deleted unjudged; -1 "
                "keeps them until committed")
        print(f"repartition: on (input.repartition = {settings.input.repartition!r}): internal topic {internal!r} "
              f"({r.partitions or 'as many partitions as the largest input topic'}"
              f"{' partitions' if r.partitions else ''}, replication {r.replication_factor}, {kept}), created at "
              "start if missing", file=sys.stderr)
    from rationad.model.base import check_model_config

    from rationad.judge import model_info
    from rationad.neighbours import NeighbourIndexError, for_model

    problems = []
    m = settings.model
    try:  # the model's folders and URL, its manifest and neighbour index, as run checks them before anything else
        check_model_config(m)
        model_info(m, "check-config")
        for_model((m.adapter, m.path))  # a model trained with labelled neighbours is served only with its index
    except NeighbourIndexError as exc:  # (a ConfigError that does not name the key)
        problems.append(f"model.{'adapter' if m.adapter is not None else 'path'}: {exc}")
    except ConfigError as exc:
        problems.append(str(exc))
    if settings.cache.enabled and settings.cache.durable:
        try:  # as run does before it recovers the cache (an install without it ran silently on memory only)
            import faust  # noqa: F401
        except ImportError:
            problems.append("cache.durable: needs faust-streaming (pip install 'rationad[faust]'), or set "
                            "cache.durable = false")
    if args.offline:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if problems:
            return 1
        print("configuration is valid (offline: broker and model not checked)", file=sys.stderr)
        return 0
    problems += asyncio.run(_check(settings, model_ok=not problems))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    print("configuration is valid; broker and model reachable", file=sys.stderr)
    return 0


def _unit_threshold(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a threshold is in (0, 1]")
    return value


def _count(text: str) -> int:
    """A ``--limit``: a whole number of at least 1 (review 2026-12-07: -1 crashed replay with a traceback, and 0 meant
    no limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def _secs(text: str) -> float:
    """A number of seconds above 0 (review 2026-12-07: ``--idle-exit nan`` never exited, -5 at the first poll)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: a number of seconds above 0")
    return value


def replay_overrides(args: argparse.Namespace) -> dict:
    """The settings ``replay`` lays over the configuration: its session options, and for raw logs the input's."""
    overrides: dict = {}
    sessions: dict = {}
    for name in ("mode", "gap_secs", "max_lines", "max_span_secs", "window_lines", "window_secs"):
        value = getattr(args, name)
        if value is not None:
            sessions[name] = value
    if sessions.get("window_lines") or sessions.get("window_secs"):
        sessions.setdefault("mode", "fixed")
    # the flags' mode replaces the config's: its keys of the other mode are left out (a config of session windows
    # refused --window-lines for its gap_secs: review 2026-12-07)
    others = {"fixed": ("gap_secs", "max_span_secs"), "session": ("window_lines", "window_secs")}
    for name in others.get(sessions.get("mode") or "", ()):
        sessions.setdefault(name, None)
    if sessions:
        overrides["sessions"] = sessions
    raw_dialect = args.dialect in ("hdfs", "bgl", "generic")
    if raw_dialect:
        # a file is read whole: no topics, so no repartitioning. input.max_record_bytes is the configured one: a
        # longer line is skipped (reported), as the daemon dead-letters it (replay read lines of up to 1 MiB, and
        # judged sessions holding lines the daemon never judges). Records of a JSON input, exported one per line, are
        # read as the daemon reads them (--format json: its message, key and time fields); raw lines leave those
        # settings of a JSON config aside.
        inp = {"dialect": args.dialect, "format": args.format, "repartition": "never"}
        if args.format == "text":
            inp |= {"json_key_field": None, "timestamp_field": None}
        if args.key_regex:
            inp["key_regex"] = args.key_regex
        overrides["input"] = inp
    if args.model_path:
        # that folder, served by the in-process engine: with the config's vllm-server backend the production server
        # judged every session under the new model's name, and a configured adapter went on the new base (review
        # 2026-12-07)
        overrides["model"] = {"path": args.model_path, "backend": "vllm-engine", "adapter": None, "server_url": None,
                              "served_model_name": None, "api_key": None}
    return overrides


# What reading a replay's input may raise: a file that cannot be read (``replay.READ_ERRORS``: a truncated gzip, a
# corrupt one), or a row of the wrong shape (ValueError, KeyError, csv.Error).
INPUT_ERRORS = (OSError, EOFError, zlib.error, ValueError, KeyError, csv.Error)


def cmd_replay(args: argparse.Namespace) -> int:
    from rationad import replay
    from rationad.logs import configure

    overrides = replay_overrides(args)
    raw_dialect = args.dialect in ("hdfs", "bgl", "generic")
    if args.labels and not raw_dialect:
        raise ConfigError(f"--labels: only for raw logs (--dialect hdfs, bgl or generic); {args.dialect} input "
                          "carries its own labels")
    settings = _settings(args.config, **overrides)
    # its warnings to stderr, escaped on a console: structlog's default wrote them to stdout, between the verdicts'
    # JSON lines, with a session key's terminal escapes as they were (review 2026-12-07)
    configure(settings.log.level, settings.log.format)
    path = Path(args.path)
    if not path.is_file():
        raise ConfigError(f"replay: no such file: {path}")
    for flag, written in (("--out", args.out), ("--pr-curve", args.pr_curve)):
        # opened for writing before the input is read: the input (or the labels) would be emptied first (review)
        for read in (path, Path(args.labels) if args.labels else None):
            if written and read is not None and Path(written).exists() and read.exists() \
                    and os.path.samefile(written, read):
                raise ConfigError(f"{flag}: {written} is the file replay reads ({read}); write elsewhere")
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
        try:
            labels = replay.read_labels(Path(args.labels)) if args.labels else None
        except (OSError, ValueError, csv.Error) as exc:
            raise ConfigError(f"--labels: {exc}") from None
        sessions_iter = replay.sessions_from_log(path, args.dialect, settings.sessions, settings.input, skipped, labels)
        source = args.source or args.dialect
    elif args.dialect == "hdfs-sessions":
        sessions_iter = replay.sessions_from_hdfs_jsonl(path, seed=args.seed)
        source = args.source or "hdfs"
    else:
        sessions_iter = replay.sessions_from_templates(path)
        source = args.source or ("spirit" if "spirit" in path.name.lower() else "bgl" if "bgl" in path.name.lower() else "generic")
    if not raw_dialect:  # a file of the wrong shape fails now, not after the model engine has started
        import itertools

        try:
            first = next(sessions_iter, None)
        except INPUT_ERRORS as exc:
            raise ConfigError(f"replay: {_input_problem(path, exc)}") from None
        sessions_iter = itertools.chain([first] if first is not None else [], sessions_iter)
    if args.limit is not None:
        import itertools

        sessions_iter = itertools.islice(sessions_iter, args.limit)
    unreadable: list[str] = []
    sessions_iter = _until_unreadable(sessions_iter, path, unreadable)
    level = args.level or (settings.judge_level() if raw_dialect else "session")
    if level == "template" and not raw_dialect:
        raise ConfigError(f"replay: --level template needs raw log lines (--dialect hdfs, bgl or generic), not "
                          f"{args.dialect}")
    judge = replay.judge_by_template if level == "template" else replay.judge_sessions
    unfinished = {} if level == "template" else {"threshold_unfinished": settings.judge.threshold_unfinished}
    # A template CSV is the template-level task, one template a window: its threshold is the template level's.
    threshold = args.threshold or settings.judge.threshold("template" if args.dialect == "templates" else level)
    if args.pr_curve:  # checked now, as --out is, not after the whole replay (the check leaves no file behind)
        curve = Path(args.pr_curve)
        existed = curve.exists()
        try:
            curve.open("a").close()
        except OSError as exc:
            raise ConfigError(f"--pr-curve: {exc}") from None
        if not existed:
            curve.unlink()
    try:
        out = open(args.out, "wb") if args.out else sys.stdout.buffer
    except OSError as exc:
        raise ConfigError(f"--out: {exc}") from None
    stopped = None
    try:
        scores, calls = asyncio.run(
            judge(sessions_iter, settings.model, source, out, use_cache=not args.no_cache,
                  progress=sys.stderr.isatty(), threshold=threshold, **unfinished)
        )
    except replay.ModelUnavailable as exc:  # what was judged is written and summarised below
        scores, calls, stopped = exc.scores, exc.calls, str(exc)
    finally:
        if args.out:
            out.close()
    if not args.out:
        out.flush()  # the records before the summary on a terminal
    summary = scores.summary() | {"judge_level": level, "model_calls": calls, "threshold": threshold}
    if skipped.count:
        summary["skipped_lines"] = skipped.count
        for ex in skipped.examples:
            print(f"skipped: {ex}", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    for problem in unreadable:  # the input ended in error: what was read before it is judged and written
        print(f"error: replay: {problem}; the sessions read before it were judged", file=sys.stderr)
    if stopped:
        print(f"error: replay: the model stopped answering: {stopped}; the sessions judged before it are written "
              "and summarised", file=sys.stderr)
        return 1
    if unreadable:
        return 2
    if args.labels and not scores.labelled:  # a key format or windowing that matches none of the file's keys
        print(f"error: --labels: no key of {args.labels} names a replayed session (keys are block or session keys "
              "with session windows, line numbers with fixed windows): nothing was scored", file=sys.stderr)
        return 2
    if scores.labelled:
        print(f"precision {summary['precision']:.4f}  recall {summary['recall']:.4f}  F1 {summary['f1']:.4f}  "
              f"({scores.labelled} labelled sessions, threshold {threshold:g})", file=sys.stderr)
    if scores.pairs:  # the operating points an operator chooses judge.threshold_* from
        print(replay.operating_points_table(scores.pairs, threshold), file=sys.stderr)
        if args.pr_curve:
            try:
                replay.write_curve(Path(args.pr_curve), scores.pairs)
            except OSError as exc:
                raise ConfigError(f"--pr-curve: {exc}") from None
    return 0


def _until_unreadable(sessions: Iterator[Session], path: Path, problems: list[str]) -> Iterator[Session]:
    """``sessions`` until the input cannot be read on (a truncated gzip, a bad row after the first, a template that is
    not UTF-8): the problem, naming the file, goes to ``problems`` instead of a traceback after the model's work."""
    try:
        yield from sessions
    except INPUT_ERRORS as exc:
        problems.append(_input_problem(path, exc))


def _input_problem(path: Path, exc: Exception) -> str:
    """``exc`` of reading ``path``, naming the file once (the readers' ValueErrors name it, with the line)."""
    if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
        return str(exc)
    return f"{path}: {exc}" if isinstance(exc, ValueError | csv.Error) else f"{path}: {type(exc).__name__}: {exc}"


def cmd_tail(args: argparse.Namespace) -> int:
    from rationad.tail import tail

    if args.key:
        try:
            re.compile(args.key)
        except re.error as exc:
            raise ConfigError(f"--key: {args.key!r} is not a regular expression: {exc}") from None
    settings = _settings(args.config)
    try:
        _, problem = _on_broker(settings, tail(settings, verdict=args.verdict, key=args.key,
                                               from_beginning=args.from_beginning, limit=args.limit,
                                               idle_exit_secs=args.idle_exit, as_json=args.json))
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def _on_broker(settings: Settings, coro: Coroutine[Any, Any, T]) -> tuple[T | None, str | None]:
    """``asyncio.run(coro)`` and None, or None and the problem when the broker could not be reached or read (a
    ``ConfigError`` still propagates: exit status 2)."""
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(coro), None
    except BrokenPipeError:  # the reader of our output went away (``rationad tail | head``): not the broker's doing
        raise
    except (OSError, TimeoutError, KafkaError) as exc:
        return None, f"kafka.bootstrap_servers: {settings.kafka.bootstrap_servers}: {exc}"


def _line_templates(settings: Settings, text: str) -> list[str]:
    """The templates the daemon judges ``text`` by, read as a record of the configured input (none when it does
    not parse: a template, or a line of another format; for the bgl dialect, unless it is a BGL record beyond
    doubt, ``dialects.looks_bgl``)."""
    from rationad.dialects import BadRecord, looks_bgl, make_parser
    from rationad.template_book import template_of

    if settings.input.dialect == "bgl" and settings.input.format == "text" and not looks_bgl(text):
        return []
    try:
        lines = make_parser(settings.input).parse(text.encode("utf-8", "surrogatepass"))
    except (BadRecord, ValueError):
        return []
    return [template_of(line.message) for line in lines]


async def _label(settings: Settings, args: argparse.Namespace) -> int:
    from rationad import catalog
    from rationad.tail import safe
    from rationad.templates import template_id, to_template

    topic = settings.judge.labels_topic
    target = args.target
    is_id = labels.TEMPLATE_ID.fullmatch(target) is not None
    if args.clear:
        current = {lb.id: lb for lb in await labels.read_labels(settings.kafka, topic)}
        texts = [] if is_id else [*_line_templates(settings, target), target, to_template(target)]
        tids = [target] if is_id else [template_id(t) for t in texts]
        # by text: the label of that text only (a crafted id collision: not the other template's label on its id)
        tid = target if is_id and target in current else next(
            (lb.id for t in texts if (lb := current.get(template_id(t))) is not None and lb.template == t), None)
        if tid is None:
            print(f"error: no operator label for {target!r} (template id {tids[-1]}) in topic {topic!r}; nothing "
                  "written (rationad templates --source operator lists the labels)", file=sys.stderr)
            return 2
        await labels.write_label(settings.kafka, topic, None, tid=tid,
                                 replication_factor=settings.repartition.replication_factor)
        print(f"cleared the label of {tid} ({current[tid].verdict}, by {safe(current[tid].by)}): the model's "
              "verdict applies again")
        return 0
    try:
        stats = {s.id: s for s in await catalog.read_catalog(settings.kafka, settings.judge.templates_topic)}
    except (TimeoutError, ConfigError) as exc:
        if is_id or not args.force:
            raise
        # the documented way round a catalog too large to read in time (or one an ACL hides): a forced label names
        # the text as the daemon would read it, and needs no catalog (review 2026-12-07)
        print(f"note: the template catalog was not read ({exc}); --force labels the text as given",
              file=sys.stderr)
        stats = {}
    if is_id:
        if target not in stats:
            print(f"error: no template with id {target} in the catalog (topic {settings.judge.templates_topic!r}); "
                  "nothing written. An id names only a template rationad has seen: check the id with rationad "
                  "templates, or give the template or a log line (with --force for one never seen)", file=sys.stderr)
            return 2
        template, forced = stats[target].template, False
    else:
        # the template itself, a line's message, or a raw line as the configured dialect reads it (a BGL line's
        # header is not part of its message): the daemon's template first
        parsed = _line_templates(settings, target)
        known = next((t for t in (*parsed, target, to_template(target)) if template_id(t) in stats), None)
        tpl = parsed[0] if parsed else to_template(target)  # what a label for a template not seen yet names
        if known is not None:  # the text that matched (a crafted id collision: not the other template of its id)
            template, forced = known, False
        elif args.force:
            template, forced = tpl, True
        else:
            print(f"error: unknown template {tpl!r} ({template_id(tpl)}): not in the catalog (topic "
                  f"{settings.judge.templates_topic!r}), so rationad has not seen it; nothing written. Check it with "
                  "rationad templates, or pass --force to label it before it is seen", file=sys.stderr)
            return 2
    label = labels.Label(template=template, verdict=args.verdict, reason=args.reason.strip(), by=args.by.strip(),
                         at=time.time(), forced=forced)
    await labels.write_label(settings.kafka, topic, label, replication_factor=settings.repartition.replication_factor)
    # The template comes from log lines (masking keeps terminal escapes): printed escaped, as ``rationad tail`` does.
    print(f"labelled {label.id} {label.verdict}{' (forced: not seen yet)' if forced else ''} by {safe(label.by)}: "
          f"{safe(label.template)}")
    return 0


def _not_template_level(settings: Settings) -> str | None:
    """Why labels and the template catalog mean nothing under ``settings`` (None at template level): a daemon judging
    whole sessions reads no label and writes no catalog (a label written there was confirmed, and never applied)."""
    if settings.judge_level() == "template":
        return None
    return (f"judge.level is {settings.judge_level()!r} (input.dialect {settings.input.dialect!r}): labels and the "
            "template catalog apply only to template-level judging; set judge.level = \"template\" to use them")


def cmd_label(args: argparse.Namespace) -> int:
    problem = None
    if args.clear:
        if args.verdict is not None or args.force:
            problem = "--clear takes no verdict and no --force"
    elif args.verdict is None:
        problem = "a verdict is needed: normal or anomalous (or --clear to remove the label)"
    elif not (args.reason or "").strip():
        problem = "--reason is needed: it becomes the rationale of the template's verdicts and a training row"
    elif len(args.reason.strip()) > labels.REASON_MAX_CHARS:
        problem = f"--reason is {len(args.reason.strip())} characters; at most {labels.REASON_MAX_CHARS}"
    if not args.clear and not (args.by or "").strip():
        problem = problem or "--by is needed ($USER is not set)"
    elif len((args.by or "").strip()) > labels.BY_MAX_CHARS:
        problem = problem or f"--by is {len(args.by.strip())} characters; at most {labels.BY_MAX_CHARS}"
    if not args.target.strip():
        problem = problem or "the template, template id or log line is empty"
    if problem:
        print(f"error: {problem}; nothing written", file=sys.stderr)
        return 2
    settings = _settings(args.config)
    if not args.clear and (refused := _not_template_level(settings)):
        print(f"error: {refused}; nothing written", file=sys.stderr)
        return 2
    status, problem = _on_broker(settings, _label(settings, args))
    if problem:
        print(f"error: {problem}; no label was confirmed written", file=sys.stderr)
        return 1
    return status


async def _templates(settings: Settings) -> tuple[list, list]:
    from rationad.catalog import read_catalog
    from rationad.labels import read_labels

    return await asyncio.gather(read_catalog(settings.kafka, settings.judge.templates_topic),
                                read_labels(settings.kafka, settings.judge.labels_topic))


def cmd_templates(args: argparse.Namespace) -> int:
    import shutil

    from rationad.catalog import format_table, listing, select
    from rationad.tail import format_event

    settings = _settings(args.config)
    if refused := _not_template_level(settings):
        print(f"error: {refused}", file=sys.stderr)
        return 2
    found, problem = _on_broker(settings, _templates(settings))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    rows = select(listing(*found), verdict=args.verdict, source=args.source)
    if sys.stdout.isatty() and not args.json:
        print(format_table(rows, shutil.get_terminal_size().columns))
    else:
        for row in rows:
            print(format_event(row, colour=False, as_json=True))
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

    sp = sub.add_parser("replay", help="judge a log file offline through the daemon's path (no Kafka)",
                        epilog="exit status: 0 when every session read was judged (a session whose request the model "
                               "refuses is written with an error \"model_rejected: ...\"); 1 when the model stopped "
                               "answering (after the client's retries); 2 for bad options or input, also when the "
                               "input cannot be read on. Whatever was judged before a failure is written and "
                               "summarised.")
    sp.add_argument("path", help="the log file (gzip too), session JSONL (hdfs-sessions) or template CSV (templates)")
    sp.add_argument("--dialect", required=True, choices=("hdfs", "bgl", "generic", "hdfs-sessions", "templates"),
                    help="hdfs, bgl, generic: raw log lines; hdfs-sessions: datasets' session JSONL; templates: a CSV "
                         "with an EventTemplate column")
    sp.add_argument("--format", choices=("text", "json"), default="text",
                    help="raw log lines as text (default), or exported records of a JSON input, one JSON object per "
                         "line, read with the config's input.json_message_field, json_key_field and timestamp_field")
    sp.add_argument("--out", help="write JSON lines here (default: stdout)")
    config_arg(sp)
    sp.add_argument("--labels", help="CSV for scoring: key,label per session (e.g. HDFS anomaly_label.csv), or with "
                                     "fixed windows line,label per 1-based line number")
    sp.add_argument("--level", choices=("session", "template"),
                    help="template: judge each distinct line template once and decide every window from its "
                         "templates; session: one model call per window (default: judge.level, i.e. session for "
                         "hdfs, template for bgl and generic)")
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
    sp.add_argument("--model-path", help="judge with this model folder, in the in-process engine (model.backend "
                    "vllm-engine, without the config's adapter or server)")
    sp.add_argument("--no-cache", action="store_true", help="disable the verdict cache")
    sp.add_argument("--limit", type=_count, help="judge at most this many sessions")
    sp.add_argument("--seed", type=int, default=0, help="hdfs-sessions: rendering seed")
    sp.add_argument("--threshold", type=_unit_threshold,
                    help="verdict anomalous when the score is at least this (0 < t <= 1; default: "
                         "judge.threshold_template for template CSVs and --level template, else "
                         "judge.threshold_session)")
    sp.add_argument("--pr-curve", help="with labels: write every operating point of the PR curve here (CSV)")
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("tail", help="follow the verdict topic and print rationales")
    config_arg(sp)
    sp.add_argument("--verdict", choices=("normal", "anomalous"))
    sp.add_argument("--key", help="regex on the session key")
    sp.add_argument("--from-beginning", action="store_true")
    sp.add_argument("--limit", type=_count, help="exit after this many events")
    sp.add_argument("--idle-exit", type=_secs, help="exit after this many seconds without events shown")
    sp.add_argument("--json", action="store_true", help="print raw JSON events")
    sp.set_defaults(func=cmd_tail)

    sp = sub.add_parser("label", help="record an operator's verdict for a template (applies on every replica)")
    sp.add_argument("target", metavar="TEMPLATE_OR_ID",
                    help="a template id (t-... from rationad templates), a template, or a log line (masked to its "
                         "template)")
    sp.add_argument("verdict", nargs="?", choices=("normal", "anomalous"),
                    help="the verdict the template gets from now on, over the model's")
    sp.add_argument("--reason", help="why (required unless --clear): shown as the rationale of the template's "
                                     f"verdicts and used as the rationale of a training row; at most "
                                     f"{labels.REASON_MAX_CHARS} characters")
    sp.add_argument("--force", action="store_true",
                    help="label a template that is not in the catalog yet (never seen); listed as forced")
    sp.add_argument("--by", default=os.environ.get("USER"), help="who labels (default: $USER)")
    sp.add_argument("--clear", action="store_true", help="remove the template's label: the model's verdict applies")
    config_arg(sp)
    sp.set_defaults(func=cmd_label)

    sp = sub.add_parser("templates", help="list the templates seen, with counts, verdicts and their source")
    sp.add_argument("--verdict", choices=("normal", "anomalous", "pending"),
                    help="only templates with this verdict (pending: not judged yet)")
    sp.add_argument("--source", choices=("model", "operator"), help="only verdicts from the model or from an operator")
    sp.add_argument("--json", action="store_true", help="JSON lines, also on a terminal (the default elsewhere)")
    config_arg(sp)
    sp.set_defaults(func=cmd_templates)

    sp = sub.add_parser("schema", help="print the verdict event JSON Schema")
    sp.add_argument("--config-schema", action="store_true", help="print the configuration's JSON Schema instead")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser("demo", help="local broker + bundled HDFS sample + daemon: shows anomaly events")
    config_arg(sp)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("version", help="print the version")
    sp.set_defaults(func=cmd_version)
    return p


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush of what is left would fail again, with a traceback."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is cmd_run:  # a stop during start-up ends the daemon cleanly (exit 0), not by the signal's default
        stop_signals.hold()
    from rationad.fetch_pacing import pace_empty_fetches

    pace_empty_fetches()  # every command that consumes (run, demo, tail, replay, labels) on any broker
    if args.func not in (cmd_run, cmd_demo, cmd_replay):  # (these set logging up from their configuration)
        from rationad.logs import configure

        configure()  # log lines to stderr, escaped on a console: stdout is the command's output
    try:
        code = args.func(args)
        try:
            sys.stdout.flush()  # here, where a closed pipe is handled, not at the interpreter's exit
        except BrokenPipeError:  # the reader went away after the command's work: its status stands (review)
            _discard_stdout()
        return code
    except BrokenPipeError:
        if args.func is cmd_run:  # the daemon's own output gone is a failure its supervisor must see
            raise
        # the reader of our output went away mid-command (``rationad schema | head``): no traceback, what is left
        # unwritten sent nowhere; exit 1, as the command did not finish (a check or a replay cut short is no pass)
        _discard_stdout()
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from rationad.topics import TopicCheckError

        if not isinstance(exc, TopicCheckError):
            raise
        print(f"error: {exc}", file=sys.stderr)  # not the configuration's fault: the supervisor starts it again
        return 1
