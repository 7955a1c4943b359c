"""ddrf-batch without Ray: planning (files, folders, manifests), the run report, resuming, and the in-process
engine. The Ray engine's tests (a real local cluster) are in test_batch_ray.py."""
import json
import os
import shutil

import pytest

import ddrf_runtime.batch_engine as engine_mod
from ddrf_runtime.batch import Job, plan_batch
from ddrf_runtime.batch_cli import main as batch_main
from ddrf_runtime.batch_engine import BatchConfig, Engine, choose_engine, remove_temps, worker_placement
from ddrf_runtime.cli import main as run_main
from ddrf_runtime.errors import DeviceError, InputError, OutputError
from ddrf_runtime.raster_io import TEMP_NAME
from ddrf_runtime.scene import SceneConfig
from ddrf_runtime.session import Device

from .scenes import FAST_ARGS, demo_scenes, digest
from .test_runtime_torch_free import _import_with_blocked

BATCH_ARGS = ("--tile", "128", "--overlap", "16", "--steps", "1", "--device", "cpu", "-q")


def rows(report, event="scene"):
    return [r for r in map(json.loads, report.read_text().splitlines()) if r["event"] == event]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return demo_scenes(tmp_path_factory.mktemp("scenes"), 3)


def test_folder_finds_ms_files_with_their_pan(tmp_path, scenes):
    folder = scenes[0][0].parent
    shutil.copy(scenes[0][0], tmp_path / "lonely_ms.tif")  # no PAN next to it: not a scene of the folder
    shutil.copy(scenes[0][0], tmp_path / "notes.tif")
    plan = plan_batch([folder, tmp_path], tmp_path / "out")
    assert plan.jobs == tuple(Job(str(ms), str(pan), str(tmp_path / "out" / f"{ms.stem}_ddrf.tif"))
                              for ms, pan in scenes)
    assert plan.invalid == ()


def test_an_ms_file_without_pan_is_an_invalid_scene(tmp_path, scenes):
    shutil.copy(scenes[0][0], tmp_path / "lonely_ms.tif")
    plan = plan_batch([scenes[1][0], tmp_path / "lonely_ms.tif"], tmp_path)
    assert [j.ms for j in plan.jobs] == [str(scenes[1][0])]
    assert plan.invalid[0][0] == str(tmp_path / "lonely_ms.tif") and "no PAN found" in plan.invalid[0][1]


def test_manifests_csv_and_jsonl(tmp_path, scenes):
    (ms0, pan0), (ms1, pan1) = scenes[:2]
    (tmp_path / "m.csv").write_text(f"ms,pan,output\n{ms0},{pan0},a/x.tif\n{ms1},{pan1},\n,{pan1},\n")
    jsonl = [json.dumps({"ms": str(ms0), "pan": str(pan0), "output": "y.tif"}),  # a second output of s0: fine
             json.dumps({"ms": os.path.relpath(ms1, tmp_path), "pan": os.path.relpath(pan1, tmp_path)}),  # again
             "", "[1, 2]", "{oops"]
    (tmp_path / "m.jsonl").write_text("\n".join(jsonl) + "\n")
    out = tmp_path / "out"
    plan = plan_batch([tmp_path / "m.csv", tmp_path / "m.jsonl"], out)
    assert plan.jobs == (Job(str(ms0), str(pan0), str(out / "a" / "x.tif")),
                         Job(str(ms1), str(pan1), str(out / "s1_ms_ddrf.tif")),
                         Job(str(ms0), str(pan0), str(out / "y.tif")))
    assert plan.invalid == (
        (f"{tmp_path / 'm.csv'}:4", "no ms given (columns: ms, pan[, output])"),
        (f"{tmp_path / 'm.jsonl'}:4", "not a JSON object with ms and pan: [1, 2]"),
        (f"{tmp_path / 'm.jsonl'}:5", "invalid JSON (Expecting property name enclosed in double quotes)"),
    )


def test_manifest_paths_are_relative_to_the_manifest(tmp_path, scenes):
    folder = scenes[0][0].parent
    (folder / "rel.jsonl").write_text(json.dumps({"ms": "s2_ms.tif", "pan": "s2_pan.tif"}) + "\n")
    plan = plan_batch([folder / "rel.jsonl"], tmp_path)
    assert plan.jobs == (Job(str(folder / "s2_ms.tif"), str(folder / "s2_pan.tif"), str(tmp_path / "s2_ms_ddrf.tif")),)


def test_two_scenes_one_output_second_is_invalid(tmp_path, scenes):
    other = tmp_path / "b"
    other.mkdir()
    for p in scenes[0]:
        shutil.copy(p, other / p.name)
    plan = plan_batch([scenes[0][0], other / "s0_ms.tif", scenes[0][0]], tmp_path / "out")  # and s0 twice: once
    assert [j.ms for j in plan.jobs] == [str(scenes[0][0])]
    assert plan.invalid == ((str(other / "s0_ms.tif"), f"its output {tmp_path / 'out' / 's0_ms_ddrf.tif'} is "
                             f"already the output of {scenes[0][0]}; name outputs in a manifest"),)


@pytest.mark.parametrize("content, problem", [(None, "not found"), ("ms;pan\n", "no header line naming"),
                                              (b"\xff\xfe", "cannot read the manifest")])
def test_unusable_scene_argument_is_a_usage_error(tmp_path, content, problem):
    path = tmp_path / "m.csv"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=problem):
        plan_batch([path], tmp_path)


def test_remove_temps_only_of_the_given_outputs(tmp_path):
    names = [".a.tif.ddrf-0123456789ab.tmp", ".a.tif.ddrf-0123456789ab.raw.tmp", ".b.tif.ddrf-0123456789ab.tmp",
             ".a.tif.ddrf-xyz.tmp", "a.tif"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    assert TEMP_NAME.fullmatch(names[1]).group(1) == "a.tif"
    removed = remove_temps([str(tmp_path / "a.tif"), str(tmp_path / "missing" / "c.tif")])
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


@pytest.mark.parametrize("config, to_fuse, ray, expected", [
    (BatchConfig(workers=2), 1, True, Engine.INLINE),  # one scene: Ray's start-up cannot pay
    (BatchConfig(workers=1), 5, True, Engine.INLINE),  # one worker slot: nothing to gain
    (BatchConfig(workers=2), 5, False, Engine.INLINE),  # Ray not installed
    (BatchConfig(workers=2), 5, True, Engine.RAY),
    (BatchConfig(address="auto"), 1, True, Engine.RAY),  # a cluster named: use it
    (BatchConfig(engine=Engine.RAY), 1, True, Engine.RAY),
    (BatchConfig(engine=Engine.RAY), 0, True, Engine.INLINE),  # nothing to fuse: nothing to start
    (BatchConfig(engine=Engine.INLINE, workers=4), 9, True, Engine.INLINE),
])
def test_engine_choice(monkeypatch, config, to_fuse, ray, expected):
    monkeypatch.setattr(engine_mod, "ray_available", lambda: ray)
    assert choose_engine(config, to_fuse) is expected


@pytest.mark.parametrize("device, workers, threads, cluster, expected", [
    ("auto", None, None, {"CPU": 16, "GPU": 2}, (2, {"num_gpus": 1.0, "num_cpus": 1})),  # one per GPU
    ("auto", 8, 2, {"CPU": 16, "GPU": 2}, (8, {"num_gpus": 0.25, "num_cpus": 2})),  # four share each GPU
    ("cpu", None, 4, {"CPU": 16, "GPU": 2}, (4, {"num_cpus": 4})),  # GPUs not wanted: cores / threads
    ("auto", None, None, {"CPU": 2}, (2, {"num_cpus": 1})),
])
def test_worker_placement(device, workers, threads, cluster, expected):
    config = BatchConfig(scene=SceneConfig(device=Device(device), threads=threads), workers=workers)
    scene, resources, n = worker_placement(config, cluster)
    assert (n, resources) == expected and scene.threads == (threads or 1)


def test_cuda_on_a_cluster_without_gpus_is_refused():
    with pytest.raises(DeviceError, match="no GPUs"):
        worker_placement(BatchConfig(scene=SceneConfig(device=Device.CUDA)), {"CPU": 8})


def test_inline_batch_resume_and_failed_scene(tmp_path, scenes, fake_models, capsys, monkeypatch):
    """Without Ray: outputs byte-identical to ddrf-run, a corrupt scene is a failed row (exit 2), stale temporary
    files of a killed run are removed, a rerun fuses only what is missing, and then nothing."""
    model = fake_models["noisy"]
    refs = tmp_path / "refs"
    refs.mkdir()
    for ms, pan in scenes:
        assert run_main([str(ms), "--pan", str(pan), "-o", str(refs / f"{ms.stem}_ddrf.tif"), "--model", model,
                         *BATCH_ARGS]) == 0
    bad = tmp_path / "bad_ms.tif"
    bad.write_bytes(scenes[0][0].read_bytes()[:600])  # a truncated GeoTIFF, its PAN intact
    shutil.copy(scenes[0][1], tmp_path / "bad_pan.tif")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(refs / "s1_ms_ddrf.tif", out)  # done before the "crash"
    stale = [out / ".s2_ms_ddrf.tif.ddrf-0123456789ab.raw.tmp", out / ".s2_ms_ddrf.tif.ddrf-0123456789ab.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    argv = [str(scenes[0][0].parent), str(bad), "-o", str(out), "--model", model, "--engine", "auto", *BATCH_ARGS]
    monkeypatch.setattr(engine_mod, "ray_available", lambda: False)  # as on a box without the cluster extra
    assert batch_main(argv) == 2
    assert batch_main(argv) == 2  # the bad scene fails again; nothing else is done
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"failed: {bad}: ") and len(err) == 2
    assert sorted(p.name for p in out.iterdir()) == ["ddrf-batch.jsonl", "s0_ms_ddrf.tif", "s1_ms_ddrf.tif",
                                                     "s2_ms_ddrf.tif"]
    for name in ("s0_ms_ddrf.tif", "s1_ms_ddrf.tif", "s2_ms_ddrf.tif"):
        assert digest(out / name) == digest(refs / name)
    report = out / "ddrf-batch.jsonl"
    first, second = (rows(report, "start")[i]["run"] for i in (0, 1))
    by_run = {run: {(r["scene"], r["status"]) for r in rows(report) if r["run"] == run} for run in (first, second)}
    ms = [str(m) for m, _ in scenes]
    assert by_run[first] == {(ms[0], "done"), (ms[1], "skipped"), (ms[2], "done"), (str(bad), "failed")}
    assert by_run[second] == {(ms[0], "skipped"), (ms[1], "skipped"), (ms[2], "skipped"), (str(bad), "failed")}
    start = rows(report, "start")[0]
    assert (start["engine"], start["workers"], start["to_fuse"]) == ("inline", 1, 3)
    assert start["startup_s"] >= 0
    assert [r["outcome"] for r in rows(report, "end")] == ["complete", "complete"]
    failed = next(r for r in rows(report) if r["status"] == "failed")
    assert "truncated or corrupt" in failed["error"] or "not a readable raster" in failed["error"]
    assert "\n" not in failed["error"]


def test_a_second_batch_on_the_same_report_is_refused(tmp_path, scenes):
    from ddrf_runtime.batch import RunReport
    first = RunReport(tmp_path / "r.jsonl")
    try:
        with pytest.raises(OutputError, match="another ddrf-batch is running"):
            RunReport(tmp_path / "r.jsonl")
    finally:
        first.close()
    RunReport(tmp_path / "r.jsonl").close()  # free again


def test_ctrl_c_mid_row_waits_for_the_row_and_its_bookkeeping(tmp_path):
    """Ctrl-C landing while a scene row is written (here: while it is serialised) is raised only once the row is
    in the file and counted, so the end of an interrupted run never reports that scene a second time."""
    import json
    import signal

    from ddrf_runtime.batch import RunReport

    class CtrlCWhenSerialised:
        def __str__(self) -> str:
            signal.raise_signal(signal.SIGINT)
            return "x"

    report = RunReport(tmp_path / "r.jsonl")
    try:
        with pytest.raises(KeyboardInterrupt):
            report.write("scene", output="a_ddrf.tif", status="done", note=CtrlCWhenSerialised())
    finally:
        report.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["output"], r["status"]) for r in rows] == [("a_ddrf.tif", "done")]
    assert report.outputs == {"a_ddrf.tif"} and report.counts == {"done": 1}


def test_batch_modules_import_without_ray():
    res = _import_with_blocked(("ray", "torch"), ["ddrf_runtime.batch", "ddrf_runtime.batch_engine",
                                                  "ddrf_runtime.batch_cli"])
    assert res.returncode == 0, res.stderr


def test_options_are_checked(tmp_path, scenes, capsys):
    with pytest.raises(SystemExit) as e:
        batch_main([str(scenes[0][0]), "-o", str(tmp_path), "--workers", "0"])
    assert e.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err
    assert batch_main([str(tmp_path / "nope.tif"), "-o", str(tmp_path), *FAST_ARGS]) == 2
    assert capsys.readouterr().err.strip() == f"ddrf-batch: error: {tmp_path / 'nope.tif'}: not found (a SCENE is an " \
                                              "MS file, a folder or a .csv/.jsonl manifest)"
