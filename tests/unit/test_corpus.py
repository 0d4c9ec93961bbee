"""The corpus fetch derives its source entries from the host's apt sources, never edits them."""

from __future__ import annotations

from pathlib import Path

from tests.kit.corpus import private_apt_options, source_entries

DEB822 = """Types: deb
# a comment line
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_binary_entries_become_source_entries(tmp_path: Path) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEB822)
    text = source_entries(tmp_path / "sources.list", parts)
    stanzas = text.strip().split("\n\n")
    assert stanzas == ["Types: deb-src\nURIs: http://mirror.example/debian\n"
                       "Suites: bookworm bookworm-updates\nComponents: main\n"
                       "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"]


def test_one_line_entries_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://mirror.example/debian bookworm main\n")
    text = source_entries(tmp_path / "sources.list", tmp_path / "missing.d")
    assert text == ("Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
                    "Components: main contrib\nSigned-By: /k.gpg\n")


def test_private_options_point_inside_the_cache(tmp_path: Path, monkeypatch) -> None:
    parts = tmp_path / "host.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEB822)
    monkeypatch.setattr("tests.kit.corpus.APT_SOURCE_PARTS", parts)
    monkeypatch.setattr("tests.kit.corpus.APT_SOURCES", tmp_path / "none")
    base = tmp_path / "apt"
    options = private_apt_options(base)
    values = [options[i + 1] for i in range(0, len(options), 2)]
    assert all(v.startswith("APT::") or str(base) in v for v in values), values
    assert (base / "sources.list.d" / "virtnet-corpus.sources").read_text().startswith(
        "Types: deb-src")
