"""Issue 19 for studies: safe names, retries after a kill, secrets, trial folders per instance.

Every study here runs in-process on the synthetic runner and an SQLite or journal storage.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from slt_probe.cli import main
from slt_probe.files import FolderLock, read_jsonl
from slt_probe.runs import run_spec
from slt_probe.runs.rundir import RunDir
from slt_probe.studies import (
    StorageError,
    StudySpecError,
    join_study,
    load_study_spec,
    open_storage,
    open_study,
    parse_study_spec,
    redact_url,
    run_study,
)
from slt_probe.studies.spec import resolve_model_spec
from slt_probe.studies.storage import HEARTBEAT_ATTR, STORAGE_ENV
from slt_probe.studies.study import _create_or_load
from slt_probe.studies.synthetic import synthetic_run
from slt_probe.studies.trials import instance_id

SYNTH = "slt_probe.studies.synthetic:synthetic_run"
SECRET_URL = "postgresql://user:s3cret@host/db"


def raw_spec(**kw) -> dict:
    raw = {
        "name": "safe",
        "spec": "none.toml",
        "runner": SYNTH,
        "n_trials": 3,
        "fixed": {"train.steps": 500, "train.eval_every": 100},
        "space": {"alpha": {"type": "float", "low": 1.0, "high": 4.0,
                            "target": "model.init_scale"}},
        "objectives": [{"metric": "final_test_acc"}],
        "pruner": {"type": "none"},
        "storage": {"heartbeat_interval": 1, "grace_period": 2},
    }  # fmt: skip
    raw.update(kw)
    return raw


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- defect 2: names


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "..", ".hidden", "a b", "", 7])
def test_unsafe_study_names_are_refused(name, tmp_path):
    with pytest.raises(StudySpecError, match="study spec field 'name'.*letters, digits"):
        parse_study_spec(raw_spec(name=name))
    assert tree(tmp_path) == []


def test_a_study_named_by_its_file_stem_is_checked_too(tmp_path):
    path = tmp_path / "my study.toml"
    path.write_text(
        'spec = "none.toml"\nn_trials = 2\n'
        '[space.alpha]\ntype = "float"\nlow = 1\nhigh = 2\ntarget = "model.init_scale"\n'
        '[[objectives]]\nmetric = "final_test_acc"\n'
    )
    with pytest.raises(StudySpecError, match=r"'name' \(the spec file's stem\).*'my study'"):
        load_study_spec(path)
    (tmp_path / "fine.toml").write_text(path.read_text())
    assert load_study_spec(tmp_path / "fine.toml").name == "fine"


def test_the_cli_refuses_an_unsafe_study_name_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(
        f'name = "../../escape"\nspec = "x.toml"\nrunner = "{SYNTH}"\nn_trials = 1\n'
        '[space.alpha]\ntype = "float"\nlow = 1\nhigh = 2\ntarget = "model.init_scale"\n'
        '[[objectives]]\nmetric = "final_test_acc"\n'
    )
    with pytest.raises(StudySpecError, match="'name'"):
        main(["study", "run", "s.toml"])
    assert tree(tmp_path) == ["s.toml"]


@pytest.mark.parametrize("via", ["path", "link"])
def test_a_run_dir_named_by_the_storage_outside_the_study_is_never_touched(tmp_path, via):
    """A retry inherits its dead trial's ``run_dir`` from the storage: pointing it at another
    folder (here, another study's trial), directly or through a link planted in this study's
    folder, must neither copy nor delete that folder."""
    other = tmp_path / "elsewhere" / "0"
    synthetic_run(overrides={"train.steps": 300}, out_dir=other.parent, name="0")
    before = {p: p.read_bytes() for p in other.iterdir() if p.is_file()}
    spec = parse_study_spec(raw_spec(n_trials=1))
    study = open_study(spec, out_dir=tmp_path / "out")
    named = other
    if via == "link":
        named = tmp_path / "out" / "trials" / study.user_attrs["instance"] / "7"
        named.parent.mkdir(parents=True)
        named.symlink_to(other, target_is_directory=True)
    study.enqueue_trial({"alpha": 2.0}, user_attrs={"run_dir": str(named)})
    storage = study._storage
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    storage.set_trial_system_attr(waiting._trial_id, "failed_trial", 99)
    join_study(spec, out_dir=tmp_path / "out")
    (t,) = optuna.load_study(study_name="safe", storage=storage).get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs["start"] == "new"
    assert {p: p.read_bytes() for p in other.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------- defect 5 + lock: retries


def _dead_trial(spec, out: Path, storage: str, fill) -> tuple[optuna.Study, Path]:
    """Make trial 0 (α = 2) look like one whose worker was SIGKILLed: RUNNING, no heartbeat, its run
    directory in whatever state ``fill(run_dir)`` leaves it; then wait out the grace period."""
    study = open_study(spec, storage=storage, out_dir=out)
    study.enqueue_trial({"alpha": 2.0})
    with warnings.catch_warnings():  # "heartbeats are meant for Study.optimize"
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    trial.suggest_float("alpha", 1.0, 4.0)
    run_dir = (out / "trials" / study.user_attrs["instance"] / "0").resolve()
    trial.set_user_attr("run_dir", str(run_dir))
    fill(run_dir)
    time.sleep(spec.grace_period + 0.5)
    return study, run_dir


def _only_config(run_dir: Path) -> None:
    """What a kill during the step-0 probe leaves: config.json and nothing else."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text('{"name": "0"}\n')


def _three_rows(run_dir: Path) -> None:
    def stop(step, row):
        if step == 200:
            raise KeyboardInterrupt  # stands in for the kill, after three evaluations

    with pytest.raises(KeyboardInterrupt):
        synthetic_run(overrides={"train.steps": 500, "model.init_scale": 2.0},
                      out_dir=run_dir.parent, name="0", on_eval=stop)  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize("storage_kind", ["journal", "sqlite"])
def test_a_trial_killed_in_its_step0_probe_restarts_cleanly(tmp_path, storage_kind):
    # On SQLite this also covers a trial that never sent a heartbeat: Optuna's RDBStorage alone
    # would never count it as stale and the study would wait for it forever.
    out = tmp_path / "out"
    storage = (
        str(out / "study.journal") if storage_kind == "journal" else f"sqlite:///{tmp_path}/s.db"
    )
    spec = parse_study_spec(raw_spec(n_trials=2))
    study, dead_dir = _dead_trial(spec, out, storage, _only_config)
    join_study(spec, storage=storage, out_dir=out)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "error" not in trials[0].user_attrs
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["start"] == "restarted"
    assert retry.params == trials[0].params
    assert not dead_dir.exists()  # the dead trial's own empty directory, removed
    assert [r["step"] for r in read_jsonl(Path(retry.user_attrs["run_dir"]) / "metrics.jsonl")] == [
        0, 100, 200, 300, 400, 500]  # fmt: skip
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


@pytest.mark.timeout(120)
def test_a_retry_resumes_a_copy_of_its_dead_trials_directory(tmp_path):
    out = tmp_path / "out"
    spec = parse_study_spec(raw_spec(n_trials=1))
    study, dead_dir = _dead_trial(spec, out, str(out / "study.journal"), _three_rows)
    dead_rows = list(read_jsonl(dead_dir / "metrics.jsonl"))
    join_study(spec, out_dir=out)
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert retry.user_attrs["start"] == "resumed"
    new_rows = list(read_jsonl(Path(retry.user_attrs["run_dir"]) / "metrics.jsonl"))
    assert [r["step"] for r in dead_rows] == [0, 100, 200]
    assert new_rows[:3] == dead_rows and [r["step"] for r in new_rows[3:]] == [300, 400, 500]
    assert list(read_jsonl(dead_dir / "metrics.jsonl")) == dead_rows  # the original, untouched


@pytest.mark.timeout(120)
def test_a_retry_supersedes_a_dead_trial_whose_writer_still_holds_its_lock(tmp_path, caplog):
    """A worker declared dead that still runs (a stalled machine) holds its run directory's
    lock: the retry starts from scratch in its own directory and never writes the other."""
    out = tmp_path / "out"
    spec = parse_study_spec(raw_spec(n_trials=1))
    study, dead_dir = _dead_trial(spec, out, str(out / "study.journal"), _three_rows)
    before = {p.name: p.read_bytes() for p in dead_dir.iterdir() if p.is_file()}
    with FolderLock(dead_dir), caplog.at_level(logging.WARNING):
        join_study(spec, out_dir=out)
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert retry.user_attrs["start"] == "superseded"
    assert "starts from scratch" in caplog.text and "is being written by" in caplog.text
    rows = list(read_jsonl(Path(retry.user_attrs["run_dir"]) / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 100, 200, 300, 400, 500]
    after = {p.name: p.read_bytes() for p in dead_dir.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}  # fmt: skip


def test_a_retry_inheriting_an_old_heartbeat_is_not_stale_at_once(tmp_path):
    """A re-queued trial inherits its dead original's last heartbeat; popped from the queue it
    must count from its own start, or the next sweep would fail it before its first beat."""
    storage = open_storage(str(tmp_path / "j.journal"), heartbeat_interval=1, grace_period=5)
    study = optuna.create_study(study_name="hb", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 100)
    assert storage._get_stale_trial_ids(study._study_id) == []


# ---------------------------------------------------------------- defect 7: secrets


def test_redact_url_hides_the_password():
    assert redact_url(SECRET_URL) == "postgresql://user:***@host/db"
    assert redact_url("/runs/studies/x/study.journal") == "/runs/studies/x/study.journal"
    assert "s3cret" not in redact_url("weird+scheme://user:s3cret@[bad")


@pytest.mark.parametrize(
    "url",
    [SECRET_URL, "postgresql://user:s3cret@127.0.0.1:1/db", "postgresql://user:s3cret@h:port/db",
     "redis://user:s3cret@host/0", "mysql://user:s3cret@127.0.0.1:1/db"],
)  # fmt: skip
def test_no_message_of_a_failed_open_shows_the_password(url, caplog):
    with caplog.at_level(logging.DEBUG), pytest.raises((StorageError, ValueError)) as info:
        open_storage(url)
    shown = "".join(traceback.format_exception(info.value))
    assert "user:***@" in shown
    assert "s3cret" not in shown and "s3cret" not in caplog.text


def test_a_direction_clash_names_the_storage_without_its_password(tmp_path):
    spec = parse_study_spec(raw_spec())
    backend = open_storage(str(tmp_path / "j.journal"))
    optuna.create_study(study_name="safe", storage=backend, direction="minimize")
    with pytest.raises(ValueError, match=r"user:\*\*\*@host.*optimises \['minimize'\]") as info:
        _create_or_load(spec, backend, SECRET_URL, 0)
    assert "s3cret" not in str(info.value)


def test_the_storage_url_comes_from_the_environment_and_the_flag_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.toml").write_text(
        f'spec = "x.toml"\nrunner = "{SYNTH}"\nn_trials = 2\n'
        '[fixed]\n"train.steps" = 200\n'
        '[space.alpha]\ntype = "float"\nlow = 1\nhigh = 2\ntarget = "model.init_scale"\n'
        '[[objectives]]\nmetric = "final_test_acc"\n[pruner]\ntype = "none"\n'
    )
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path}/env.db")
    assert main(["study", "run", "e.toml", "--out", "o"]) == 0
    assert not (tmp_path / "o" / "study.journal").exists()
    env_study = optuna.load_study(study_name="e", storage=f"sqlite:///{tmp_path}/env.db")
    assert len(env_study.trials) == 2
    assert main(["study", "run", "e.toml", "--out", "o2", "--storage", "o2/flag.journal"]) == 0
    assert (tmp_path / "o2" / "flag.journal").exists()
    assert len(env_study.trials) == 2  # the environment's storage was not used


def test_the_cli_help_documents_the_environment_variable(capsys):
    with pytest.raises(SystemExit):
        main(["study", "run", "--help"])
    assert STORAGE_ENV in capsys.readouterr().out


# ---------------------------------------------------------------- defect 9: one folder per study


def test_the_same_study_name_against_a_fresh_storage_completes_every_trial(tmp_path, caplog):
    """Issue 19, defect 9: run a study, then the same spec against a fresh SQLite storage with
    the same output folder (a user starting over). Before the fix each trial of the second study
    failed at once with FileExistsError on the first study's trials/<n>."""
    out = tmp_path / "out"
    spec = parse_study_spec(raw_spec(n_trials=3))
    first = run_study(spec, out_dir=out, storage=f"sqlite:///{tmp_path}/first.db")
    with caplog.at_level(logging.WARNING):
        second = run_study(spec, out_dir=out, storage=f"sqlite:///{tmp_path}/second.db")
    assert [t.state for t in second.trials] == [TrialState.COMPLETE] * 3
    a, b = first.user_attrs["instance"], second.user_attrs["instance"]
    assert a != b
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted([a, b])
    for study, instance in ((first, a), (second, b)):
        for t in study.trials:
            assert (
                Path(t.user_attrs["run_dir"])
                == (out / "trials" / instance / str(t.number)).resolve()
            )
    # one clear message at the start, naming the other study's folder
    stale = [r for r in caplog.records if "from other studies of this name" in r.getMessage()]
    assert len(stale) == 1 and a in stale[0].getMessage()


def test_trial_folders_of_the_old_layout_are_left_alone_with_one_message(tmp_path, caplog):
    out = tmp_path / "out"
    legacy = out / "trials" / "0"
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        study = run_study(parse_study_spec(raw_spec(n_trials=2)), out_dir=out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert (legacy / "config.json").read_text() == "{}"
    assert sum("from other studies" in r.getMessage() for r in caplog.records) == 1


def test_an_instance_id_from_the_storage_must_be_a_safe_name(tmp_path):
    spec = parse_study_spec(raw_spec())
    study = open_study(spec, out_dir=tmp_path)
    study.set_user_attr("instance", "../../etc")
    with pytest.raises(ValueError, match="study user attribute 'instance'"):
        open_study(spec, out_dir=tmp_path)


def test_workers_opening_one_study_at_once_share_one_instance_id(tmp_path):
    """Seen in CI under load: every worker checked for the id and wrote its own when missing, so
    a trial ran under an id that a later write replaced. Only the creator writes it now."""
    spec = parse_study_spec(raw_spec())
    url = str(tmp_path / "s.journal")
    gate = threading.Barrier(6)

    def opener(_):
        gate.wait()
        return instance_id(open_study(spec, out_dir=tmp_path, storage=url))

    with ThreadPoolExecutor(6) as pool:
        seen = list(pool.map(opener, range(6)))
    assert (
        len(set(seen)) == 1
        and seen[0]
        == optuna.load_study(study_name="safe", storage=open_storage(url)).user_attrs["instance"]
    )


def test_a_worker_that_loads_a_new_study_waits_for_the_creators_id(tmp_path):
    spec = parse_study_spec(raw_spec())
    backend = open_storage(str(tmp_path / "s.journal"))
    made = optuna.create_study(study_name="safe", storage=backend, direction="maximize")
    late = threading.Timer(0.5, made.set_user_attr, ("instance", "c0ffee"))
    late.start()
    try:
        study = open_study(spec, out_dir=tmp_path, storage=str(tmp_path / "s.journal"))
        seen = instance_id(study)  # read before the timer could fire on its own
    finally:
        late.join()
    assert seen == "c0ffee"


def test_a_study_from_before_instance_ids_gets_one_at_once(tmp_path, caplog):
    spec = parse_study_spec(raw_spec())
    url = str(tmp_path / "s.journal")
    old = optuna.create_study(study_name="safe", storage=open_storage(url), direction="maximize")
    old.set_user_attr("spec", spec.to_dict())
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        study = open_study(spec, out_dir=tmp_path, storage=url)
    assert time.monotonic() - start < 10  # no wait for a creator: the attributes show it is old
    assert len(instance_id(study)) == 12
    assert "has no instance id; recording one" in caplog.text


# ---------------------------------------------------------------- the real runner


DLN_FIXED = {
    "train.steps": 200, "train.eval_every": 20, "train.checkpoint_every": 50,
    "train.batch_size": 50, "train.threads": 1, "data.n_train": 500, "data.n_test": 100,
    "probe.enabled": False,
}  # fmt: skip


@pytest.mark.timeout(300)
def test_a_retried_training_run_resumes_from_a_copy_of_its_checkpoints(tmp_path):
    """``run_spec`` as the runner: a trial killed after its step-100 checkpoint is retried in its
    own directory from a copy of the dead one, and ends with the rows of an uninterrupted run."""
    out = tmp_path / "out"
    spec = parse_study_spec(
        raw_spec(
            spec="dln.toml",
            runner="slt_probe.runs:run_spec",
            n_trials=1,
            fixed=DLN_FIXED,
            objectives=[{"metric": "final_test_loss"}],
        )  # fmt: skip
    )
    overrides = {**DLN_FIXED, "model.init_scale": 2.0}

    def killed_after_step_100(run_dir: Path) -> None:
        def stop(step, row):
            if step == 120:
                raise KeyboardInterrupt  # stands in for the kill

        with pytest.raises(KeyboardInterrupt):
            run_spec(str(resolve_model_spec(spec)), overrides=overrides, out_dir=run_dir.parent,
                     name="0", on_eval=stop, progress=False, report=False)  # fmt: skip

    study, dead_dir = _dead_trial(spec, out, str(out / "study.journal"), killed_after_step_100)
    assert RunDir(dead_dir).list_checkpoints()
    join_study(spec, out_dir=out)
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert retry.user_attrs["start"] == "resumed" and retry.params == {"alpha": 2.0}
    new_dir = Path(retry.user_attrs["run_dir"])
    run_spec(str(resolve_model_spec(spec)), overrides=overrides, out_dir=tmp_path / "ref",
             name="ref", progress=False, report=False)  # fmt: skip
    rows = list(read_jsonl(new_dir / "metrics.jsonl"))
    ref = list(read_jsonl(tmp_path / "ref" / "ref" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == list(range(0, 201, 20))
    for key in ("train_loss", "test_loss"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], rel=1e-6)
