"""Documentation generated from the code stays in sync with it."""

from __future__ import annotations

from pathlib import Path

from casparks.simulation_params import parameter_document

ROOT = Path(__file__).resolve().parents[1]


def test_simulation_parameter_page_is_up_to_date():
    page = (ROOT / "docs" / "simulation_parameters.md").read_text(encoding="utf-8")
    assert page == parameter_document(), (
        "docs/simulation_parameters.md is stale: run "
        "the command at the top of that page"
    )


def test_readme_names_every_cli_command():
    from casparks.cli import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:
        assert f"casparks {command}" in readme, f"README.md does not mention `casparks {command}`"
