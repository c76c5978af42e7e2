"""targets/offline.py: a bundle packed here installs with the standard library alone and imports from
where it was unpacked; a damaged upload or another Python is a one-line error. (The real bundle, TVM with
its wheels for the GPU machine's Python, is packed by ``make offline-bundle``: a download, never a test.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from targets import offline

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """typing_extensions stands in for apache-tvm: one small installed distribution, quick to compress."""
    out = tmp_path_factory.mktemp("pack") / "bundle"
    offline.pack(out, HERE, part_mib=0.01, preset=0, distribution="typing_extensions", wheels=[])
    return out


def test_a_bundle_installs_and_imports_from_where_it_was_unpacked(bundle, tmp_path) -> None:
    assert offline.main(["install", str(bundle), str(tmp_path / "site")]) == 0
    probe = "import importlib.metadata as m, typing_extensions as t; print(t.__file__, m.version('typing_extensions'))"
    # -S: no site-packages, so the module can only come from the unpacked folder
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(tmp_path / "site")})
    where, version = result.stdout.split()
    assert where.startswith(str(tmp_path / "site")) and version == offline.metadata.version("typing_extensions")
    manifest = json.loads((bundle / offline.MANIFEST).read_text())
    assert manifest["python"] == HERE and len(manifest["parts"]) > 1  # parts of 10 KiB


def test_a_damaged_upload_is_one_line(bundle, tmp_path, capsys) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    first, *rest = sorted(damaged.glob(f"{offline.ARCHIVE}.*"))
    first.write_bytes(first.read_bytes()[:-100])
    assert offline.main(["install", str(damaged), str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err.strip() == (f"offline: error: {damaged}: the parts are not the ones that were "
                                               "packed (an upload cut short?)")
    rest[-1].unlink()
    assert offline.main(["install", str(damaged), str(tmp_path / "site")]) == 2
    assert f"{rest[-1]} missing: upload every part" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


def test_a_bundle_for_another_python_is_refused(bundle, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    manifest = json.loads((other / offline.MANIFEST).read_text())
    (other / offline.MANIFEST).write_text(json.dumps({**manifest, "python": "3.99"}))
    assert offline.main(["install", str(other), str(tmp_path / "site")]) == 2
    assert "packed for Python 3.99" in capsys.readouterr().err
