"""offline_process: stage reuse by manifest, input checks, batch failure isolation (cheap parts)."""

import json
from pathlib import Path

import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception import offline_process as op


def test_stage_reuse_follows_inputs_params_outputs_and_force(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a")
    out = tmp_path / "out"
    calls = []

    def stage(text="x"):
        def fn():
            calls.append(text)
            (out / "result.txt").write_text(src.read_text() + text)
            return {"n": len(calls)}
        return fn

    def run(runner, text="x", params=None):
        return runner.run("s", stage(text), inputs={"src": src}, params=params or {"p": 1},
                          outputs=[out / "result.txt"])

    r = op.StageRunner(out)
    assert run(r) == {"n": 1} and r.status["s"] == "ran"
    r = op.StageRunner(out)
    assert run(r) == {"n": 1} and r.status["s"] == "reused" and len(calls) == 1
    src.write_text("b")                                     # input changed
    r = op.StageRunner(out)
    run(r)
    assert r.status["s"] == "ran" and (out / "result.txt").read_text() == "bx"
    r = op.StageRunner(out)
    run(r, params={"p": 2})                                 # parameter changed
    assert r.status["s"] == "ran" and len(calls) == 3
    (out / "result.txt").write_text("edited by hand")       # output touched
    r = op.StageRunner(out)
    run(r, params={"p": 2})
    assert r.status["s"] == "ran" and (out / "result.txt").read_text() == "bx"
    (out / "result.txt").unlink()                           # output deleted
    r = op.StageRunner(out)
    run(r, params={"p": 2})
    assert r.status["s"] == "ran"
    r = op.StageRunner(out, force=True)                     # --force
    run(r, params={"p": 2})
    assert r.status["s"] == "ran" and len(calls) == 6
    manifest = json.loads((out / op.MANIFEST_DIR / "s.json").read_text())
    assert manifest["params"] == {"p": 2} and list(manifest["outputs"]) == ["result.txt"]


def test_stage_that_writes_nothing_fails(tmp_path):
    r = op.StageRunner(tmp_path)
    with pytest.raises(Sam4dcapError, match="did not write"):
        r.run("s", lambda: None, inputs={}, params={}, outputs=[tmp_path / "missing.trc"])
    assert not r.manifest_path("s").exists()


def test_source_kinds(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.MOV").write_bytes(b"x")
    (tmp_path / "c.txt").write_text("x")
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("x")
    assert op.source_kind(tmp_path / "a.mp4") == "video"
    assert op.source_kind(tmp_path / "b.MOV") == "video"
    assert op.source_kind(bag) == "bag"
    with pytest.raises(Sam4dcapError, match="unknown input type '.txt'"):
        op.source_kind(tmp_path / "c.txt")
    with pytest.raises(Sam4dcapError, match="not found"):
        op.source_kind(tmp_path / "none.mp4")
    assert op.expand_inputs([tmp_path]) == [tmp_path / "a.mp4", tmp_path / "b.MOV", bag]
    (tmp_path / "empty").mkdir()
    with pytest.raises(Sam4dcapError, match="holds no video"):
        op.expand_inputs([tmp_path / "empty"])


def test_trial_folder_names_are_distinct():
    names = op.trial_folder_names([Path("/a/s1/walk.mp4"), Path("/a/s2/walk.mp4"), Path("/a/run.mp4")])
    assert names == ["s1_walk", "s2_walk", "run"]


@pytest.mark.parametrize("kw, message", [
    ({"height_m": None}, "missing subject height: pass --height"),
    ({"height_m": 175.0}, "outside 0.5..2.5 m"),
    ({"height_m": 1.75, "mass_kg": 1.0}, "--mass 1.0 kg"),
    ({"height_m": 1.75, "markerset": "m.xml"}, "--markerset needs --model"),
    ({"height_m": 1.75, "model": "nope.osim"}, "--model file not found"),
    ({"height_m": 1.75, "start_s": 2.0, "end_s": 1.0}, "time window"),
])
def test_options_are_checked(kw, message):
    with pytest.raises(Sam4dcapError, match=message.replace(".", r"\.")):
        op.ProcessOptions(**kw).check()


def test_batch_reports_each_failure_and_keeps_going(tmp_path):
    """Two broken videos: both fail with their own message, the batch itself completes."""
    a = tmp_path / "broken.mp4"
    a.write_bytes(b"\x00" * 1000)
    b = tmp_path / "empty.mp4"
    b.write_bytes(b"")
    results = op.process_batch([a, b], tmp_path / "out", op.ProcessOptions(height_m=1.7, mass_kg=70.0),
                               max_workers=2)
    assert [r.ok for r in results] == [False, False]
    assert "broken.mp4" in results[0].error and "empty" in results[1].error
    summary = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert summary["trials"] == 2 and summary["failed"] == 2 and summary["succeeded"] == 0
    assert [Path(r["out_dir"]).name for r in summary["results"]] == ["broken", "empty"]
