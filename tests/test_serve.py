"""The HTTP API, against a real `qvidcap serve` process (waitress) on a free local port.

The checkpoint and clips come from the session fixtures in `tests/conftest.py`: a tiny model taught
one caption per clip, so a caption returned for the wrong upload is visible.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tiny_checkpoint import CAPTIONS, COLOURS  # noqa: F401

TIMEOUT_S = 120  # per request: generous, the test machine is shared


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):  # noqa: F811
    from qvidcap.serving.serve import ServerProcess

    with ServerProcess(checkpoint, tmp_path_factory.mktemp("serve") / "uploads") as process:
        yield process


def post(server, name: str, data: bytes, field: str = "video") -> requests.Response:
    return requests.post(f"{server.url}/upload", files={field: (name, data)}, timeout=TIMEOUT_S)


def assert_json_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] and body["message"] and "Traceback" not in response.text
    return body


def test_health_answers_ok(server):
    assert requests.get(f"{server.url}/health", timeout=TIMEOUT_S).json() == {"status": "ok"}


def test_upload_returns_the_clip_caption_with_timings(server, media):  # noqa: F811
    response = post(server, "clip.mp4", media["clip0"].read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["caption"] == CAPTIONS[0]
    assert set(body["timings"]) == {"decode_s", "features_s", "generation_s", "total_s"}
    assert list(server.upload_folder.iterdir()) == []


def test_the_answer_says_which_data_the_checkpoint_was_trained_on(server, media, checkpoint):  # noqa: F811
    from qvidcap.config import StudyConfig
    from qvidcap.serving.inference import trained_on

    expected = trained_on(StudyConfig.from_json(checkpoint / "config.json")).to_dict()
    body = post(server, "clip.mp4", media["clip1"].read_bytes()).json()
    assert body["caption"] == CAPTIONS[1] and body["trained_on"] == expected
    assert expected["dataset"] == "mini" and "coloured shapes" in expected["note"]


def test_a_pipeline_without_a_config_answers_without_trained_on():
    from qvidcap.serving.inference import Caption
    from qvidcap.serving.serve import _response, _trained_on

    assert _trained_on(object()) is None
    assert set(_response(Caption("x.mp4", "a caption"))) == {"caption", "timings"}


@pytest.mark.parametrize("name, status, says", [("text", 415, "not a video"), ("empty", 400, "empty"),
                                                ("truncated", 415, "not a video")])
def test_files_that_are_not_videos_get_a_json_error(server, media, name, status, says):  # noqa: F811
    body = assert_json_error(post(server, f"{name}.mp4", media[name].read_bytes()), status)
    assert says in body["message"]
    assert str(server.upload_folder) not in body["message"]  # no server paths leak out


def test_hostile_file_name_is_never_used_as_a_path(server, media, tmp_path):  # noqa: F811
    target = server.upload_folder / ".." / ".." / "x.mp4"
    for name in ("../../x.mp4", "/etc/x.mp4", "..\\..\\x.mp4"):
        response = post(server, name, media["clip1"].read_bytes())
        assert response.status_code == 200 and response.json()["caption"] == CAPTIONS[1]
    assert not target.resolve().exists()
    assert not any(server.upload_folder.parent.rglob("x.mp4"))
    assert list(server.upload_folder.iterdir()) == []


def test_missing_field_wrong_method_and_unknown_path_get_json_errors(server, media):  # noqa: F811
    assert "'video'" in assert_json_error(post(server, "clip.mp4", media["clip0"].read_bytes(), field="file"), 400)["message"]
    assert_json_error(requests.post(f"{server.url}/upload", data=b"raw bytes", timeout=TIMEOUT_S), 400)
    assert_json_error(requests.get(f"{server.url}/upload", timeout=TIMEOUT_S), 405)
    assert_json_error(requests.get(f"{server.url}/nothing/here", timeout=TIMEOUT_S), 404)


def test_parallel_uploads_each_get_their_own_caption(server, media, pipeline):  # noqa: F811
    clips = [media[f"clip{i}"] for i in range(len(COLOURS))] * 2
    expected = [pipeline.caption(clip).caption for clip in clips]  # one at a time, in this process
    assert len(set(expected)) == len(COLOURS)  # the clips are told apart, so a mix-up would show
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda clip: post(server, clip.name, clip.read_bytes()), clips))
    assert [r.status_code for r in responses] == [200] * len(clips)
    assert [r.json()["caption"] for r in responses] == expected
    assert list(server.upload_folder.iterdir()) == []


def test_upload_over_the_size_limit_gets_a_json_413(checkpoint, media, tmp_path):  # noqa: F811
    from qvidcap.serving.serve import ServerProcess

    with ServerProcess(checkpoint, tmp_path / "uploads", max_upload_mb=0.05) as small:
        body = assert_json_error(post(small, "big.mp4", b"\0" * 200_000), 413)
        assert "0.05 MiB" in body["message"]
        assert post(small, "clip.mp4", media["clip3"].read_bytes()).json()["caption"] == CAPTIONS[3]
        assert list(small.upload_folder.iterdir()) == []


def test_a_server_that_cannot_start_says_why(tmp_path):
    from qvidcap.serving.serve import ServerProcess, ServerStartError

    with pytest.raises(ServerStartError, match="not a complete checkpoint"):
        ServerProcess(tmp_path / "no-checkpoint", tmp_path / "uploads", startup_timeout_s=120).start()


def test_app_refuses_a_non_positive_size_limit(pipeline):  # noqa: F811
    from qvidcap.config import ServeConfig
    from qvidcap.serving.serve import create_app

    with pytest.raises(ValueError, match="max_upload_mb"):
        create_app(pipeline, ServeConfig(max_upload_mb=0, upload_folder=str(Path("unused"))))


def test_a_failure_inside_the_server_is_a_json_500_without_traceback(pipeline, media, tmp_path):  # noqa: F811
    import io
    import shutil

    from qvidcap.config import ServeConfig
    from qvidcap.serving.serve import create_app

    folder = tmp_path / "uploads"
    client = create_app(pipeline, ServeConfig(upload_folder=str(folder))).test_client()
    shutil.rmtree(folder)  # the upload cannot be stored: an error the API did not plan for
    response = client.post("/upload", data={"video": (io.BytesIO(media["clip0"].read_bytes()), "clip.mp4")})
    assert response.status_code == 500 and response.is_json
    assert response.json["error"] == "Internal Server Error" and "Traceback" not in response.get_data(as_text=True)


def test_stale_uploads_of_dead_servers_are_removed_and_nothing_else(tmp_path):
    import os
    import subprocess
    import sys

    from qvidcap.serving.upload import remove_stale_uploads, upload_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hex32 = "0123456789abcdef" * 2
    stale = [tmp_path / f"qvidcap-upload-{dead.pid}-{hex32}.mp4", tmp_path / f"qvidcap-upload-{dead.pid}-{hex32}"]
    kept = [upload_path(tmp_path, "mine.mp4"),  # this process's own upload, in flight
            tmp_path / f"qvidcap-upload-{os.getppid()}-{hex32}.mp4",  # a server still running
            tmp_path / "holiday.mp4", tmp_path / f"{hex32}.mp4", tmp_path / f"qvidcap-upload-{dead.pid}-{hex32}.mp4.txt"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert kept[0].name.startswith(f"qvidcap-upload-{os.getpid()}-") and kept[0].suffix == ".mp4"
    assert remove_stale_uploads(tmp_path) == 2
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_decode_slots_are_sized_from_memory_and_one_thread_stays_for_health():
    from qvidcap.config import SamplingConfig, ServeConfig
    from qvidcap.serving.serve import Limits, waitress_settings
    from qvidcap.video import decode_memory_bytes

    sampling = SamplingConfig()
    one = decode_memory_bytes(sampling) / 2**20
    assert Limits(ServeConfig(threads=8, decode_memory_mb=2.5 * one), sampling).decode_slots == 2
    assert Limits(ServeConfig(threads=8, decode_memory_mb=one / 10), sampling).decode_slots == 1  # never 0
    limits = Limits(ServeConfig(threads=3, decode_memory_mb=100 * one), sampling)
    assert (limits.upload_slots, limits.decode_slots) == (2, 2)
    settings = waitress_settings(ServeConfig(max_upload_mb=1))
    assert settings["max_request_body_size"] < 1.1 * 2**20 and settings["asyncore_use_poll"]
    assert settings["connection_limit"] > 110 and settings["channel_timeout"] < 120
    with pytest.raises(ValueError, match="serve.channel_timeout_s"):
        waitress_settings(ServeConfig(channel_timeout_s=0))


def test_an_upload_is_written_once_into_the_upload_folder(tmp_path):
    import io

    from werkzeug.exceptions import RequestEntityTooLarge

    from qvidcap.serving.upload import receive_upload

    data = bytes(range(256)) * 4000
    body = (b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"video\"; filename=\"../x.MP4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + data + b"\r\n--b--\r\n")
    received = receive_upload(io.BytesIO(body), b"b", tmp_path, "video", len(data), "the limit")
    assert received.path.parent == tmp_path and received.path.suffix == ".mp4" and received.filename == "../x.MP4"
    assert received.path.read_bytes() == data and received.size == len(data)
    with pytest.raises(RequestEntityTooLarge, match="larger than the limit"):
        receive_upload(io.BytesIO(body), b"b", tmp_path, "video", len(data) - 1, "the limit")
    assert list(tmp_path.iterdir()) == [received.path]  # the refused one is not left behind
