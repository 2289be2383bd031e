"""``latent-replay download``: fixture archives served from a local HTTP server on 127.0.0.1.

Nothing here reaches the internet: every source is rebuilt with 127.0.0.1 URLs, and ``_urlopen`` (in
:mod:`latent_replay.data.transfer`, which calls it) is wrapped to fail the test on any other host.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from latent_replay.data import download as dl
from latent_replay.data import transfer
from latent_replay.data.classes import CORE50_CLASS_NAMES
from latent_replay.data.core50 import open_root
from latent_replay.data.download_cli import download as download_cmd
from latent_replay.data.filelists import frame_path
from latent_replay.data.nicv2 import load_scenario
from latent_replay.models.caffemodel import export_caffemodel
from latent_replay.models.mobilenet_v1 import MobileNetV1
from latent_replay.models.weights import PYTORCHCV_FILE, pytorchcv_key_map, read_checkpoint

LABELS = ("\n".join(CORE50_CLASS_NAMES) + "\n").encode()


# ------------------------------------------------------------------------------------------------
# fixture archives
# ------------------------------------------------------------------------------------------------
def _zip(members: dict) -> bytes:
    """A zip from {name or ZipInfo: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _core50_members() -> dict:
    """core50_128x128/s1..s11/o1..o50/ with one 8x8 frame each (a few distinct PNGs)."""
    pngs = [_png(i) for i in range(4)]
    return {f"core50_128x128/{frame_path(s, o, 0)}": pngs[(s + o) % 4] for s in range(1, 12) for o in range(1, 51)}


def _filelists_members(top: str = "") -> dict:
    """NIC_v2_<S>/run0/ with two train batches and a test list, as in batches_filelists_NICv2.zip."""
    members = {}
    for s in (79, 196, 391):
        run = f"{top}NIC_v2_{s}/run0/"
        members[run + "train_batch_00_filelist.txt"] = b"s1/o1/C_01_01_000.png 0\ns1/o6/C_01_06_000.png 5\n"
        members[run + "train_batch_01_filelist.txt"] = b"s2/o2/C_02_02_000.png 1\n"
        members[run + "test_filelist.txt"] = b"s3/o1/C_03_01_000.png 0\ns7/o2/C_07_02_000.png 1\n"
    return members


def _pytorchcv_state_dict() -> dict:
    """A random state dict with pytorchcv ``mobilenet_w1``'s keys and shapes (built from our key map;
    that the map fits the real pytorchcv model is tested in test_weights.py)."""
    ours = MobileNetV1(num_classes=50).state_dict()
    gen = torch.Generator().manual_seed(0)
    sd = {src: torch.rand(ours[dst].shape, generator=gen) for src, dst in pytorchcv_key_map().items()}
    sd.update({"output.weight": torch.rand(1000, 1024, generator=gen), "output.bias": torch.zeros(1000)})
    return sd


@pytest.fixture(scope="session")
def archives() -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save(_pytorchcv_state_dict(), buf)
    return {
        "/core50_labels.txt": LABELS,
        "/core50_128x128.zip": _zip(_core50_members()),
        "/batches_filelists_NICv2.zip": _zip(_filelists_members()),
        f"/{PYTORCHCV_FILE}.zip": _zip({PYTORCHCV_FILE: buf.getvalue()}),
        "/pth": buf.getvalue(),
    }


# ------------------------------------------------------------------------------------------------
# local HTTP server: ranges, cuts, errors
# ------------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.rules[path]`` may say ``status`` (error), ``cut_after`` (close
    the connection after N body bytes, once) or ``ignore_range``. Requests are logged with their Range."""

    def do_GET(self):  # noqa: N802 - http.server naming
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        rule = srv.rules.get(self.path, {})
        data = srv.files.get(self.path)
        if "status" in rule or data is None:
            self.send_error(rule.get("status", 404))
            return
        rng = self.headers.get("Range")
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng and not rule.get("ignore_range") else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = rule.pop("cut_after", None)
        self.wfile.write(body if cut is None else body[:cut])   # HTTP/1.0: the connection closes now

    def log_message(self, *args):
        pass


@pytest.fixture
def server(archives):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.rules, srv.log = dict(archives), {}, []
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail on any non-loopback URL; no proxies, no retry delays."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = transfer._urlopen

    def guarded(request, timeout):
        host = urlsplit(request.full_url).hostname
        assert host == "127.0.0.1", f"test tried to open {request.full_url}"
        return real(request, timeout)

    monkeypatch.setattr(transfer, "_urlopen", guarded)
    monkeypatch.setattr(transfer, "RETRY_DELAY", 0.0)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def local_sources(server) -> dict[str, dl.Source]:
    """The registry with 127.0.0.1 URLs and the fixture archives' checksums."""
    f, S, r = server.files, dl.SOURCES, dataclasses.replace
    return {
        "labels": r(S["labels"], urls=(server.url("/core50_labels.txt"),)),
        "core50": r(S["core50"], urls=(server.url("/core50_128x128.zip"),), md5=_md5(f["/core50_128x128.zip"])),
        "filelists": r(S["filelists"], urls=(server.url("/batches_filelists_NICv2.zip"),),
                       md5=_md5(f["/batches_filelists_NICv2.zip"])),
        "pytorchcv": r(S["pytorchcv"], urls=(server.url(f"/{PYTORCHCV_FILE}.zip"),),
                       sha1=hashlib.sha1(f["/pth"]).hexdigest()),
        "caffe": S["caffe"],
    }


def closed_port_url(path="/x") -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def run(item, root, server=None, sources=None, **kw):
    return dl.download(item, root, sources=sources or local_sources(server), progress=False, **kw)


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
def test_registry_is_complete_and_uses_the_published_checksums():
    s = dl.SOURCES
    assert s["core50"].md5 == "745f3373fed08d69343f1058ee559e13"
    assert s["filelists"].md5 == "460f980a6c85b86b1ec8e7c6067bb7a3"
    assert s["pytorchcv"].sha1 == "7e1d739f0fd4b95c16eef077c5dc0a5bb1da8ad5"
    assert s["labels"].md5 == _md5(LABELS)
    assert all(src.urls for name, src in s.items() if name != "caffe")
    assert set(dl.ITEMS["all"]) == set(s)


def test_download_all_success_then_nothing_to_do(server, tmp_path):
    root = tmp_path / "data"
    outcomes = {o.name: o for o in run("all", root, server)}
    assert [outcomes[n].status for n in ("labels", "core50", "filelists", "pytorchcv")] == ["installed"] * 4
    assert "downloaded" in outcomes["labels"].message
    assert outcomes["caffe"].status == "skipped" and "by hand" in outcomes["caffe"].message
    ds = open_root(root)
    assert ds.class_names() == list(CORE50_CLASS_NAMES)
    sc = load_scenario(root / "batch_filelists", 79, 0, reduced_test=False, images_dir=ds.images_dir)
    assert len(sc) == 2 and len(sc.test) == 2
    assert (root / "weights" / PYTORCHCV_FILE).read_bytes() == server.files["/pth"]
    meta = read_checkpoint(root / "weights" / "mobilenet_v1_imagenet_pytorchcv.pt")["metadata"]
    assert meta["preprocessing"] == "imagenet" and meta["extra"]["source_sha1"] == hashlib.sha1(
        server.files["/pth"]).hexdigest()
    assert sorted(p.name for p in (root / "downloads").iterdir()) == []           # archives removed
    assert not [p for p in root.iterdir() if p.name.startswith(".")]            # no temporary leftovers
    checks = dl.verify(root, sources=local_sources(server))
    assert {c.status for c in checks} <= {"ok", "note"}, checks

    n_requests = len(server.log)
    again = run("all", root, server)
    assert {o.status for o in again} == {"present", "skipped"}
    assert len(server.log) == n_requests                                         # nothing fetched


def test_resume_after_a_connection_cut_mid_file(server, tmp_path):
    data = server.files["/core50_128x128.zip"]
    server.rules["/core50_128x128.zip"] = {"cut_after": len(data) // 2}
    run("core50", tmp_path, server)
    ranges = [rng for path, rng in server.log if path == "/core50_128x128.zip"]
    assert ranges == [None, f"bytes={len(data) // 2}-"]
    assert open_root(tmp_path).images_dir.is_dir()


def test_resume_in_a_later_call_and_server_ignoring_ranges(server, tmp_path):
    data = server.files["/batches_filelists_NICv2.zip"]
    server.rules["/batches_filelists_NICv2.zip"] = {"cut_after": 1000}
    with pytest.raises(dl.DownloadError, match="next call resumes") as err:
        run("filelists", tmp_path, server, retries=1)
    assert "\n" not in str(err.value)
    part = tmp_path / "downloads" / "batches_filelists_NICv2.zip.part"
    assert part.stat().st_size == 1000
    run("filelists", tmp_path, server)
    assert server.log[-1] == ("/batches_filelists_NICv2.zip", "bytes=1000-")
    assert not part.exists() and (tmp_path / "batch_filelists" / "NIC_v2_391" / "run0").is_dir()

    # a server that answers a range request with the whole file (200): start over, not append
    part.write_bytes(b"garbage")
    server.rules["/batches_filelists_NICv2.zip"] = {"ignore_range": True}
    run("filelists", tmp_path, server, force=True, keep_archives=True)
    assert (tmp_path / "downloads" / "batches_filelists_NICv2.zip").read_bytes() == data


def test_a_complete_partial_file_is_not_downloaded_again(server, tmp_path):
    """Interrupted after the last byte, before the rename: the server answers the range request with
    416 and the file's size, which the partial file already has; it is checked and used, not fetched
    from zero. A 416 for a partial file of another size still starts over."""
    data = server.files["/batches_filelists_NICv2.zip"]
    part = tmp_path / "downloads" / "batches_filelists_NICv2.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    run("filelists", tmp_path, server)
    assert [rng for path, rng in server.log if path == "/batches_filelists_NICv2.zip"] == [f"bytes={len(data)}-"]
    assert (tmp_path / "batch_filelists" / "NIC_v2_391" / "run0").is_dir()
    server.log.clear()
    part.write_bytes(data + b"extra")
    run("filelists", tmp_path, server, force=True)
    assert [rng for path, rng in server.log if path == "/batches_filelists_NICv2.zip"] == [
        f"bytes={len(data) + 5}-", None]


def test_checksum_mismatch_sets_the_file_aside(server, tmp_path):
    sources = local_sources(server)
    server.files["/batches_filelists_NICv2.zip"] = _zip({"NIC_v2_79/run0/evil.txt": b"not the official lists"})
    with pytest.raises(dl.DownloadError) as err:
        run("filelists", tmp_path, sources=sources)
    msg = str(err.value)
    assert "md5" in msg and ".corrupt" in msg and "by hand" in msg and "--verify" in msg and "\n" not in msg
    assert (tmp_path / "downloads" / "batches_filelists_NICv2.zip.corrupt").is_file()
    assert not (tmp_path / "downloads" / "batches_filelists_NICv2.zip").exists()
    assert not (tmp_path / "batch_filelists").exists()


def test_hand_placed_archive_is_verified_and_used(server, tmp_path):
    (tmp_path / "batches_filelists_NICv2.zip").write_bytes(server.files["/batches_filelists_NICv2.zip"])
    run("filelists", tmp_path, server)
    assert server.log == [] and (tmp_path / "batch_filelists" / "NIC_v2_79").is_dir()

    (tmp_path / "downloads").mkdir(exist_ok=True)
    (tmp_path / "downloads" / "core50_128x128.zip").write_bytes(b"truncated")
    with pytest.raises(dl.ChecksumError, match="does not match the expected"):
        run("core50", tmp_path, server)
    assert (tmp_path / "downloads" / "core50_128x128.zip.corrupt").is_file()


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize("bad, why", [
    ((zipfile.ZipInfo("/tmp/evil.txt"), b"x"), "absolute path"),
    ((zipfile.ZipInfo("core50_128x128/../../evil.txt"), b"x"), "'..'"),
    (_link("core50_128x128/s1/escape", "../../../outside"), "is a symbolic link"),
    (_link("core50_128x128/s1/abs", "/etc/passwd"), "is a symbolic link"),
    (_link("core50_128x128/s1/o1", "../s2/o1"), "is a symbolic link"),   # s1/o1/*.png would go through it
    # a chain that each textual check passes: b/s -> .., ./c -> b/s/.. (= ..), then c/evil.txt
    (_link("b/s", ".."), "is a symbolic link"),
    (_link("./c", "b/s/.."), "is a symbolic link"),
    (_link("core50_128x128/s1/first", "o1/C_01_01_000.png"), "is a symbolic link"),   # even inside
])
def test_malicious_zip_is_refused_before_anything_is_written(server, tmp_path, bad, why):
    members = _core50_members()
    members[bad[0]] = bad[1]
    evil = _zip(members)
    server.files["/core50_128x128.zip"] = evil
    sources = local_sources(server)
    sources["core50"] = dataclasses.replace(sources["core50"], md5=_md5(evil))
    root = tmp_path / "root"
    with pytest.raises(dl.DownloadError, match="refusing to unpack") as err:
        run("core50", root, sources=sources)
    assert why in str(err.value) and "\n" not in str(err.value)
    assert not (root / "core50_128x128").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("outside"))


def test_link_chain_escape_is_refused(server, tmp_path):
    """The bypass a reviewer built against the earlier textual checks: each link looks harmless, the
    file lands one folder above the unpack target. No link is unpacked at all now."""
    members = _core50_members()
    for info, data in (_link("b/s", ".."), _link("./c", "b/s/.."), (zipfile.ZipInfo("c/evil.txt"), b"x")):
        members[info] = data
    evil = _zip(members)
    server.files["/core50_128x128.zip"] = evil
    sources = local_sources(server)
    sources["core50"] = dataclasses.replace(sources["core50"], md5=_md5(evil))
    with pytest.raises(dl.DownloadError, match="is a symbolic link"):
        run("core50", tmp_path / "root", sources=sources)
    assert not list(tmp_path.rglob("evil.txt"))


def test_mirror_fallback(server, tmp_path):
    server.rules["/broken"] = {"status": 500}
    good = server.url("/batches_filelists_NICv2.zip")
    urls = (closed_port_url(), server.url("/missing"), server.url("/broken"), good)
    sources = local_sources(server)
    sources["filelists"] = dataclasses.replace(sources["filelists"], urls=urls)
    (o,) = run("filelists", tmp_path, sources=sources)
    assert o.status == "installed"
    assert [p for p, _ in server.log] == ["/missing", "/broken", "/batches_filelists_NICv2.zip"]


def test_all_sources_fail_with_instructions(server, tmp_path):
    sources = local_sources(server)
    sources["core50"] = dataclasses.replace(sources["core50"], urls=(server.url("/gone"), closed_port_url()))
    with pytest.raises(dl.DownloadError) as err:
        run("core50", tmp_path, sources=sources)
    msg = str(err.value)
    assert msg.startswith("all 2 sources for core50 failed")
    assert "cannot reach 127.0.0.1" in msg and "no network connection?" in msg
    assert f"put it in {tmp_path / 'downloads'}" in msg and "latent-replay download core50" in msg
    assert f"md5 {sources['core50'].md5}" in msg and "--verify" in msg and "\n" not in msg
    assert (tmp_path / "core50_labels.txt").is_file()       # written from the class names meanwhile


def test_http_error_is_reported(server, tmp_path):
    sources = local_sources(server)
    sources["filelists"] = dataclasses.replace(sources["filelists"], urls=(server.url("/missing"),))
    with pytest.raises(dl.DownloadError, match="HTTP error 404"):
        run("filelists", tmp_path, sources=sources)


def test_target_not_writable_and_disk_full(server, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(dl.DownloadError, match="not writable"):
        run("filelists", tmp_path / "a_file" / "root", server)

    class Usage:
        free = 10
    monkeypatch.setattr(transfer.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(dl.DownloadError, match=r"not enough disk space to download .*10 B free"):
        run("filelists", tmp_path / "root", server)
    full = transfer._io_error(tmp_path / "x.part", OSError(28, "No space left on device"))
    assert "disk full" in str(full)


def test_present_but_foreign_target_is_not_overwritten(server, tmp_path):
    (tmp_path / "core50_128x128" / "s1").mkdir(parents=True)
    with pytest.raises(dl.DownloadError, match="exists but is incomplete.*--force"):
        run("core50", tmp_path, server)
    run("core50", tmp_path, server, force=True)
    assert len(list((tmp_path / "core50_128x128").iterdir())) == 11


def test_extra_top_folder_in_the_filelists_zip_is_stripped(server, tmp_path):
    wrapped = _zip(_filelists_members(top="batches_filelists_NICv2/"))
    server.files["/batches_filelists_NICv2.zip"] = wrapped
    sources = local_sources(server)
    sources["filelists"] = dataclasses.replace(sources["filelists"], md5=_md5(wrapped))
    run("filelists", tmp_path, sources=sources)
    assert load_scenario(tmp_path / "batch_filelists", 196, 0).source.endswith("NIC_v2_196/run0")


def test_caffe_model_by_url_without_checksum(server, tmp_path, caplog):
    export_caffemodel(MobileNetV1(num_classes=50), tmp_path / "m.caffemodel")
    server.files["/MobileNetV1.caffemodel"] = raw = (tmp_path / "m.caffemodel").read_bytes()
    root = tmp_path / "root"
    with pytest.raises(dl.DownloadError, match="no download URL is known for MobileNetV1.caffemodel"):
        run("caffe", root, server)
    (o,) = run("caffe", root, server, urls=[server.url("/MobileNetV1.caffemodel")])
    assert hashlib.sha1(raw).hexdigest() in o.message and "record it" in o.message
    assert "no published checksum" in caplog.text
    meta = read_checkpoint(root / "weights" / "mobilenet_v1_imagenet_caffe.pt")["metadata"]
    assert meta["preprocessing"] == "caffe"
    with pytest.raises(ValueError, match="single item"):
        run("all", root, server, urls=[server.url("/x")])


def test_cli_download_verify_and_errors(server, tmp_path, monkeypatch):
    for name, src in local_sources(server).items():
        monkeypatch.setitem(dl.SOURCES, name, src)
    runner = CliRunner()
    root = str(tmp_path / "data")
    res = runner.invoke(download_cmd, ["--verify", "--root", root])
    assert res.exit_code == 1 and "missing" in res.output and "verify:" in res.output

    res = runner.invoke(download_cmd, ["all", "--root", root, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "installed" in res.output and "dataset root:" in res.output
    res = runner.invoke(download_cmd, ["all", "--root", root])
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(download_cmd, ["--verify", "--root", root])
    assert res.exit_code == 0 and "all checks passed" in res.output, res.output

    # something broken after the fact: verify names it and fails
    (tmp_path / "data" / "batch_filelists" / "NIC_v2_79" / "run0" / "train_batch_01_filelist.txt").write_text(
        "s2/o2/C_02_02_000.png 7\n")
    res = runner.invoke(download_cmd, ["--verify", "filelists", "--root", root])
    assert res.exit_code == 1 and "bad" in res.output and "train_batch_01_filelist.txt:1" in res.output

    res = runner.invoke(download_cmd, ["filelists", "--root", str(tmp_path / "other"), "--no-progress",
                                       "--url", server.url("/missing")])
    assert res.exit_code == 1 and res.output.startswith("Error: all 1 source for filelists failed")
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(download_cmd, ["--root", root])
    assert res.exit_code == 2 and "say what to download" in res.output
    # malformed arguments are refused before anything is fetched (a bad --md5 renamed a good file .corrupt)
    for args, message in ((["--md5", "xyz"], "'--md5': 'xyz' is not 32 hexadecimal digits"),
                          (["--sha1", "nothex"], "'--sha1': 'nothex' is not 40 hexadecimal digits"),
                          (["--timeout", "-1"], "'--timeout': -1.0 is not in the range x>0"),
                          (["--retries", "0"], "'--retries': 0 is not in the range x>=1")):
        res = runner.invoke(download_cmd, ["filelists", "--root", str(tmp_path / "third"), *args])
        assert res.exit_code == 2 and message in res.output and not (tmp_path / "third").exists(), res.output


def test_weights_placed_by_hand_are_verified_then_converted(server, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / PYTORCHCV_FILE).write_bytes(server.files["/pth"])
    sources = local_sources(server)
    outcomes = {o.name: o.status for o in run("weights", tmp_path, sources=sources)}
    assert outcomes == {"pytorchcv": "converted", "caffe": "skipped"} and server.log == []
    assert (weights / "mobilenet_v1_imagenet_pytorchcv.pt").is_file()

    (weights / "mobilenet_v1_imagenet_pytorchcv.pt").unlink()
    (weights / PYTORCHCV_FILE).write_bytes(b"tampered")
    with pytest.raises(dl.ChecksumError, match="sha1 .* does not match"):
        run("weights", tmp_path, sources=sources)
    assert (weights / f"{PYTORCHCV_FILE}.corrupt").is_file()
    assert not (weights / "mobilenet_v1_imagenet_pytorchcv.pt").exists()
