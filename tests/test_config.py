"""trainer.config: shipped configs load; validation errors name the dotted key; overrides."""

import os

import pytest
import yaml

from trainer.config import CONFIG_DIR, ConfigError, TrainConfig, config_from_dict, load_config, shipped_config_path
from trainer.schedules import ConstantAlpha, WSDAlpha

MINIMAL = {"data": {"streams": [{"uri": "/tmp/ds"}]}, "model": {"hf_config": {"model_type": "llama"}}}


def test_shipped_configs_load():
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
    assert {"pd_best", "pd_vanilla", "lm_only"} <= set(names)
    for name in names:
        cfg = load_config(shipped_config_path(name))
        assert isinstance(cfg, TrainConfig)


def test_pd_best_is_the_papers_recipe():
    cfg = load_config("pd_best")  # shipped name works as well as a path
    d = cfg.distill
    assert (d.mode, d.kind, d.tau, d.tau_squared) == ("offline", "forward_kl", 2.0, False)
    alpha = d.alpha_schedule()
    assert isinstance(alpha, WSDAlpha) and alpha.peak == 0.9 and alpha(0.5) == pytest.approx(0.9)
    assert cfg.scheduler.name == "wsd"
    assert cfg.model.hf_config["model_type"] == "llama" and cfg.model.hf_config["vocab_size"] == 49152


def test_vanilla_and_lm_only():
    v = load_config("pd_vanilla")
    assert (v.distill.kind, v.distill.tau, v.scheduler.name) == ("soft_ce", 1.0, "cosine")
    assert v.distill.alpha_schedule() == ConstantAlpha(1.0)
    lm = load_config("lm_only")
    assert lm.distill.mode == "none" and lm.distill.alpha_schedule()(0.5) == 0.0


def test_defaults_fill_missing_keys():
    cfg = config_from_dict(MINIMAL)
    assert cfg.data.batch_size == 8 and cfg.run.loggers == ["console"]
    assert isinstance(cfg.distill.alpha_schedule(), WSDAlpha)  # PD* default
    assert cfg.to_dict()["data"]["streams"][0]["uri"] == "/tmp/ds"


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(
        str(path),
        [
            "distill.tau=0.5",
            "distill.alpha={name: linear, start: 1.0, end: 0.0}",
            "data.streams.0.proportion=0.7",
            "data.streams[1]={uri: s3://b/x, proportion: 0.3}",
            "run.loggers=[console, file, tensorboard]",
            "run.save_folder=s3://bucket/ckpt",
            "model.hf_config.hidden_size=64",
            "data.local_cache=null",
        ],
    )
    assert cfg.distill.tau == 0.5 and cfg.distill.alpha_schedule()(1.0) == 0.0
    assert [s.uri for s in cfg.data.streams] == ["/tmp/ds", "s3://b/x"]
    assert cfg.data.streams[0].proportion == 0.7
    assert cfg.run.loggers == ["console", "file", "tensorboard"]
    assert cfg.model.hf_config == {"model_type": "llama", "hidden_size": 64}
    assert cfg.data.local_cache is None


BAD = [
    # (override, key named in the message)
    ("distill.taux=1", "distill.taux"),
    ("bogus=1", "bogus"),
    ("distill.tau=hot", "distill.tau"),
    ("distill.tau=0", "distill.tau"),
    ("distill.tail=1", "distill.tail"),
    ("distill.kind=kld", "distill.kind"),
    ("distill.mode=live", "distill.teacher"),
    ("distill.teacher=/x", "distill.teacher"),
    ("distill.chunk_size=0", "distill.chunk_size"),
    ("distill.alpha.peak=1.5", "distill.alpha.peak"),
    ("distill.alpha.peek=0.5", "distill.alpha.peek"),
    ("distill.alpha.name=step", "distill.alpha.name"),
    ("distill.mode=none", "distill.alpha"),
    ("data.batch_size=2.5", "data.batch_size"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.shuffle=yes please", "data.shuffle"),
    ("data.streams.0.uri=3", "data.streams[0].uri"),
    ("data.streams.0.colour=red", "data.streams[0].colour"),
    ("data.streams.0={uri: a, proportion: 0.5, repeat: 2}", "data.streams[0].repeat"),
    ("data.streams=[]", "data.streams"),
    ("model.checkpoint=/ckpt", "model.hf_config"),
    ("model.hf_config={hidden_size: 8}", "model.hf_config.model_type"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.lr=-1", "optim.lr"),
    ("scheduler.name=step", "scheduler.name"),
    ("scheduler.t_warmup=10 batches", "scheduler.t_warmup"),
    ("scheduler.name=cosine", "scheduler.t_decay"),  # pd_best's WSD keys do not belong to cosine
    ("scheduler={name: constant, alpha_f: 0.1}", "scheduler.alpha_f"),
    ("run.max_duration=0.5dur", "run.max_duration"),
    ("run.loggers=[console, slack]", "run.loggers[1]"),
    ("run.autoresume=true", "run.save_folder"),
    ("run.precision=fp8", "run.precision"),
    ("run.seed=abc", "run.seed"),
    ("run", "run"),  # not key=value
]


@pytest.mark.parametrize("override,key", BAD)
def test_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("pd_best", [override])
    assert str(err.value).startswith(key), str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(p))
    p.write_text("data: [1, 2]\n")
    with pytest.raises(ConfigError, match="^data: expected a mapping"):
        load_config(str(p))
    p.write_text("data: {streams: [{local: /x}]}\nmodel: {hf_config: {model_type: llama}}\n")
    with pytest.raises(ConfigError, match=r"^data\.streams\[0\]\.uri: required"):
        load_config(str(p))


def test_autoresume_needs_folder_and_name():
    cfg = load_config("pd_best", ["run.autoresume=true", "run.save_folder=/tmp/x", "run.run_name=r1"])
    assert cfg.run.autoresume
    with pytest.raises(ConfigError, match="^run.run_name"):
        load_config("pd_best", ["run.autoresume=true", "run.save_folder=/tmp/x"])


def test_exponent_floats_without_a_dot_are_numbers():
    """YAML 1.1 reads `2e-3` as a string; a float field takes it as the number users meant."""
    cfg = load_config("pd_best", ["optim.lr=2e-3", "distill.tau=1E0"])
    assert cfg.optim.lr == 0.002 and cfg.distill.tau == 1.0
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config("pd_best", ["optim.lr=fast"])


def test_lr_schedule_is_a_tagged_union():
    """Each LR schedule takes its own keys; a section without a name is WSD (as before)."""
    from trainer.config import WSDLR, ConstantLR, CosineLR

    assert isinstance(load_config("pd_vanilla").scheduler, CosineLR)
    wsd = load_config("pd_best", ["scheduler={alpha_f: 0.5}"]).scheduler
    assert isinstance(wsd, WSDLR) and (wsd.alpha_f, wsd.t_decay) == (0.5, "0.1dur")
    cos = load_config("pd_best", ["scheduler={name: cosine, t_warmup: 5ba}"]).scheduler
    assert isinstance(cos, CosineLR) and cos.model_dump() == {"name": "cosine", "t_warmup": "5ba", "alpha_f": 0.0}
    assert isinstance(load_config("pd_best", ["scheduler={name: constant}"]).scheduler, ConstantLR)
    with pytest.raises(ConfigError, match=r"^scheduler\.t_decay: unknown key for name 'cosine'"):
        load_config("pd_best", ["scheduler.name=cosine"])
