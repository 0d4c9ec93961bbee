"""With --json, an error is one JSON object on stderr with a stable code; the exit status tells a
wrong command line (2) from a failed or refused operation (1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from virtnet.face.cli import ERROR_CODES, error_code, main
from virtnet.errors import (
    Busy,
    HostConflict,
    HostError,
    NotFoundError,
    PortNotFound,
    StorageError,
    VirtnetError,
)


def cli(state: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--state-dir", str(state), *args])


def error_of(result: Result) -> dict[str, Any]:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one object, nothing else
    return json.loads(lines[0])["error"]


def test_not_found_is_a_json_object_with_its_code(tmp_path: Path) -> None:
    result = cli(tmp_path, "net-info", "nosuch", "--json")
    assert result.exit_code == 1
    error = error_of(result)
    assert error["code"] == "not-found"
    assert "nosuch" in error["message"]
    assert result.stdout == ""


def test_without_json_the_error_stays_text(tmp_path: Path) -> None:
    result = cli(tmp_path, "net-info", "nosuch")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stderr.splitlines()[0])


def test_usage_error_with_json_is_status_2(tmp_path: Path) -> None:
    result = cli(tmp_path, "net-list", "--bogus", "--json")
    assert result.exit_code == 2
    error = error_of(result)
    assert error["code"] == "usage"
    assert "--bogus" in error["message"]
    plain = cli(tmp_path, "net-list", "--bogus")
    assert plain.exit_code == 2 and "Usage:" in plain.stderr


def test_invalid_definition_names_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<network><name>x</name><ip address='10.0.0.1' prefix='24'>"
                   "<dhcp><range start='10.9.0.2' end='10.9.0.9'/></dhcp></ip></network>")
    result = cli(tmp_path / "state", "plan", str(bad), "--json")
    assert result.exit_code == 1
    error = error_of(result)
    assert error["code"] == "invalid-definition"
    assert error["source"] == str(bad)
    assert [p["path"] for p in error["problems"]] == ["/network/ip[1]/dhcp/range[1]"]
    assert error["problems"][0]["value"] == "10.9.0.2 - 10.9.0.9"


def test_malformed_xml_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<network><name>x</name>")
    error = error_of(cli(tmp_path / "state", "plan", str(broken), "--json"))
    assert error["code"] == "invalid-xml"
    assert (error["source"], error["line"]) == (str(broken), 1)


@pytest.mark.parametrize(("exc", "code"), [
    (PortNotFound("p"), "port-not-found"),
    (NotFoundError("n"), "not-found"),
    (Busy("b"), "busy"),
    (HostConflict("c"), "host-conflict"),
    (HostError("h"), "host-error"),
    (StorageError("write", "/x", 28), "storage"),
    (VirtnetError("v"), "failed"),
])
def test_codes_follow_the_type_most_specific_first(exc: VirtnetError, code: str) -> None:
    assert error_code(exc) == code


def test_codes_are_unique() -> None:
    codes = [code for _, code in ERROR_CODES]
    assert len(codes) == len(set(codes))
