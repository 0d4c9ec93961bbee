"""Conformance with libvirt 9.0's tests/networkxml2xmlupdatetest.c.

The case table is read, at collection time, from the cached corpus's C test driver itself: the
``struct testInfo`` field order, the DO_TEST_FULL initializer, the DO_TEST* wrapper macros and the
calls in ``mymain`` (with the ``section`` variable they rely on). Nothing of the table is written
down here.

Reading the macros rather than the call sites matters: in libvirt 9.0 DO_TEST_FULL lists
``flags, parentIndex`` in the opposite order to the struct's ``parentIndex, flags``, so every
case really runs with parent index 0 and the written index ends up as format flags (whose only
bit, "inactive", hides runtime connection counts). Each case is run as libvirt runs it.

Stages: the base network must parse (else the case errors), then the update must succeed and the
result must format byte-identical to networkxml2xmlupdateout/*.xml, or the update must be refused
with UpdateError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtnet.errors import UpdateError
from tests.kit.corpus import corpus_root
from virtnet.spec.update import apply_update
from virtnet.spec.xml.format import format_network
from virtnet.spec.xml.parse import parse_network

TEST_DRIVER = "tests/networkxml2xmlupdatetest.c"
VIR_NETWORK_XML_INACTIVE = 1  # libvirt's format flag: leave out runtime state


@dataclass(frozen=True)
class UpdateCase:
    name: str
    network_file: Path
    update_file: Path
    expected_file: Path | None  # None when the update must fail
    command: str
    section: str
    parent_index: int
    format_flags: int
    expect_failure: bool

    @property
    def test_id(self) -> str:
        return self.name + ("-fails" if self.expect_failure else "")


# --- a reader for the C test table -----------------------------------------------------

_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z_]\w*|.)', re.S)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _split_args(text: str) -> list[str]:
    """Split a C argument list at top-level commas (strings and parentheses respected)."""
    args: list[str] = []
    depth = 0
    current = ""
    for match in _TOKEN.finditer(text):
        token = match.group(1)
        if token in "({" and len(token) == 1:
            depth += 1
        elif token in ")}" and len(token) == 1:
            depth -= 1
        if token == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        current += " " + token
    if current.strip():
        args.append(current.strip())
    return args


def _enum_value(name: str) -> str | None:
    """libvirt's enum constant → virsh's spelling (VIR_NETWORK_SECTION_DNS_TXT → dns-txt)."""
    for prefix in ("VIR_NETWORK_UPDATE_COMMAND_", "VIR_NETWORK_SECTION_"):
        if name.startswith(prefix):
            return name[len(prefix):].lower().replace("_", "-")
    return None


def _evaluate(expr: str, env: dict[str, object]) -> object:
    expr = expr.strip()
    if expr in env:
        return env[expr]
    if expr.startswith('"') and expr.endswith('"'):
        return expr[1:-1]
    if re.fullmatch(r"-\s*\d+|\d+", expr):
        return int(expr.replace(" ", ""))
    if expr in ("true", "false"):
        return expr == "true"
    value = _enum_value(expr)
    if value is not None:
        return value
    raise ValueError(f"{TEST_DRIVER}: cannot evaluate {expr!r}")


def _macros(text: str) -> dict[str, tuple[list[str], str]]:
    joined = text.replace("\\\n", " ")
    macros = {}
    for match in re.finditer(r"^\s*#define\s+(\w+)\(([^)]*)\)(.*)$", joined, re.M):
        params = [p.strip() for p in match.group(2).split(",") if p.strip()]
        macros[match.group(1)] = (params, match.group(3))
    return macros


def _call_args(body: str, callee: str) -> list[str]:
    """The arguments of the first call of ``callee`` in ``body``."""
    start = re.search(rf"\b{callee}\s*\(", body)
    if start is None:
        raise ValueError(f"{TEST_DRIVER}: no call of {callee}")
    depth, i = 1, start.end()
    while depth:
        depth += {"(": 1, ")": -1}.get(body[i], 0)
        i += 1
    return _split_args(body[start.end(): i - 1])


def read_update_cases(root: Path) -> list[UpdateCase]:
    text = _strip_comments((root / TEST_DRIVER).read_text())

    struct = re.search(r"struct\s+testInfo\s*\{(.*?)\}\s*;", text, re.S)
    if struct is None:
        raise ValueError(f"{TEST_DRIVER}: struct testInfo not found")
    fields = [re.findall(r"\w+", decl)[-1] for decl in struct.group(1).split(";") if decl.strip()]

    # Which corpus directory each file-name field is looked up in (the helper's printf calls).
    directories = dict(
        (field, directory)
        for directory, field in re.findall(
            r'"%s/(\w+)/%s\.xml"\s*,\s*abs_srcdir\s*,\s*info->(\w+)', text
        )
    )

    macros = _macros(text)
    full_params, full_body = macros["DO_TEST_FULL"]
    initializer = re.search(r"struct\s+testInfo\s+info\s*=\s*\{(.*?)\}", full_body, re.S)
    if initializer is None:
        raise ValueError(f"{TEST_DRIVER}: DO_TEST_FULL's initializer not found")
    field_exprs = dict(zip(fields, _split_args(initializer.group(1)), strict=True))

    main = re.search(r"\bmymain\s*\(void\)\s*\{(.*)\n\}", text, re.S)
    if main is None:
        raise ValueError(f"{TEST_DRIVER}: mymain not found")
    # The macros are defined inside mymain; only its statements are wanted here.
    body = re.sub(r"^\s*#.*$", "", main.group(1).replace("\\\n", " "), flags=re.M)
    statements = re.finditer(r"(\w+)\s*=\s*(\w+)\s*;|\b(DO_TEST\w*)\s*\(", body)

    cases = []
    variables: dict[str, object] = {}
    for statement in statements:
        if statement.group(1):
            variables[statement.group(1)] = _enum_value(statement.group(2)) or statement.group(2)
            continue
        macro = statement.group(3)
        args = _call_args(body[statement.start():], macro)
        values = [_evaluate(a, variables) for a in args]
        # Expand wrapper macros down to DO_TEST_FULL's parameters.
        while macro != "DO_TEST_FULL":
            params, macro_body = macros[macro]
            env = {**variables, **dict(zip(params, values, strict=True))}
            inner = re.search(r"\b(DO_TEST\w*)\s*\(", macro_body)
            assert inner is not None, f"{macro} does not expand to another DO_TEST macro"
            macro = inner.group(1)
            values = [_evaluate(a, env) for a in _call_args(macro_body, macro)]
        env = {**variables, **dict(zip(full_params, values, strict=True))}
        info = {field: _evaluate(expr, env) for field, expr in field_exprs.items()}

        def corpus_file(field: str, info: dict[str, object] = info) -> Path:
            return root / "tests" / directories[field] / f"{info[field]}.xml"

        expect_failure = bool(info["expectFailure"])
        cases.append(
            UpdateCase(
                name=str(info["name"]),
                network_file=corpus_file("netxml"),
                update_file=corpus_file("updatexml"),
                expected_file=None if expect_failure else corpus_file("outxml"),
                command=str(info["command"]),
                section=str(info["section"]),
                parent_index=int(info["parentIndex"]),  # type: ignore[call-overload]
                format_flags=int(info["flags"]),  # type: ignore[call-overload]
                expect_failure=expect_failure,
            )
        )
    return cases


def _collect() -> tuple[list[UpdateCase], str | None]:
    try:
        root = corpus_root(fetch=True)
        assert root is not None
        return read_update_cases(root), None
    except Exception as exc:  # noqa: BLE001 - any failure becomes one failing test below
        return [], f"cannot read libvirt's update test table: {exc}"


CASES, COLLECT_ERROR = _collect()


def test_update_table_was_read() -> None:
    assert COLLECT_ERROR is None, COLLECT_ERROR
    text = _strip_comments((corpus_root() / TEST_DRIVER).read_text())  # type: ignore[operator]
    main_body = text[text.index("mymain"):]
    calls = re.findall(r"\bDO_TEST\w*\s*\(\s*\"", main_body)
    assert len(CASES) == len(calls) > 0
    assert len({case.test_id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.test_id for case in CASES])
def test_update_case(case: UpdateCase) -> None:
    net = parse_network(case.network_file.read_bytes(), source=str(case.network_file))
    snippet = case.update_file.read_text()
    if case.expect_failure:
        with pytest.raises(UpdateError):
            apply_update(net, case.command, case.section, snippet, case.parent_index)
        return
    updated = apply_update(net, case.command, case.section, snippet, case.parent_index)
    assert case.expected_file is not None
    inactive = bool(case.format_flags & VIR_NETWORK_XML_INACTIVE)
    assert format_network(updated, inactive=inactive) == case.expected_file.read_text()
