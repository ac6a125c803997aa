"""The model stage shared by the daemon and ``rationad replay``: session -> prompt -> cache or model -> parsed answer.

Misses are deduplicated (two sessions that look the same to the model cost one call, also while the first call is
still in flight), batched into one ``generate`` call, and a malformed answer is retried before it is recorded as
malformed with its raw text. An answer whose rationale ran past ``max_new_tokens`` is not malformed: it is cut at its
last complete sentence (or clause) and the model writes only the answer after it
(``rationad.answer.close_cut_thought``).

An HDFS session judged by a model trained with ``+walk`` (its manifest's prompt version) gets its analysis started
for it: the walk through the rows and the lifecycle tally, written from the knowledge base (``rationad.facts``); a
template judged by a model trained with ``+rule`` gets its rule sentence; the model writes the rest and the answer.
The verdict cache keys such an entry on that start too.

A rationale with a statement its session refutes (``rationad.faithful.problems``: a count, a quote, an HDFS tally or
receive-start pair that is not the session's) is written again, once, sampled like a malformed answer's retry but
held to the first answer's verdict; the second is served when code refutes fewer of its statements, it cites no more
absent lines and its served decision is the same (an anomalous answer on void evidence is served normal), else the
first (its problems are counted and carried in the event). Either way the verdict and the score are the first answer's:
the thresholds were chosen on those, and a rewrite changes what the event explains, never what it decides. The 0.3.2
model wrote "3 receive starts but 2 completions" under a tally of 3 received on a few unseen HDFS orders; a sampled
second try seldom repeats it.

Each judgement carries the model's ``score`` (P(anomalous) at the answer word, ``rationad.answer.answer_score``) of
the completion it kept; the verdict cache stores it beside the completion, so a cache hit has the score of the call
that made the entry. The threshold that turns a score into the event's verdict is applied where the output is made
(``Judgement.verdict_at``; ``judge.threshold_session`` / ``threshold_template``), not here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import structlog

from rationad.answer import (CUT_MARK, ParsedAnswer, close_cut_thought, parse_completion, ranked_score,
                             served_verdict)
from rationad.cache import VerdictCache
from rationad.config import ConfigError, ModelConfig
from rationad.events import ModelInfo
from rationad.facts import evidence, rule_evidence
from rationad.faithful import checked, problems, unsupported, window_start
from rationad.hdfs_kb import hdfs_templates
from rationad.metrics import Metrics
from rationad.model.base import Completion, ModelClient, ModelError, gather_all
from rationad.neighbours import ModelNeighbours, for_model
from rationad.prompt import (PROMPT_RULE, PROMPT_UNFINISHED, PROMPT_VERSION, PROMPT_WALK, VERDICTS, SessionView,
                             answer_regex, answer_words, build_messages, build_view, cache_key, continued_regex,
                             trained_with, view_of)
from rationad.records import LogLine, Session
from rationad.template_rules import template_rules

MALFORMED_RETRY_TEMPERATURE = 0.7
# What the daemon does to an answer before it serves it (regenerating ungrounded citations, closing a cut rationale,
# rewriting a refuted one, ...): part of the durable verdict cache's namespace (``answer_settings``), so that answers
# cached under other rules are not served from the changelog after an upgrade. Bump it when those rules change.
ANSWER_POLICY = 1
# New tokens for the answer after a cut rationale: ``anomalous</answer>`` is 6 of SmolLM2's tokens.
CLOSE_MAX_TOKENS = 12
# A cached completion with its score: "<completion>\x1escore=<float>", the suffix after the answer, so its last
# occurrence is ours (a completion that is cached without a score ends with its answer, never with a number), and a
# reader that does not know the suffix still parses the answer before it. Entries written before scores existed
# have no suffix: their hits have no score (the model's own answer decides).
SCORE_SEP = "\x1escore="

log = structlog.get_logger("rationad")


def answer_settings(constrain_output: bool, max_new_tokens: int, temperature: float) -> str:
    """8 hex digits of what shapes a cached answer besides the prompt: the generation settings and ``ANSWER_POLICY``.
    A hit is served without a model call or the repairs a miss gets, so an entry written under other settings (before
    ``constrain_output`` was turned on: ungrounded citations; a lower ``max_new_tokens``: cut rationales) must not be
    found (review)."""
    return hashlib.sha256(f"{constrain_output}|{max_new_tokens}|{temperature!r}|{ANSWER_POLICY}".encode()
                          ).hexdigest()[:8]


def cache_value(text: str, score: float | None) -> str:
    return text if score is None else f"{text}{SCORE_SEP}{score!r}"


def from_cache(value: str) -> tuple[str, float | None]:
    text, sep, tail = value.rpartition(SCORE_SEP)
    if not sep:
        return value, None
    try:
        score = float(tail)
    except ValueError:
        return value, None
    return (text, score) if 0.0 <= score <= 1.0 else (value, None)


@dataclass(slots=True)
class Judgement:
    session: Session
    view: SessionView
    answer: ParsedAnswer
    cached: bool
    attempts: int
    score: float | None = None  # P(anomalous) at the answer word; None when the model returned no logprobs

    @property
    def ok(self) -> bool:
        return self.answer.ok

    @property
    def served_score(self) -> float | None:
        """The score that ranks this judgement against a threshold (PR curves): the model's, or 0 for an answer served
        normal on void evidence (``answer.unsupported``: no threshold makes it anomalous). Events carry ``score``."""
        return ranked_score(self.score, self.answer.unsupported)

    def verdict_at(self, threshold: float | None) -> str | None:
        """The verdict at ``threshold`` (``anomalous`` when ``score >= threshold``); the model's written answer when
        there is no score; None when the answer is malformed; normal when the answer's own evidence is void
        (``answer.unsupported``)."""
        return served_verdict(self.answer, self.score, threshold)


# The one line of the model stage's probe (``Judge.probe_request``): routine in every dialect.
PROBE_LINE = "rationad probe: service started"


def _spelled_once(url: str | None) -> str:
    """``url`` as one spelling: scheme and host lower-cased, trailing slashes dropped (``http://vllm:8000/`` and
    ``HTTP://VLLM:8000`` gave every event and cache entry another id: replicas so configured, or a restart after a
    re-spelling, emitted the same sessions again under new ids), without its credentials (``user:password@``: a
    password change gave every event another id, and the digest in every event let a reader test password guesses:
    review 2026-12-07)."""
    if not url:
        return ""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2].lower()
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), parts.query, ""))


def model_info(cfg: ModelConfig, client_name: str) -> ModelInfo:
    """Model identity for events, event ids and the verdict cache: the manifest of what is served (the adapter's when
    one is configured: the base's manifest does not name an adapter served on it). Without one, ``unversioned-`` and
    a digest of where the model is served from, so that two such models never share cache entries or event ids."""
    key, folder = ("model.adapter", cfg.adapter) if cfg.adapter is not None else ("model.path", cfg.path)
    manifest: object = {}
    path = Path(folder) / "manifest.json" if folder is not None else None
    if path is not None and path.is_file():
        # one that cannot be read would serve the model another prompt than it was trained on (its prompt version),
        # without its neighbour index, under an unversioned name: refused, naming it
        try:
            manifest = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{key}: {path} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise ConfigError(f"{key}: {path} is not a JSON object")
    assert isinstance(manifest, dict)
    # the prompt it was trained on (``training.prompt_stamp``): what the daemon serves it (``Judge``)
    prompt = str(manifest.get("prompt_version") or PROMPT_VERSION)
    if manifest.get("version"):
        return ModelInfo(name=str(manifest.get("name") or client_name), version=str(manifest["version"]),
                         prompt_version=prompt)
    # a candidate's manifest may name only its prompt: never "unversioned" alone, which two candidates would share
    where = "|".join(str(Path(f).resolve()) for f in (cfg.path, cfg.adapter) if f is not None) \
        or f"{_spelled_once(cfg.server_url)}|{client_name}"
    return ModelInfo(name=client_name, version="unversioned-" + hashlib.sha256(where.encode()).hexdigest()[:12],
                     prompt_version=prompt)


class Judge:
    def __init__(
        self,
        client: ModelClient,
        cfg: ModelConfig,
        source: str,
        *,
        cache: VerdictCache | None = None,
        metrics: Metrics | None = None,
        malformed_retries: int = 1,
        neighbours: ModelNeighbours | None = None,
        say_unfinished: bool | None = None,
        write_walk: bool | None = None,
        write_rule: bool | None = None,
        model: ModelInfo | None = None,
    ) -> None:
        self.client = client
        # Whether an unfinished session's prompt says so (``UNFINISHED_NOTE``), and whether the daemon writes an HDFS
        # rationale's walk and tally, and a template's rule sentence, for the model to continue (``rationad.facts``):
        # each only for a model trained with it. ``model``: the identity the caller already read (``model_info``),
        # else read here.
        if None in (say_unfinished, write_walk, write_rule):
            model = model if model is not None else model_info(cfg, client.name)
        self.say_unfinished = trained_with(model.prompt_version, PROMPT_UNFINISHED) if say_unfinished is None \
            else say_unfinished
        self.write_walk = trained_with(model.prompt_version, PROMPT_WALK) if write_walk is None else write_walk
        self.write_rule = trained_with(model.prompt_version, PROMPT_RULE) if write_rule is None else write_rule
        # The index the model was trained with (its manifest names it), else none: the prompt served is the trained one.
        self.neighbours = neighbours if neighbours is not None else for_model((cfg.adapter, cfg.path))
        template_rules()  # the vocabulary served rationales are checked against: a bad file fails here, naming it
        hdfs_templates()  # the knowledge base HDFS walks are written from and HDFS rationales checked against: likewise
        self.cfg = cfg
        self.source = source
        self.cache = cache
        self.metrics = metrics
        self.malformed_retries = malformed_retries
        self.model_calls = 0
        self._inflight: dict[str, asyncio.Future[tuple[str, float | None, int]]] = {}

    def view(self, session: Session) -> SessionView:
        # a session the model refused is cut harder (``rationad.model_stage.cut_harder``)
        budget = session.extra.get("max_prompt_tokens", self.cfg.max_prompt_tokens)
        if session.extra.get("templated"):  # the template-level task: lines are templates already
            view = build_view(self.source, [line.message for line in session.lines], templated=True,
                              max_prompt_tokens=budget, count_tokens=self.client.count_tokens)
            if self.neighbours is None:
                return view
            # queried with the row as shown (as training.neighbour_index does): train and serve see the same
            return replace(view, neighbours=self.neighbours.query(view.rows[0].template, own=session.lines[0].message))
        return view_of(session, self.source, max_prompt_tokens=budget, count_tokens=self.client.count_tokens,
                       say_unfinished=self.say_unfinished)

    def keep_cached(self, session: Session) -> bool:
        """The verdict cache's entry for ``session`` is in use (``VerdictCache.keep``); whether there was one."""
        if self.cache is None:
            return False
        view = self.view(session)
        return self.cache.keep(cache_key(view, self.start(view)))

    def cached(self, session: Session) -> Judgement | None:
        """``session``'s judgement from the verdict cache alone, never the model's; None when it has no usable one."""
        view = self.view(session)
        hit = self._hit(cache_key(view, self.start(view)), view)
        if hit is None or not hit[2].ok:
            return None
        answer = checked(hit[2], view)
        return Judgement(session, view, answer, cached=True, attempts=0, score=hit[1]) if answer.ok else None

    def _hit(self, key: str, view: SessionView) -> tuple[str, float | None, ParsedAnswer] | None:
        """The verdict cache's entry for ``key``: its completion, score and the completion parsed for ``view``."""
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        text, score = from_cache(hit)
        return text, score, parse_completion(text, view)

    def start(self, view: SessionView) -> str | None:
        """What the model's answer is given to start with (``rationad.facts``): a template's rule sentence, or an HDFS
        session's walk and tally, for a model trained to start with them; else nothing."""
        if view.templated:
            return rule_evidence(view) if self.write_rule else None
        return evidence(view) if self.write_walk else None

    def probe_request(self, templated: bool = False) -> tuple[list[dict[str, str]], str | None]:
        """(conversation, regex) of a request shaped like every real one, for a one-line session (``templated``: a
        template of the template-level task, with its neighbours where the model has them): the system prompt, a
        quoted session, the answer regex, and the start the model is given where it is given one (a continued
        assistant turn: an HDFS walk, a template's rule sentence). The model stage asks it to tell a session whose own
        request fails from a server or a filter refusing every real request (a one-word probe passed where every
        constrained request was refused, and every session was dead-lettered)."""
        line = LogLine(key="probe", message=PROBE_LINE, raw=PROBE_LINE)
        view = self.view(Session(key="probe", lines=[line], close_reason="template" if templated else "gap",
                                 extra={"templated": True} if templated else {}))
        start = self.start(view)
        conversation = [*build_messages(view), *([{"role": "assistant", "content": start}] if start else [])]
        regex = (continued_regex(start) if start else answer_regex(None)) if self.cfg.constrain_output else None
        return conversation, regex

    async def judge_many(self, sessions: Sequence[Session]) -> list[Judgement]:
        """Judge sessions; raises ``ModelError`` when the model cannot be reached (the caller retries)."""
        views = [self.view(s) for s in sessions]
        for session, view in zip(sessions, views, strict=True):
            self._report_injection(session, view)
        keys = [cache_key(v, self.start(v)) for v in views]
        results: list[tuple[str, float | None, int, bool] | Judgement | None] = [None] * len(sessions)
        to_call: dict[str, SessionView] = {}
        waits: dict[int, asyncio.Future[tuple[str, float | None, int]]] = {}
        parsed: dict[int, ParsedAnswer] = {}  # cache hits' answers, parsed once to check them
        for i, key in enumerate(keys):
            hit = self._hit(key, views[i])
            if hit is not None and not hit[2].ok:
                # Only answers that parse are cached; one that does not (recovered from a shared changelog
                # written by another build, or by hand) would be served for ever: forget it, ask the model.
                assert self.cache is not None
                self.cache.delete(key)
                hit = None
            if self.metrics is not None and self.cache is not None:
                self.metrics.cache_requests.labels("hit" if hit is not None else "miss").inc()
            if hit is not None:
                text, score, parsed[i] = hit
                results[i] = (text, score, 0, True)
            elif key in self._inflight:
                waits[i] = self._inflight[key]
            elif key not in to_call:
                to_call[key] = views[i]
        loop = asyncio.get_running_loop()
        own = {key: loop.create_future() for key in to_call}
        self._inflight.update(own)
        try:
            completed = await self._complete(list(to_call.values())) if to_call else []
            for (key, fut), done in zip(own.items(), completed, strict=True):
                fut.set_result(done)
        except BaseException as exc:
            # A cancelled call is this batch's end, not its waiters': they get an error, and ask on their own.
            shared = exc if isinstance(exc, Exception) else ModelError(f"a shared model call ended: {exc!r}")
            for fut in own.values():
                if not fut.done():
                    fut.set_exception(shared)
                    fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            for key in own:
                self._inflight.pop(key, None)
        for i, key in enumerate(keys):
            if results[i] is not None:
                continue
            if key in own:
                text, score, attempts = await own[key]
            else:
                try:
                    text, score, attempts = await waits[i]
                except Exception:
                    # Another batch's call failed, maybe for a batch-mate of its own (a rejected prompt): this
                    # session is not known to be at fault, so it is asked for on its own.
                    [j] = await self.judge_many([sessions[i]])
                    results[i] = j
                    continue
            results[i] = (text, score, attempts, key not in own)
        out = []
        for i, (session, view, key, res) in enumerate(zip(sessions, views, keys, results, strict=True)):
            assert res is not None
            if isinstance(res, Judgement):  # judged on its own above
                out.append(res)
                continue
            text, score, attempts, cached = res
            answer = checked(parsed[i] if i in parsed else parse_completion(text, view), view)
            if self.metrics is not None:
                self.metrics.sessions_judged.inc()
            if answer.ok and self.cache is not None and attempts:
                self.cache.put(key, cache_value(text, score))
            if self.metrics is not None and answer.ungrounded_refs:
                self.metrics.ungrounded_citations.inc(len(answer.ungrounded_refs))
            if self.metrics is not None and answer.problems:
                for p in answer.problems:
                    self.metrics.rationale_problems.labels(p.split(":")[0]).inc()
            out.append(Judgement(session, view, answer, cached=cached, attempts=attempts,
                                 score=score if answer.ok else None))
        if self.metrics is not None and self.cache is not None:
            self.metrics.cache_entries.set(len(self.cache))
        return out

    def _report_injection(self, session: Session, view: SessionView) -> None:
        """Count and log the spans of ``view``'s rows that address the model (the prompt masks them; the withheld
        rows ``W1``, ... are lines with nothing else, not shown at all)."""
        found = {r.ref: list(r.injected) for r in (*view.rows, *view.withheld) if r.injected}
        if not found:
            return
        if self.metrics is not None:
            for families in found.values():
                for family in families:
                    self.metrics.injection_spans.labels(family).inc()
        log.warning("log lines address the model; masked or withheld before it read them", session=session.key,
                    topic=session.topic, partition=session.partition, rows=found)

    async def _complete(self, views: list[SessionView]) -> list[tuple[str, float | None, int]]:
        """One completion per view, malformed answers retried; returns (text, score, attempts) of the completion
        kept.

        With constrained output, an answer citing a line absent from its session is generated again under
        ``answer_regex`` of that session's line ids, which cannot cite such a line. Only those few sessions pay for
        compiling a per-session regex; at temperature 0 the result is what decoding under it from the start gives
        (the greedy path only changes where it took a forbidden token).
        """
        done = await self._generate(views, self.cfg.temperature)
        attempts = [1] * len(views)
        await self._close_cut(views, done)
        for _ in range(self.malformed_retries):
            bad = [i for i, (v, c) in enumerate(zip(views, done, strict=True)) if not parse_completion(c.text, v).ok]
            if not bad:
                break
            retried = await self._generate([views[i] for i in bad], MALFORMED_RETRY_TEMPERATURE, narrow=True)
            await self._close_cut([views[i] for i in bad], retried)
            for i, c in zip(bad, retried, strict=True):
                done[i] = c
                attempts[i] += 1
        if self.cfg.constrain_output:
            loose = [i for i, (v, c) in enumerate(zip(views, done, strict=True))
                     if (a := parse_completion(c.text, v)).ok and a.ungrounded_refs]
            if loose:
                repaired = await self._generate([views[i] for i in loose], self.cfg.temperature, narrow=True)
                await self._close_cut([views[i] for i in loose], repaired)
                for i, c in zip(loose, repaired, strict=True):
                    # The narrowed regex has no length bound: a model that walked past the session's last row can
                    # loop under it until max_new_tokens. Unless that loop could be cut and answered
                    # (``_close_cut``), keep the well-formed answer (flagged ungrounded).
                    if parse_completion(c.text, views[i]).ok:
                        done[i] = c
                    attempts[i] += 1
        if self.malformed_retries:
            await self._rewrite_refuted(views, done, attempts)
        return [(c.text, c.score, n) for c, n in zip(done, attempts, strict=True)]

    async def _rewrite_refuted(self, views: list[SessionView], done: list[Completion], attempts: list[int]) -> None:
        """Write again, in place, the completions of ``done`` whose rationale states something its session refutes
        (sampled at the malformed retry's temperature, narrowed to the session's line ids, held to the first answer's
        verdict): the second is kept, with the first's score, when it parses to that verdict and code refutes fewer of
        its statements (and it cites no more absent lines), else the first.

        A window of a system the knowledge base does not cover is given the first sentence its analyses were trained
        to start with for that verdict (``rationad.faithful.window_start``), where code finds it true: the model wrote
        HDFS phrases about such windows, and wrote them again when sampled again (training/RESULTS.md)."""
        def flaws(v: SessionView, c: Completion) -> tuple[tuple[str, bool], int, int] | None:
            """(what is served: the verdict, and whether it rests on void evidence), refuted statements, absent
            citations."""
            a = parse_completion(c.text, v)
            if not a.ok or a.verdict is None:
                return None
            void = a.verdict == "anomalous" and unsupported(a.rationale, v) is not None
            return (a.verdict, void), len(problems(a.rationale, v)), len(a.ungrounded_refs)

        first = {i: f for i, (v, c) in enumerate(zip(views, done, strict=True))
                 if (f := flaws(v, c)) is not None and f[1]}
        if not first:
            return
        held = [f[0][0] for f in first.values()]
        starts = [window_start(views[i], verdict) for i, verdict in zip(first, held, strict=True)]
        again = await self._generate([views[i] for i in first], MALFORMED_RETRY_TEMPERATURE, narrow=True,
                                     answers=held, starts=starts)
        await self._close_cut([views[i] for i in first], again, answers=held, count=False)
        for i, c in zip(first, again, strict=True):
            attempts[i] += 1
            was, second = first[i], flaws(views[i], c)
            # the same served decision (an anomalous answer on void evidence is served normal: that too must hold)
            kept = second is not None and second[0] == was[0] and second[1] < was[1] and second[2] <= was[2]
            if kept:
                done[i] = replace(c, score=done[i].score)
                if self.metrics is not None and CUT_MARK + "</think>" in c.text:  # cut, and served
                    self.metrics.rationales_cut.inc()
            if self.metrics is not None:
                self.metrics.rationales_rewritten.labels("second" if kept else "first").inc()

    async def _close_cut(self, views: list[SessionView], done: list[Completion], *,
                         answers: list[str] | None = None, count: bool = True) -> None:
        """Answer in place the completions of ``done`` that ran past ``max_new_tokens`` before their answer: the
        rationale is cut at its last complete sentence or clause (``close_cut_thought``; whole when it had closed)
        and the model, given it, writes only the answer (a few tokens, one short request) instead of being asked for
        the whole completion again; with ``answers``, each view's answer held to its own. ``count``: count the cuts
        in ``rationad_rationales_cut_total`` (a rewrite counts only the one it serves)."""
        prefixes = {i: p for i, (v, c) in enumerate(zip(views, done, strict=True))
                    if (p := close_cut_thought(c.text, v)) is not None}
        if not prefixes:
            return
        closed = await self._generate([views[i] for i in prefixes], self.cfg.temperature,
                                      prefixes=list(prefixes.values()),
                                      answers=[answers[i] for i in prefixes] if answers is not None else None)
        for i, c in zip(prefixes, closed, strict=True):
            if not parse_completion(c.text, views[i]).ok:
                continue
            c = replace(c, completion_tokens=c.completion_tokens + done[i].completion_tokens)
            done[i] = c
            # a rationale was cut (not the word)
            if count and self.metrics is not None and CUT_MARK + "</think>" in prefixes[i]:
                self.metrics.rationales_cut.inc()

    async def _generate(self, views: list[SessionView], temperature: float, *, narrow: bool = False,
                        prefixes: list[str] | None = None, answers: list[str] | None = None,
                        starts: list[str | None] | None = None) -> list[Completion]:
        """Completions in ``views`` order, constrained to ``ANSWER_REGEX`` (one compiled regex for every session) or,
        with ``narrow``, to ``answer_regex`` of each session's line ids (one request group per distinct id set).
        An answer given its start (``start``: an HDFS walk and tally, a template's rule sentence) continues it, under
        the same regexes' rest (``continued_regex``). With ``prefixes``, each view's answer continues its prefix
        (``close_cut_thought``, which holds any start) for a few tokens, constrained to ``CLOSE_REGEX``. With
        ``answers``, each view's answer word is held to its own (``normal`` or ``anomalous``; ``answer_words``). With
        ``starts``, a view's start (where not None) is given in place of its ``start``."""
        given = prefixes or [s if s is not None else self.start(v)
                             for v, s in zip(views, starts or [None] * len(views), strict=True)]
        groups: dict[str | None, list[int]] = {}
        for i, v in enumerate(views):
            regex = None
            refs = [r.ref for r in v.rows] if narrow else None
            if self.cfg.constrain_output:
                opened = given[i]
                words = VERDICTS if answers is None else (answers[i],)
                regex = (answer_words(words) if prefixes else continued_regex(opened, refs, words) if opened
                         else answer_regex(refs, words))
            groups.setdefault(regex, []).append(i)

        def messages(i: int) -> list[dict[str, str]]:
            if given[i]:
                return [*build_messages(views[i]), {"role": "assistant", "content": given[i]}]
            return build_messages(views[i])

        start = time.monotonic()
        outcome = "error"
        if self.metrics is not None:
            self.metrics.model_in_flight.inc()
            self.metrics.batch_size.observe(len(views))
        try:
            parts = await gather_all(  # one group failing cancels the others: the caller gives the sessions up
                self.client.generate(
                    [messages(i) for i in idx],
                    max_tokens=CLOSE_MAX_TOKENS if prefixes else self.cfg.max_new_tokens,
                    temperature=temperature,
                    regex=regex,
                )
                for regex, idx in groups.items()
            )
            outcome = "ok"
            self.model_calls += len(views)
            out: list[Completion] = [Completion("", 0, 0)] * len(views)
            for idx, completions in zip(groups.values(), parts, strict=True):
                for i, c in zip(idx, completions, strict=True):
                    out[i] = c
            return out
        finally:
            if self.metrics is not None:
                self.metrics.model_in_flight.dec()
                self.metrics.model_request_duration.labels(outcome).observe(time.monotonic() - start)
