"""One source of deploy settings; a cold start refuses settings its image was not built for.

GIVEN an image built by `sam build` with one set of overrides (IMAGE_DEPLOY_SETTINGS, baked by
infra/Dockerfile) WHEN `sam deploy` ran with another (the stack's DEPLOY_SETTINGS) THEN the first
cold start fails with one ConfigurationError line before any AWS call, so the pre-traffic hook
stops the rollout (tests/functional/test_deploy_hook.py shows the hook's side).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from handler.cold_start import build_worker
from handler.deploy_settings import check_deploy_settings, parse_deploy_settings
from handler.settings import ConfigurationError, WorkerSettings
from local_stack.resources import read_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = read_template()
FUNCTION = TEMPLATE["Resources"]["CatalogueFunction"]
BUILT = "variant=float32 review_threshold= memory=1024 timeout=60 log=INFO"


def settings(**environment: str) -> WorkerSettings:
    base = {
        "catalogue_table": "catalogue",
        "model_uri": "/opt/model",
        "aws_lambda_function_memory_size": "1024",
        "log_level": "INFO",
    }
    return WorkerSettings(**{**base, **environment})  # type: ignore[arg-type]


def test_matching_build_and_deploy_settings_pass() -> None:
    check_deploy_settings(settings(image_deploy_settings=BUILT, deploy_settings=BUILT))


def test_outside_a_sam_built_image_nothing_is_checked() -> None:
    check_deploy_settings(settings(deploy_settings=BUILT))


@pytest.mark.parametrize(
    ("deployed", "named"),
    [
        ("variant=int8 review_threshold= memory=1024 timeout=60 log=INFO", "variant"),
        ("variant=float32 review_threshold= memory=2048 timeout=60 log=INFO", "memory"),
        ("variant=float32 review_threshold= memory=1024 timeout=90 log=INFO", "timeout"),
        (
            "variant=float32 review_threshold=0.7 memory=1024 timeout=60 log=INFO",
            "review_threshold",
        ),
    ],
)
def test_build_and_deploy_with_different_overrides_fails_the_cold_start_in_one_line(
    deployed: str, named: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_deploy_settings(settings(image_deploy_settings=BUILT, deploy_settings=deployed))
    message = str(raised.value)
    assert "\n" not in message
    assert f"{named}: built" in message
    assert "samconfig.toml" in message


def test_a_setting_changed_by_hand_in_the_console_is_caught_too() -> None:
    with pytest.raises(ConfigurationError, match="MODEL_VARIANT=int8"):
        check_deploy_settings(
            settings(image_deploy_settings=BUILT, deploy_settings=BUILT, model_variant="int8")
        )


def test_an_image_deployed_by_a_template_without_the_setting_fails() -> None:
    with pytest.raises(ConfigurationError, match="DEPLOY_SETTINGS is not set"):
        check_deploy_settings(settings(image_deploy_settings=BUILT))


def test_the_check_runs_before_any_aws_call_at_cold_start() -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"AWS called ({name}) before the settings were checked")

    mismatched = settings(
        image_deploy_settings=BUILT, deploy_settings=BUILT.replace("float32", "int8")
    )
    with pytest.raises(ConfigurationError, match="variant"):
        build_worker(mismatched, s3_client=NoCalls(), dynamodb_client=NoCalls())


def test_parse_refuses_garbage() -> None:
    assert parse_deploy_settings(BUILT)["review_threshold"] == ""
    with pytest.raises(ConfigurationError):
        parse_deploy_settings("variant")


# --- the template and samconfig.toml: the same text, one source --------------------------------


def test_the_image_and_the_function_get_the_same_settings_text() -> None:
    build_argument = FUNCTION["Metadata"]["DockerBuildArgs"]["DEPLOY_SETTINGS"]
    environment = FUNCTION["Properties"]["Environment"]["Variables"]["DEPLOY_SETTINGS"]
    assert build_argument == environment
    names = parse_deploy_settings(re.sub(r"\$\{[A-Za-z]+\}", "x", build_argument["Fn::Sub"]))
    assert set(names) == {"variant", "review_threshold", "memory", "timeout", "log"}


def test_build_and_deploy_read_one_list_of_overrides_from_samconfig() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    overrides = config["global"]["parameters"]["parameter_overrides"]
    # Not repeated per command: a second list is how build and deploy drift apart.
    for command, section in config.items():
        if command != "global":
            assert "parameter_overrides" not in section.get("parameters", {}), command
    pairs = dict(pair.split("=", 1) for pair in overrides.split())
    parameters = TEMPLATE["Parameters"]
    assert set(pairs) <= set(parameters)
    in_settings = set(
        re.findall(
            r"\$\{([A-Za-z]+)\}",
            FUNCTION["Metadata"]["DockerBuildArgs"]["DEPLOY_SETTINGS"]["Fn::Sub"],
        )
    )
    # Every setting with a non-empty default is stated, and the model version (the image's).
    stated = {name for name in in_settings if parameters[name].get("Default", "") != ""}
    assert stated | {"ModelVersion"} <= set(pairs)
    for name, value in pairs.items():
        if "AllowedValues" in parameters[name]:
            assert value in map(str, parameters[name]["AllowedValues"]), name
