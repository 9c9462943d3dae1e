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
