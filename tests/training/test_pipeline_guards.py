"""What the pipeline refuses rather than doing silently (issue 16; review, 2026-12-07): a finished GRPO trained again
under a changed config, a later stage training or judging an unfinished adapter, and an adapter shipped with a
neighbour setting other than the one it was trained with. The run folder is fabricated (no model loads): the
training and judging calls are replaced, and a test fails if one is reached that should not be."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rationad.neighbours import INDEX_FILE, Known, NeighbourIndex, NeighbourIndexError, for_model
from rationad.prompt import build_messages, build_view, user_message


class Reached(RuntimeError):
    """A training or judging call the test expected to be refused before."""


def _index() -> NeighbourIndex:
    return NeighbourIndex([Known("node {*} link error", "anomalous", "a link failed", "bgl"),
                           Known("node {*} link ok", "normal", "routine", "bgl"),
                           Known("node {*} link retry", "normal", "routine", "bgl")])


def _rows(k: int) -> list[dict]:
    rows = []
    for i, (t, label) in enumerate([("link error on node {*}", "anomalous"), ("link ok on node {*}", "normal")] * 3):
        view = build_view("bgl", [f"{t} x{i}"], templated=True)
        if k:
            view = replace(view, neighbours=_index().neighbours(view.rows[0].template, k))
        rows.append({"prompt": build_messages(view), "completion": [{"role": "assistant", "content": "x"}],
                     "label": label, "task": "bgl", "reference": "", "session": user_message(view), "n_refs": 1})
    return rows


class Run:
    """A fabricated run folder: a base, training rows (with ``k`` neighbours), an SFT adapter, configs."""

    def __init__(self, root: Path, k: int = 0) -> None:
        self.root, self.base, self.out = root, root / "base", root / "out"
        self.base.mkdir()
        (self.base / "config.json").write_text('{"model_type": "llama"}')
        (self.base / "model.safetensors").write_bytes(b"w")
        (self.out / "data").mkdir(parents=True)
        self.rows = _rows(k)
        (self.out / "data" / "sft_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        (self.out / "data" / "data_report.json").write_text('{"data_hash": "x"}')
        if k:
            _index().save(self.out / "data" / INDEX_FILE)
        self.adapter("sft")

    def adapter(self, stage: str, weights: bytes = b"adapter") -> Path:
        folder = self.out / stage / "adapter"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(stage.encode() + weights)
        (folder / "adapter_config.json").write_text("{}")
        return folder

    def config(self, k: int = 0, grpo: str = "steps = 2") -> Path:
        f = self.root / f"k{k}-{abs(hash(grpo))}.toml"
        f.write_text(f'name = "x"\nversion = "0.1"\nout = "{self.out}"\n[base]\npath = "{self.base}"\n'
                     f'[data]\nneighbours = {k}\n[grpo]\n{grpo}\n')
        return f

    def finished_grpo(self, cfg: Path, *, finished: bool = True) -> None:
        """grpo_metrics.json of a run of ``cfg`` on the SFT adapter now there (its last run ``finished``)."""
        from training import grpo
        from training.config import load, section

        p = section(load(cfg), "grpo", grpo.GRPOParams, cfg)
        identity = grpo.grpo_identity(self.base, self.out / "sft" / "adapter", grpo.prompt_rows(self.rows,
                                                                                              p.prompt_pool), p)
        (self.out / "grpo").mkdir(exist_ok=True)
        (self.out / "grpo" / "grpo_metrics.json").write_text(json.dumps(
            {"runs": [{"finished": finished, "to_step": 2}], "steps": 2, "identity": identity}))


@pytest.fixture
def trained(monkeypatch) -> list:
    """Replaces GRPO training (records its calls) and every judging step (raises ``Reached``)."""
    from training import evaluate, export, gate, grpo

    calls: list = []

    def train_grpo(base, sft, rows, out_dir, p, resume=None, **kw):
        calls.append((p.steps, p.learning_rate, resume))
        return {"runs": [{"finished": True}], "steps": p.steps, "seconds": 0, "reward_by_step": []}

    def reached(*a, **k):
        raise Reached("judged")

    monkeypatch.setattr(grpo, "train_grpo", train_grpo)
    monkeypatch.setattr(evaluate, "eval_inputs", reached)
    monkeypatch.setattr(gate, "exported_size", reached)
    monkeypatch.setattr(export, "export", reached)
    return calls


@pytest.mark.parametrize("change", ["steps", "learning rate", "steps and SFT adapter", "SFT adapter"])
def test_resume_last_refuses_a_finished_grpo_that_trained_something_else(tmp_path, trained, change):
    """Failing before its fix: ``--resume last`` on a GRPO stage whose last run finished under other [grpo]
    settings said "nothing to resume: starting" and trained it again, replacing the adapter. An SFT adapter trained
    further since is the one reason to train it again."""
    import training.pipeline as pl
    from training.sft import ResumeError

    run = Run(tmp_path)
    run.finished_grpo(run.config())
    if "SFT adapter" in change:
        run.adapter("sft", b"trained further")
    grpo = {"steps": "steps = 20", "learning rate": "steps = 2\nlearning_rate = 1e-5",
            "steps and SFT adapter": "steps = 20", "SFT adapter": "steps = 2"}[change]
    argv = ["--config", str(run.config(grpo=grpo)), "--stages", "grpo", "--resume", "last"]
    if change == "SFT adapter":
        pl.main(argv)
        assert trained == [(2, 2e-6, None)]
        return
    what = "params.steps: trained 2, now 20" if "steps" in change else "params.learning_rate"
    with pytest.raises(ResumeError, match=rf"grpo_metrics.json: its adapter was trained on something else than this "
                                          rf"run \({what}"):
        pl.main(argv)
    assert trained == []


@pytest.mark.parametrize("stage, extra", [("grpo", []), ("grpo", ["--resume", "last"]), ("evaluate", []),
                                          ("gate", []), ("export", ["--force-release"])])
def test_no_later_stage_trains_or_judges_an_unfinished_sft_adapter(tmp_path, trained, stage, extra):
    """Failing before its fix: after SFT stopped at its max_minutes, a later stage run by name trained GRPO on (or
    judged, or released) the half-trained adapter: the pipeline stopped only within one chain of stages."""
    import training.pipeline as pl
    from training.sft import ResumeError

    run = Run(tmp_path)
    (run.out / "sft" / "checkpoints" / "checkpoint-40").mkdir(parents=True)
    (run.out / "sft" / "sft_metrics.json").write_text(json.dumps(
        {"runs": [{"finished": False, "to_step": 40}], "steps": 40, "stopped_early": True}))
    with pytest.raises(ResumeError, match=r"sft_metrics.json: its last run stopped unfinished at step 40: continue it "
                                          r"first \(--stages sft --resume last\)"):
        pl.main(["--config", str(run.config()), "--stages", stage, *extra])
    assert trained == []


@pytest.mark.parametrize("stage", ["evaluate", "gate"])
def test_an_unfinished_grpo_adapter_is_not_judged(tmp_path, trained, stage):
    """Failing before its fix, as above: a GRPO adapter whose last run stopped unfinished was judged."""
    import training.pipeline as pl
    from training.sft import ResumeError

    run = Run(tmp_path)
    (run.out / "sft" / "sft_metrics.json").write_text(json.dumps({"runs": [{"finished": True}], "steps": 9}))
    run.adapter("grpo")
    run.finished_grpo(run.config(), finished=False)
    (run.out / "eval").mkdir()
    (run.out / "eval" / "choice.json").write_text('{"released": "grpo"}')
    with pytest.raises(ResumeError, match=r"grpo_metrics.json: its last run stopped unfinished.*--stages grpo "
                                          r"--resume last"):
        pl.main(["--config", str(run.config()), "--stages", stage])


@pytest.mark.parametrize("k", [5, 0])
def test_an_adapter_is_shipped_with_the_neighbours_it_was_trained_with_and_another_k_is_refused(tmp_path, trained,
                                                                                                k):
    """Failing before its fix: GRPO trained with 3 neighbours and skipped as finished was shipped with today's
    [data] neighbours: k = 5 rewrote its manifest, k = 0 removed its index, and the daemon served a prompt the model
    never saw."""
    import training.pipeline as pl
    from training.neighbour_index import ship

    run = Run(tmp_path, k=3)
    for stage in ("sft", "grpo"):
        ship(run.out / "data" / INDEX_FILE, 3, run.adapter(stage))
    run.finished_grpo(run.config(3))
    manifest = (run.out / "grpo" / "adapter" / "manifest.json").read_text()
    with pytest.raises(NeighbourIndexError, match=rf"sft_train.jsonl: its prompts carry 3 labelled neighbours, but "
                                                  rf".* \[data\] neighbours = {k}"):
        pl.main(["--config", str(run.config(k)), "--stages", "grpo", "--resume", "last"])
    assert (run.out / "grpo" / "adapter" / "manifest.json").read_text() == manifest
    assert for_model([run.out / "grpo" / "adapter"]).k == 3
    pl.main(["--config", str(run.config(3)), "--stages", "grpo", "--resume", "last"])  # as trained: skipped, shipped
    assert trained == [] and for_model([run.out / "grpo" / "adapter"]).k == 3


def test_a_data_run_without_neighbours_removes_an_earlier_runs_index(tmp_path, monkeypatch):
    """Failing before its fix: a data run with k = 0 left the k = 3 run's data/neighbours.json behind."""
    import rationad.model.base
    import training.dataset
    import training.pipeline as pl
    from training.config import load
    from training.dataset import Corpus

    run = Run(tmp_path, k=3)
    monkeypatch.setattr(rationad.model.base, "token_counter", lambda base: len)
    monkeypatch.setattr(training.dataset, "load_corpus", lambda dc, count: Corpus(
        {"train": [], "val": [], "test": []}, []))
    cfg = run.config(0)
    pl.stage_data(load(cfg), cfg, run.out, run.base, smoke=False)
    assert not (run.out / "data" / INDEX_FILE).exists()
    assert json.loads((run.out / "data" / "data_report.json").read_text())["sft_rows"] == 0


def test_a_cut_neighbour_index_is_refused_before_sft_trains_and_an_sft_skipped_as_finished_ships_it(tmp_path,
                                                                                                     monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a cut data/neighbours.json was found only after SFT had
    trained (shipping failed), and the next ``--resume last`` skipped SFT as finished without shipping: the adapter
    named no index, and evaluation, the gate and the daemon served it prompts without the neighbours it learned."""
    import training.pipeline as pl
    from training import sft
    from training.config import load, section

    run = Run(tmp_path, k=3)
    index = run.out / "data" / INDEX_FILE
    whole = index.read_bytes()
    index.write_bytes(whole[: len(whole) // 2])

    def train_sft(*a, **k):
        raise Reached("trained")

    monkeypatch.setattr(sft, "train_sft", train_sft)
    cfg = run.config(3)
    with pytest.raises(NeighbourIndexError, match=rf"neighbour index {index}"):
        pl.main(["--config", str(cfg), "--stages", "sft"])
    index.write_bytes(whole)  # repaired; SFT had finished (as after a ship that failed)
    identity = sft.run_identity("sft", run.base, run.rows, section(load(cfg), "sft", sft.SFTParams, cfg),
                                init_adapter=None)
    (run.out / "sft" / "sft_metrics.json").write_text(json.dumps(
        {"runs": [{"finished": True, "to_step": 9}], "steps": 9, "identity": identity}))
    pl.main(["--config", str(cfg), "--stages", "sft", "--resume", "last"])
    assert for_model([run.out / "sft" / "adapter"]).k == 3


def test_a_finished_grpo_is_not_trained_again_when_its_folder_is_named_another_way(tmp_path, trained):
    """Found by review (2026-12-07), failing before its fix: GRPO's identity held the SFT adapter's path, so the same
    run folder passed as another path (a link, an absolute --out) read as an SFT adapter trained further since, and
    ``--resume last`` trained the finished GRPO again."""
    import training.pipeline as pl

    run = Run(tmp_path)
    cfg = run.config()
    run.finished_grpo(cfg)
    (tmp_path / "link").symlink_to(run.out)
    pl.main(["--config", str(cfg), "--out", str(tmp_path / "link"), "--stages", "grpo", "--resume", "last"])
    assert trained == []


def test_a_grpo_run_recorded_with_its_sft_adapter_s_path_is_still_finished_and_resumable(tmp_path, trained):
    """Found by review of the change above, failing on it: identities written before it named the SFT adapter's path
    too, so every GRPO run finished before the upgrade was trained again by ``--resume last``, and an unfinished
    one's checkpoint was refused."""
    import training.pipeline as pl
    from training.sft import RUN_FILE, check_resume

    run = Run(tmp_path)
    cfg = run.config()
    run.finished_grpo(cfg)
    f = run.out / "grpo" / "grpo_metrics.json"
    m = json.loads(f.read_text())
    m["identity"]["sft_adapter"]["path"] = str(run.out / "sft" / "adapter")  # as written before
    f.write_text(json.dumps(m))
    pl.main(["--config", str(cfg), "--stages", "grpo", "--resume", "last"])
    assert trained == []
    checkpoint = run.out / "grpo" / "checkpoints" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / RUN_FILE).write_text(json.dumps({"identity": m["identity"], "runs": [{"to_step": 1}]}))
    now = {k: v for k, v in m["identity"].items()}
    now["sft_adapter"] = {"sha256": m["identity"]["sft_adapter"]["sha256"]}
    assert check_resume(checkpoint, now) == [{"to_step": 1}]


def test_a_base_that_cannot_be_prepared_is_reported_by_its_own_error(monkeypatch):
    """Found by review (2026-12-07), failing before its fix: ``training.prepare_base``'s error naming the GGUF went to
    a captured stderr that was thrown away; the pipeline stopped with a bare CalledProcessError."""
    import subprocess

    import training.pipeline as pl

    said = "prepare_base: error: /x/SmolLM2-135M-Instruct.Q4_1.gguf: not a GGUF file (bad magic bytes)"
    monkeypatch.setattr(pl.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", said + "\n"))
    with pytest.raises(SystemExit, match=r"Q4_1.gguf: not a GGUF file"):
        pl.prepare_base({})


def test_two_bases_named_alike_do_not_share_a_merge(tmp_path):
    """Found by review (2026-12-07), failing before its fix: the merged-model cache knew a base by its folder's name
    only, so a base of the same name elsewhere (or prepared again in place) reused the other base's merge."""
    from training.merge_adapter import merged_key

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"a")
    (adapter / "adapter_config.json").write_text("{}")
    keys = []
    for where, weights in (("a", b"w1"), ("b", b"w2")):
        base = tmp_path / where / "model"
        base.mkdir(parents=True)
        (base / "config.json").write_text('{"model_type": "llama"}')
        (base / "model.safetensors").write_bytes(weights)
        keys.append(merged_key(base, adapter))
    assert keys[0] != keys[1]
    assert merged_key(tmp_path / "a" / "model", adapter) == keys[0]
