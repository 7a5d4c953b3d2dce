"""Every config in conf/ composes against its schema; typos and unknown choices fail at startup."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

import droidspeak.sweep.config  # noqa: F401  (registers the schemas)

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@pytest.mark.parametrize("group", ["pair", "task", "method", "logger", "zoo", "experiment"])
def test_every_option_of_every_group_composes(hydra_conf, group):
    import droidspeak.sweep.profile_job  # noqa: F401  (registers profile_pair.py's schema)

    for option in options(group):
        overrides = [f"{group}={option}"]
        if option == "profile":
            overrides.append("method.path=/tmp/profile.json")
        primary = (
            "profile" if group == "experiment" and option.endswith("_profile") else "evaluate"
        )  # profile_pair.py's
        cfg = compose(config_name=primary, overrides=overrides)
        if group in ("pair", "task", "method", "logger"):
            assert cfg[group].name if group != "logger" else cfg.logger.mode


def test_plans_of_method_configs_parse(hydra_conf):
    from droidspeak.engine.plan import parse_plan

    for option in options("method"):
        extra = ["method.path=/tmp/p.json"] if option == "profile" else []
        cfg = compose(config_name="evaluate", overrides=[f"method={option}", *extra])
        parse_plan(cfg.method.plan)


def test_the_own_task_follows_the_pair(hydra_conf):
    cfg = compose(config_name="evaluate", overrides=["pair=twohop_from_mdqa"])
    assert cfg.task.name == "twohop"


@pytest.mark.parametrize("launcher", ["basic", "local_parallel", "slurm"])
def test_launchers_compose(hydra_conf, launcher):
    cfg = compose(config_name="evaluate", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_


def test_ray_launcher_composes_when_installed(hydra_conf):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    cfg = compose(config_name="evaluate", overrides=["hydra/launcher=ray_cluster"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_


def test_build_zoo_and_figures_configs_compose(hydra_conf):
    assert compose(config_name="build_zoo", overrides=["zoo=mini"]).zoo.name == "mini"
    assert compose(config_name="figures").out_dir == "reports"


def test_a_typo_fails_at_startup(hydra_conf):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose(config_name="evaluate", overrides=["method.plann=full_reuse"])
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose(config_name="evaluate", overrides=["batch_size=many"])


@pytest.mark.parametrize("group", ["pair", "task", "method"])
def test_an_unknown_choice_names_the_available_ones(hydra_conf, group):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose(config_name="evaluate", overrides=[f"{group}=no_such_{group}"])
    assert f"no_such_{group}" in str(err.value)
    assert options(group)[0] in str(err.value)  # Hydra lists the available options


TOP_LEVEL = sorted(p.stem for p in CONF.glob("*.yaml"))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_top_level_config_is_typed_and_refuses_a_typo(hydra_conf, name):
    from droidspeak.sweep.config import SCHEMAS

    assert name in SCHEMAS, f"conf/{name}.yaml has no schema in droidspeak.sweep.config"
    assert f"- {name}_schema" in (CONF / f"{name}.yaml").read_text()
    compose(config_name=name)
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose(config_name=name, overrides=["no_such_key_here=1"])


def test_hydra_stays_in_sweep_and_experiments():
    src = Path(__file__).resolve().parents[1] / "src" / "droidspeak"
    hydra_import = re.compile(r"^\s*(from|import) hydra\b", re.M)
    importing = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if hydra_import.search(p.read_text()) and p.relative_to(src).parts[0] != "sweep"]
    assert not importing, f"Hydra imported outside sweep/: {importing}"
