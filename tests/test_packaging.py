"""The distribution owns its four import packages, and nothing else installed claims them."""

from importlib import metadata

import pytest

PACKAGES = ("configs", "features", "models", "pipelines", "serving")


def _top_levels(dist: metadata.Distribution) -> set[str]:
    names = set()
    text = dist.read_text("top_level.txt")
    if text:
        names.update(line.strip() for line in text.splitlines() if line.strip())
    for file in dist.files or []:
        parts = file.parts
        if parts and not parts[0].endswith((".dist-info", ".egg-info", ".data", "..")):
            first = parts[0]
            names.add(first[:-3] if first.endswith(".py") else first)
    return names


def test_volmargin_provides_the_four_packages():
    mapping = metadata.packages_distributions()
    for name in PACKAGES:
        assert "volmargin" in mapping.get(name, []), f"{name} is not provided by volmargin"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_other_distribution_provides_the_name(name):
    owners = {
        dist.metadata["Name"]
        for dist in metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != "volmargin"
        and name in _top_levels(dist)
    }
    assert owners == set(), f"{name} is also provided by {owners}"


def test_console_command_is_registered():
    eps = metadata.entry_points(group="console_scripts")
    assert any(ep.name == "volmargin" and ep.value == "pipelines.cli:app" for ep in eps)
