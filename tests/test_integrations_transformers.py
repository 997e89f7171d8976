"""LLCTrainerCallback drives a real Hugging Face Trainer run on a tiny GPT-2 built from a config
(no download): λ̂ rows at the scheduled steps, in ``state.log_history``, in the TensorBoard and
MLflow integrations' records, and the same weights as the same run without the callback."""

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from integration_checks import read_mlflow_metric, read_tensorboard_scalars  # noqa: E402

from slt_probe.integrations.transformers import (  # noqa: E402
    BatchLoss,
    LLCTrainerCallback,
    batch_loss,
    pack_examples,
)

STEPS = 40
SCHEDULE = [0, 20, 40]
FAST = {"num_chains": 2, "num_draws": 50, "num_burnin": 50, "hessian": False}


def _examples(n=64, length=12, vocab=32):
    g = torch.Generator().manual_seed(0)
    # a learnable rule: each token is the previous one plus one (mod vocab)
    start = torch.randint(vocab, (n, 1), generator=g)
    ids = (start + torch.arange(length)) % vocab
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def _model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def _train(tmp_path, name, callback=None, report_to="none"):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / name),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        logging_steps=10,
        report_to=report_to,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=_model(), args=args, train_dataset=_examples())
    if callback is not None:
        callback.attach(trainer)
    trainer.train()
    return trainer


def test_adapter_measures_the_loss_the_trainer_optimises():
    model = _model().eval()
    examples = _examples()
    x, y, layout = pack_examples(examples)
    assert x.shape == (64, 24) and x.dtype == torch.long
    adapter = BatchLoss(model, layout)
    batch = {k: torch.stack([e[k] for e in examples[:8]]) for k in examples[0]}
    with torch.no_grad():
        want = model(**batch).loss
        got = batch_loss(adapter(x[:8]), y[:8])
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="missing"):
        pack_examples(examples, keys=["input_ids", "attention_mask"])
    with pytest.raises(TypeError, match="float"):
        pack_examples({"input_ids": torch.randn(4, 3)})


def test_hf_trainer_with_callback_logs_llc_and_leaves_no_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything MLflow puts beside the working directory stays here
    uri = "sqlite:///" + str(tmp_path / "mlruns.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf_test")
    # MLflow's process-wide state (an active run, a tracking URI set in code) outlives the
    # tests before this one (the Lightning tests log to MLflow too): start from none of it
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    plain = _train(tmp_path, "plain")
    cb = LLCTrainerCallback(_examples(), schedule=SCHEDULE, **FAST)
    probed = _train(tmp_path, "probed", cb, report_to=["tensorboard", "mlflow"])

    for (name, a), (_, b) in zip(plain.model.named_parameters(), probed.model.named_parameters()):
        assert torch.equal(a, b), name  # dropout masks and shuffles untouched by the probe
    assert probed.model.training

    hist = cb.history
    assert list(hist["step"]) == SCHEDULE
    assert all(math.isfinite(v) for v in hist["llc_mean"])
    assert hist["init_loss"].iloc[-1] < hist["init_loss"].iloc[0]  # it learned

    logged = [r for r in probed.state.log_history if "slt/llc_mean" in r]
    assert [r["step"] for r in logged] == SCHEDULE
    assert [r["slt/llc_mean"] for r in logged] == pytest.approx(list(hist["llc_mean"]))

    tb = read_tensorboard_scalars(tmp_path / "probed")
    assert [s for s, _ in tb["train/slt/llc_mean"]] == SCHEDULE

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hf_test").experiment_id])
    mlf = read_mlflow_metric(uri, run.info.run_id, "slt/llc_mean")
    assert [s for s, _ in mlf] == SCHEDULE
    assert [v for _, v in mlf] == pytest.approx(list(hist["llc_mean"]), rel=1e-6)


def test_trainer_callback_refuses_bad_input_naming_the_field():
    with pytest.raises(TypeError, match="compute_loss"):
        LLCTrainerCallback(_examples(), compute_loss="loss")
    with pytest.raises(ValueError, match="log_to"):
        LLCTrainerCallback(_examples(), schedule=SCHEDULE, log_to="wandb")
    with pytest.raises(ValueError, match="num_draws"):
        LLCTrainerCallback(_examples(), schedule=SCHEDULE, num_draws=-1)
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        pack_examples({"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(3)})


def test_groups_reach_the_probe_only_when_given(monkeypatch):
    import slt_probe.integrations.common as common

    made = []
    monkeypatch.setattr(common, "LLCProbe", lambda *a, **kw: made.append(kw))
    assert "groups" not in common.probe_options((None, None), [0], 1, None, None, {})
    assert made[-1]["schedule"] == [0] and "groups" not in made[-1]
    options = common.probe_options((None, None), [0], 1, None, {"head": ["lm_head"]}, {})
    assert options["groups"] == made[-1]["groups"] == {"head": ["lm_head"]}
