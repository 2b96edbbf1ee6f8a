"""Cold-start check: the stack runs this image with the settings it was built for.

A Lambda version is published only when the image changes (SAM names versions after the image and
the template text, not parameter values), so template.yaml passes every setting that shapes a
version to ``sam build`` as the ``DEPLOY_SETTINGS`` build argument. The image bakes that text into
``IMAGE_DEPLOY_SETTINGS`` (infra/Dockerfile), and the function's environment carries what
``sam deploy`` was given as ``DEPLOY_SETTINGS`` (the same ``!Sub`` text; a test keeps the two
identical). If ``sam build`` and ``sam deploy`` got different overrides, a deploy could update the
stack's settings and publish no new version (``live`` keeps the old ones) or publish one whose
image was built for other settings. Both are caught here, at the first cold start, with one
:class:`~handler.settings.ConfigurationError` line: the pre-traffic hook then fails the deployment
before any traffic moves. The variables the worker actually reads are compared too, so a change
made by hand in the console is caught the same way.

Outside an image built by ``sam build`` (tests, the local stack) ``IMAGE_DEPLOY_SETTINGS`` is unset
and nothing is checked.
"""

from __future__ import annotations

from typing import Final

from handler.settings import ConfigurationError, WorkerSettings

# The setting name in DEPLOY_SETTINGS -> the worker's value it must agree with (None: no variable
# of its own; the function's timeout is not visible in the environment).
_SETTING_FIELDS: Final[dict[str, str | None]] = {
    "variant": "model_variant",
    "review_threshold": "review_threshold",
    "memory": "aws_lambda_function_memory_size",
    "timeout": None,
    "log": "log_level",
}


def parse_deploy_settings(text: str) -> dict[str, str]:
    """``"variant=int8 review_threshold= memory=1024"`` -> ``{"variant": "int8", ...}``."""
    settings: dict[str, str] = {}
    for part in text.split():
        name, separator, value = part.partition("=")
        if not separator or not name:
            raise ConfigurationError(f"DEPLOY_SETTINGS: cannot read {part!r} in {text!r}")
        settings[name] = value
    return settings


def _differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    return sorted(name for name in left.keys() | right.keys() if left.get(name) != right.get(name))


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


def _same_number(left: str, right: str) -> bool:
    try:
        return float(left) == float(right)
    except ValueError:
        return left == right


def check_deploy_settings(settings: WorkerSettings) -> None:
    """Raise :class:`ConfigurationError` when image, stack and environment disagree."""
    if settings.image_deploy_settings is None:
        return
    built = parse_deploy_settings(settings.image_deploy_settings)
    if settings.deploy_settings is None:
        raise ConfigurationError(
            "DEPLOY_SETTINGS is not set, but the image was built with"
            f" {settings.image_deploy_settings!r}: deploy with the template this image came from"
        )
    deployed = parse_deploy_settings(settings.deploy_settings)
    differing = _differences(built, deployed)
    if differing:
        shown = ", ".join(
            f"{name}: built {built.get(name, '')!r}, deployed {deployed.get(name, '')!r}"
            for name in differing
        )
        raise ConfigurationError(
            f"the image was built for other settings than the stack deploys ({shown}): give"
            " sam build and sam deploy the same parameter overrides (samconfig.toml,"
            " [default.global.parameters]) and build again"
        )
    for name, field in _SETTING_FIELDS.items():
        if field is None or name not in deployed:
            continue
        actual = _as_text(getattr(settings, field))
        if not _same_number(actual, deployed[name]):
            raise ConfigurationError(
                f"{field.upper()}={actual or '(unset)'} but this version was deployed with"
                f" {name}={deployed[name] or '(empty)'}: the function's configuration was"
                " changed outside the stack; deploy again"
            )
