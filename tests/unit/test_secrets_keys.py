from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from patchbay.secrets import (
    KEY_FILE_ENV,
    KEYS_ENV,
    InvalidMasterKey,
    LocalKeyProvider,
    MasterKey,
    NoMasterKey,
    format_master_key,
    generate_master_key,
    load_key_provider,
    parse_master_keys,
)
from patchbay.secrets.keys import DEV_KEY_FILE_NAME, development_key_provider

MATERIAL = base64.b64encode(b"k" * 32).decode()


def test_parse_newest_first_with_comments_and_commas() -> None:
    text = f"# rotated 2024\nnew:{MATERIAL}, old:{base64.b64encode(b'o' * 32).decode()}\n\n"
    keys = parse_master_keys(text, source="test")
    assert [k.id for k in keys] == ["new", "old"]
    assert keys[0].material == b"k" * 32
    provider = LocalKeyProvider(keys)
    assert provider.key_ids == ("new", "old")
    assert provider.primary_key_id == "new"


@pytest.mark.parametrize(
    "text",
    [
        "no-colon",
        "k1:not base64!!",
        f"k1:{base64.b64encode(b'short').decode()}",
        f"bad id:{MATERIAL}",
        f":{MATERIAL}",
        f"k1:{MATERIAL},k1:{MATERIAL}",
    ],
)
def test_malformed_keys_raise_without_echoing_material(text: str) -> None:
    with pytest.raises(InvalidMasterKey) as info:
        parse_master_keys(text, source=KEYS_ENV)
    assert MATERIAL not in str(info.value)
    assert KEYS_ENV in str(info.value)


def test_key_material_never_in_repr() -> None:
    key = generate_master_key("k1")
    assert base64.b64encode(key.material).decode() not in repr(key)
    assert key.material.hex() not in repr(key)
    assert "k1" in repr(LocalKeyProvider([key]))
    assert format_master_key(key).startswith("k1:")
    assert len(key.fingerprint) == 16
    assert key.fingerprint != generate_master_key("k1").fingerprint
    with pytest.raises(InvalidMasterKey):
        MasterKey("k1", b"x" * 16)


def test_load_from_env_file_or_nothing(tmp_path: Path) -> None:
    line = format_master_key(generate_master_key("env1"))
    provider = load_key_provider({KEYS_ENV: line})
    assert provider is not None and provider.key_ids == ("env1",)

    key_file = tmp_path / "keys"
    key_file.write_text(f"# comment\n{format_master_key(generate_master_key('file1'))}\n")
    key_file.chmod(0o600)
    provider = load_key_provider({KEY_FILE_ENV: str(key_file)})
    assert provider is not None and provider.key_ids == ("file1",)

    assert load_key_provider({}) is None
    with pytest.raises(InvalidMasterKey):
        load_key_provider({KEYS_ENV: line, KEY_FILE_ENV: str(key_file)})
    with pytest.raises(NoMasterKey):
        load_key_provider({KEY_FILE_ENV: str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(NoMasterKey):
        load_key_provider({KEY_FILE_ENV: str(empty)})


def test_readable_key_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(format_master_key(generate_master_key("k1")))
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, "patchbay.secrets.keys"):
        LocalKeyProvider.from_file(key_file)
    assert "chmod 600" in caplog.text


def test_development_mode_creates_one_private_key_file_and_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    home = tmp_path / "home"
    provider = load_key_provider({}, development_home=home, announce=said.append)
    assert provider is not None
    path = home / DEV_KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(said) == 1 and str(path) in said[0] and "production" in said[0]
    again = load_key_provider({}, development_home=home, announce=said.append)
    assert again is not None and again.key_ids == provider.key_ids
    assert len(said) == 1  # reused silently
    # A configured key wins over development mode.
    configured = load_key_provider(
        {KEYS_ENV: format_master_key(generate_master_key("prod"))}, development_home=home
    )
    assert configured is not None and configured.key_ids == ("prod",)


def test_development_key_creation_races_to_one_key(tmp_path: Path) -> None:
    results: list[tuple[str, ...]] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(tuple(development_key_provider(tmp_path, announce=lambda _: None).key_ids))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert [p.name for p in tmp_path.iterdir()] == [DEV_KEY_FILE_NAME]
    assert os.access(tmp_path / DEV_KEY_FILE_NAME, os.R_OK)
